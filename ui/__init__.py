"""Views of CLaSp runs: each module turns trace events into one Gradio/plotly/pandas view."""

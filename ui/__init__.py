"""The CLaSp Visualizer's page, in three rooms: views/ (trace events into what the page shows), serving/ (the
engine thread, models, sessions, live stream and the page's handlers) and bench/ (tools that measure the page);
page.py lays the page out and wires it. Nothing here imports app.py."""

"""CLaSp engine: layer-skip self-speculative decoding with a context-aware layer DP.

No UI imports here: the app (``ui/``, ``app.py``) and the bench CLI drive the same engine.
"""

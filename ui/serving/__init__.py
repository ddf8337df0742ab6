"""The app's server side: the engine thread, the model cache, the visitors' sessions and the live stream."""

"""Tools that measure the page: the page bench, the headless browser it shares with the browser tests, and
the figures drawn from bench results."""

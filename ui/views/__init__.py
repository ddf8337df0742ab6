"""The page's views: one module per view, each turning trace events into what the page shows, and the
registry that lays them out in tabs (registry.py), with the figure builder and the palette they share."""

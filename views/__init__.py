"""The dashboard's views, one module each, with the cached readers (readers.py) and the
Vega-Lite helpers (vega.py) they share. Each view module has a `view(runs)` that
dashboard.py shows in its tab."""

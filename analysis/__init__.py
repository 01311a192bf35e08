"""The results layer: what the dashboard, the write-up and train.py's summary compute from runs/,
written once.

Torch-free, so that readers never pay for torch: `results` (the results step: every figure and
comparison of a sweep, as tables under runs/<sweep>/results/), `compare` (how two runs or two
configurations are compared, query by query), `runs` (frames and tables of runs), `geometry`
and `maps` (the embedding space and its aligned maps). They read run files through
core/run_store.py and compute with core/stats.py; nothing here knows the run-store layout.
"""

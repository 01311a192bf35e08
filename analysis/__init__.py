"""What the dashboard, the write-up and train.py's summary compute from runs/, written once.

Torch-free, so that readers never pay for torch: `names` (metric names and how to show them),
`runs` (frames and tables of runs), `stats` (intervals and tests, scipy.stats), `compare` (two
runs or two configurations compared query by query) use pandas, numpy and scipy only;
`report` (the write-up's plumbing) adds the notebook's display libraries. Frames come from
core/run_store.py's readers; nothing here knows the run-store layout.
"""

"""What the dashboard, the write-up and train.py's summary compute from runs/, written once.

Torch-free: pandas, numpy and scipy only, so that readers never pay for torch. Frames come
from training/run_store.py's readers; nothing here knows the run-store layout.
"""

"""UMAP: seconds to project one run's validation embeddings, cold (import, numba compilation
or its cache) and warm, fitted the way training/projection.py fits them.

    .venv/bin/python bench/umap_time.py [RUN_DIR]     # default: the first finished run under runs/

The share of the sweep's time that UMAP takes is recorded by bench/main_job.py, which
measures the whole sweep. Records in bench/results.json and bench/RESULTS.md.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.results import record  # noqa: E402
from training import run_store  # noqa: E402
from training.projection import fit_run  # noqa: E402

COMMAND = ".venv/bin/python bench/umap_time.py"


def main() -> int:
    if len(sys.argv) > 1:
        path = Path(sys.argv[1])
    else:
        finished = [r for r in run_store.list_runs(ROOT / "runs") if r.state == "FINISHED"]
        if not finished:
            print("no finished run under runs/: run `accelerate launch training/train.py` first")
            return 2
        path = finished[0].path
    t0 = time.time()
    keys, _, _ = fit_run(path)
    cold = time.time() - t0
    warm = []
    for _ in range(3):
        t0 = time.time()
        fit_run(path)
        warm.append(time.time() - t0)
    warm.sort()
    print(f"{path}: {len(keys)} points (images and captions)")
    print(f"  cold (import + compile or cache) {cold:6.1f} s")
    print(f"  warm, median of 3                {warm[1]:6.1f} s  (min {warm[0]:.1f}, max {warm[2]:.1f})")
    record("umap.warm_s", round(warm[1], 2), "s", "",
           f"one run's final validation embeddings, {len(keys)} points, 512-d, cosine, 200 epochs, one thread; "
           f"median of 3 after a cold fit of {cold:.1f} s", COMMAND)
    return 0


if __name__ == "__main__":
    sys.exit(main())

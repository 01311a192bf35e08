"""UMAP: seconds to project one run's validation embeddings, cold (import, numba compilation
or its cache: a fresh process each) and warm, fitted the way training/projection.py fits
them, against the peer of letting UMAP search the neighbours itself; and how well each
layout keeps the embeddings' neighbourhoods (scikit-learn's trustworthiness, 10 neighbours).

    .venv/bin/python bench/umap_time.py [RUN_DIR]     # default: the first finished run under runs/

The share of the sweep's time that UMAP takes is recorded by bench/main_job.py, which
measures the whole sweep. Records in bench/results.json and bench/RESULTS.md.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from bench.results import record
from core import run_store
from training.projection import N_EPOCHS, cosine_neighbours, umap_fit

ROOT = Path(__file__).resolve().parents[1]

COMMAND = ".venv/bin/python bench/umap_time.py"
METHODS = {"precomputed neighbours": False, "UMAP's own search": True}  # name -> own_search


def fit_run(path: Path, own_search: bool = False, seed: int = 0):
    """x/y of a run's last validation embeddings, fitted as training/projection.py fits a map's
    reference (the exact cosine neighbours handed in), or with UMAP's own neighbour search."""
    vectors = run_store.read_last_vectors(path)[1]
    k = min(15, len(vectors) - 1)
    if own_search:
        import umap

        return umap.UMAP(n_neighbors=k, min_dist=0.1, metric="cosine", random_state=seed, n_jobs=1,
                         n_epochs=N_EPOCHS, init="spectral").fit_transform(vectors)
    return umap_fit(vectors, cosine_neighbours(vectors, k), "spectral", seed, k, 0.1)


def cold_seconds(path: Path, own_search: bool) -> float:
    """A first fit in a fresh process, imports included."""
    code = (f"import sys, time; t = time.time(); "
            f"from bench.umap_time import fit_run; fit_run({str(path)!r}, own_search={own_search}); "
            f"print(time.time() - t)")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> int:
    from sklearn.manifold import trustworthiness

    if len(sys.argv) > 1:
        path = Path(sys.argv[1])
    else:
        finished = [r for r in run_store.list_runs(ROOT / "runs") if r.state == "FINISHED"]
        if not finished:
            print("no finished run under runs/: run `accelerate launch training/train.py` first")
            return 2
        path = finished[0].path
    vectors = run_store.read_last_vectors(path)[1]
    rows = {}
    for name, own in METHODS.items():
        cold = cold_seconds(path, own)
        warm, xy = [], None
        for _ in range(3):
            t0 = time.time()
            xy = fit_run(path, own_search=own)
            warm.append(time.time() - t0)
        warm.sort()
        trust = trustworthiness(vectors, xy, n_neighbors=10, metric="cosine")
        rows[name] = (cold, warm, trust)
    print(f"{path}: {len(vectors)} points (images and captions)")
    print(f"{'':24s} {'cold s':>7s} {'warm s':>7s} {'trustworthiness':>16s}")
    for name, (cold, warm, trust) in rows.items():
        print(f"{name:24s} {cold:7.1f} {warm[1]:7.2f} {trust:16.4f}")
    (cold, warm, trust), (peer_cold, peer_warm, peer_trust) = rows.values()
    print(f"warm {peer_warm[1] / warm[1]:.1f}x, cold {peer_cold / cold:.1f}x faster than UMAP's own search")
    note = (f"one run's final validation embeddings, {len(vectors)} points, 512-d, cosine, 200 epochs, one thread; "
            f"median of 3")
    record("umap.warm_s", round(warm[1], 2), "s", "",
           f"{note}, after a cold fit (fresh process) of {cold:.1f} s; trustworthiness {trust:.4f}", COMMAND)
    record("umap.warm_speedup", round(peer_warm[1] / warm[1], 2), "x UMAP's own search", "",
           f"{note}; peer (UMAP's own exact search, same process): warm {peer_warm[1]:.2f} s, cold {peer_cold:.1f} s, "
           f"trustworthiness {peer_trust:.4f}", COMMAND)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""UMAP coordinates of each run's final validation embeddings (images and captions in one
joint fit), written into embeddings.parquet so the dashboard never fits anything.

All of a sweep's fits happen after training, one process per core (a fit is single-threaded
so that a seed gives the same picture every time): importing umap and its first fit cost
numba compilation, later fits of ~1,600 points a few seconds.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from training import run_store

N_EPOCHS = 200  # UMAP's own choice for large sets; its 500 for small ones took 35% longer here, same layout


def fit_run(path: Path, seed: int = 0, n_neighbors: int = 15, min_dist: float = 0.1):
    """(keys, xy, seconds) for one run's last evaluated step, or None when too few points."""
    import umap  # slow to import (numba): only here, only when there is something to fit

    t0 = time.time()
    last = run_store.read_embeddings(path, last_step=True)
    vectors = np.stack(last["embedding"].to_numpy()).astype(np.float32)
    neighbours = min(n_neighbors, len(vectors) - 1)
    if neighbours < 2:
        return None
    reducer = umap.UMAP(n_neighbors=neighbours, min_dist=min_dist, metric="cosine", random_state=seed,
                        n_jobs=1, n_epochs=N_EPOCHS, init="spectral" if len(vectors) > 20 else "random")
    xy = reducer.fit_transform(vectors)
    keys = list(zip(last["sample_id"], last["modality"], last["step"]))
    return keys, xy, time.time() - t0


def project_runs(paths: list[Path], seed: int = 0, workers: int | None = None) -> dict[Path, float]:
    """Fit one UMAP per run, runs spread over `workers` processes (default: one per core);
    this process writes the coordinates. Returns seconds per run."""
    if not paths:
        return {}
    workers = max(1, min(len(paths), workers or os.cpu_count() or 1))
    if workers == 1:
        fits = [fit_run(p, seed) for p in paths]
    else:
        # spawn, not fork: the parent holds torch's and Arrow's thread pools, which a fork can hang
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            fits = list(pool.map(fit_run, paths, [seed] * len(paths)))
    seconds = {}
    for path, fit in zip(paths, fits):
        if fit is None:
            continue
        keys, xy, took = fit
        run_store.update_umap(path, {k: (float(x), float(y)) for k, (x, y) in zip(keys, xy)})
        seconds[path] = took
    return seconds

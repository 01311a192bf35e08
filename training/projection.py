"""UMAP coordinates of each run's final validation embeddings (images and captions in one
joint fit), written to the run's umap.parquet so the dashboard never fits anything.

All of a sweep's fits happen after training, one process per core (a fit is single-threaded
so that a seed gives the same picture every time): importing umap and its first fit cost
numba compilation, later fits of ~1,600 points about a second. Each fit is handed the exact
cosine neighbours, one matrix product here: UMAP's own exact search for small sets (a full
distance matrix, then a numba argsort compiled anew in every process) took several times as
long warm and about twice as long cold, for layouts that keep neighbourhoods as well
(bench/umap_time.py has the figures).
"""

from __future__ import annotations

import multiprocessing
import os
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from training import run_store

N_EPOCHS = 200  # UMAP's own choice for large sets; its 500 for small ones took 35% longer here, same layout


def cosine_neighbours(vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices, cosine distances) of each row's k nearest rows, itself first, nearest first."""
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    dist = np.clip(1.0 - unit @ unit.T, 0.0, None)
    np.fill_diagonal(dist, 0.0)
    idx = np.argpartition(dist, k - 1, axis=1)[:, :k]
    order = np.argsort(np.take_along_axis(dist, idx, axis=1), axis=1, kind="stable")
    idx = np.take_along_axis(idx, order, axis=1)
    return idx, np.take_along_axis(dist, idx, axis=1)


def fit_run(path: Path, seed: int = 0, n_neighbors: int = 15, min_dist: float = 0.1, own_search: bool = False):
    """(keys, xy, seconds) for one run's last evaluated step, or None when too few points.
    own_search: let UMAP find the neighbours itself (the peer in bench/umap_time.py)."""
    import umap  # slow to import (numba): only here, only when there is something to fit

    t0 = time.time()
    last, vectors = run_store.read_last_vectors(path)
    neighbours = min(n_neighbors, len(last) - 1)
    if neighbours < 2:
        return None
    reducer = umap.UMAP(n_neighbors=neighbours, min_dist=min_dist, metric="cosine", random_state=seed,
                        n_jobs=1, n_epochs=N_EPOCHS, init="spectral" if len(vectors) > 20 else "random",
                        precomputed_knn=(None, None, None) if own_search else
                        (*cosine_neighbours(vectors, neighbours), None))
    with warnings.catch_warnings():  # no search index is passed: only transform() would need one
        warnings.filterwarnings("ignore", message=r"precomputed_knn\[2\]")
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
        sample_ids, modalities, steps = zip(*keys)
        run_store.write_umap(path, pd.DataFrame(dict(sample_id=sample_ids, modality=modalities, step=steps,
                                                     umap_x=xy[:, 0].astype(np.float32),
                                                     umap_y=xy[:, 1].astype(np.float32))))
        seconds[path] = took
    return seconds

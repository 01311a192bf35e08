"""UMAP coordinates of each run's final validation embeddings (images and captions in one
joint fit), written into embeddings.parquet so the dashboard never fits anything.

All of a sweep's fits happen in one process after training: importing umap and its first
fit cost about 40 s of numba compilation here, later fits of ~1,600 points a few seconds.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from training import run_store


def project_runs(paths: list[Path], seed: int = 0, n_neighbors: int = 15,
                 min_dist: float = 0.1) -> dict[Path, float]:
    """Fit one UMAP per run on its last evaluated step; returns seconds per run."""
    if not paths:
        return {}
    import umap  # slow to import (numba): only here, only when there is something to fit

    seconds = {}
    for path in paths:
        t0 = time.time()
        frame = run_store.read_embeddings(path)
        last = frame[frame["step"] == frame["step"].max()]
        vectors = np.stack(last["embedding"].to_numpy()).astype(np.float32)
        neighbours = min(n_neighbors, len(vectors) - 1)
        if neighbours < 2:
            continue
        reducer = umap.UMAP(n_neighbors=neighbours, min_dist=min_dist, metric="cosine",
                            random_state=seed, n_jobs=1, init="spectral" if len(vectors) > 20 else "random")
        xy = reducer.fit_transform(vectors)
        keys = zip(last["sample_id"], last["modality"], last["step"])
        run_store.update_umap(path, {k: (float(x), float(y)) for k, (x, y) in zip(keys, xy)})
        seconds[path] = time.time() - t0
    return seconds

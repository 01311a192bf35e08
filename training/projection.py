"""Aligned maps of the joint image+text space: the runs of one comparison, and their step 0, in
2-D coordinates where one sample can be followed from state to state, written to each run's
umap.parquet so that the dashboard and the notebook never fit anything.

Each run's own UMAP fit would put the same image anywhere: the picture could only be read as
a shape. Here a map is anchored: the reference run's end is fitted first, and every other
state (a run's validation embeddings at step 0 or at its end) is fitted with UMAP starting
from the reference's coordinates of the same samples. Each state keeps its own neighbour
graph, so a sample lies where it lay in the reference unless its neighbours in that state pull
it away: a sample that moved on the map moved among its neighbours, whatever space each run's
randomly started heads built. A joint fit of all states' vectors would not do (two runs'
heads start from other random matrices, so their vectors are not in one space and a joint fit
separates them by run), and umap-learn's AlignedUMAP, which fits all states at once, took
about twenty times as long on the default sweep's maps (600 s against 30 s on 2 cores).

A map is one comparison of the sweep file (its reference first, then its runs), each
configuration by its lowest seed (a map is a picture to look at, not a figure to average); a
configuration in no comparison gets a map of its own, its step 0 and its end. States with
identical vectors (runs whose heads start alike, a run compared with itself) are fitted once,
so they land on identical coordinates. UMAP is stochastic: two states that barely differ
still land a little apart, so each map also refits its reference's end from its own
coordinates with another seed, and records how far each sample moved then (its `floor`): a
movement is read against it. The fits run after training, one map per process (a fit is
single-threaded so that a seed gives the same picture every time); each is handed the exact
cosine neighbours, one matrix product here (bench/umap_time.py: several times faster than
UMAP's own search for sets this small, layouts as good).
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core import run_store

N_EPOCHS = 200  # UMAP's own choice for large sets; its 500 for small ones took 35% longer here, same layout


@dataclass(frozen=True)
class MapPlan:
    """One aligned map: its name and its runs' folders, the reference first."""

    name: str
    runs: tuple[Path, ...]


def plan_maps(sweep, runs_dir: Path) -> list[MapPlan]:
    """One map per comparison of the sweep, and one per configuration in none, each
    configuration by its lowest seed."""
    lowest = {}
    for cfg in sorted(sweep.runs, key=lambda c: c.seed):
        lowest.setdefault(cfg.group, cfg)

    def folder(group: str) -> Path:
        return run_store.run_dir(runs_dir, sweep.name, lowest[group].name)

    maps, covered = [], set()
    for comparison in sweep.comparisons:
        groups = [comparison.reference, *comparison.runs]
        covered.update(groups)
        maps.append(MapPlan(comparison.name, tuple(folder(g) for g in groups if g in lowest)))
    maps += [MapPlan(group, (folder(group),)) for group in lowest if group not in covered]
    return maps


def needs_fit(plan: MapPlan) -> bool:
    """Every run of the map finished with embeddings, and one of them lacks the map's coordinates."""
    finished = [run_store.load_run(p).status.get("state") == "FINISHED" and run_store.has_embeddings(p)
                for p in plan.runs]
    return bool(plan.runs) and all(finished) and any(plan.name not in run_store.umap_maps(p) for p in plan.runs)


def cosine_neighbours(vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices, cosine distances) of each row's k nearest rows, itself first, nearest first."""
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    dist = np.clip(1.0 - unit @ unit.T, 0.0, None)
    np.fill_diagonal(dist, 0.0)
    idx = np.argpartition(dist, k - 1, axis=1)[:, :k]
    order = np.argsort(np.take_along_axis(dist, idx, axis=1), axis=1, kind="stable")
    idx = np.take_along_axis(idx, order, axis=1)
    return idx, np.take_along_axis(dist, idx, axis=1)


@dataclass
class State:
    """One run's image and caption vectors at one step: a slice of the aligned fit."""

    keys: pd.DataFrame  # sample_id, modality
    vectors: np.ndarray

    def digest(self) -> str:
        h = hashlib.sha256(self.vectors.tobytes())
        h.update("\n".join(self.keys["sample_id"] + "/" + self.keys["modality"]).encode())
        return h.hexdigest()


def run_states(path: Path) -> dict[int, State]:
    """step -> State for a run's step 0 and its last step (one state when they are the same)."""
    frame = run_store.read_embeddings(path)
    out = {}
    for step in sorted({int(frame["step"].min()), int(frame["step"].max())}):
        rows = frame[frame["step"] == step]
        out[step] = State(rows[["sample_id", "modality"]].reset_index(drop=True),
                          np.stack(rows["embedding"].to_numpy()).astype(np.float32))
    return out


def umap_fit(vectors: np.ndarray, knn, init, seed: int, n_neighbors: int, min_dist: float) -> np.ndarray:
    import umap  # slow to import (numba): only here, only when there is something to fit

    reducer = umap.UMAP(n_neighbors=n_neighbors, min_dist=min_dist, metric="cosine", random_state=seed, n_jobs=1,
                        n_epochs=N_EPOCHS, init=init, precomputed_knn=(*knn, None))
    with warnings.catch_warnings():  # no search index is passed: only transform() would need one
        warnings.filterwarnings("ignore", message=r"precomputed_knn\[2\]")
        return reducer.fit_transform(vectors).astype(np.float32)


def _anchored_init(state: State, knn_idx: np.ndarray, anchor: dict[tuple, np.ndarray], rng) -> np.ndarray:
    """Each sample's start: its position in the anchor fit; one the anchor lacks starts at the
    mean of its neighbours that it has (or near the anchor's centre)."""
    keys = list(zip(state.keys["sample_id"], state.keys["modality"]))
    centre = np.mean(list(anchor.values()), axis=0)
    init = np.empty((len(keys), 2), dtype=np.float64)
    known = np.array([k in anchor for k in keys])
    for i, k in enumerate(keys):
        if known[i]:
            init[i] = anchor[k]
            continue
        near = [anchor[keys[j]] for j in knn_idx[i, 1:] if known[j]]
        init[i] = np.mean(near, axis=0) if near else centre
    return init + rng.normal(scale=1e-4, size=init.shape)  # UMAP refuses coinciding starts


def fit_map(plan: MapPlan, seed: int = 0, n_neighbors: int = 15, min_dist: float = 0.1):
    """{run folder: coordinates frame} of one map, and the seconds the fit took; `floor` is
    how far each sample moves when the reference's end is fitted again, UMAP's own noise.

    The reference run's end is fitted first (spectral start); every other distinct state is
    then fitted starting from the reference's coordinates of the same samples, so a sample
    lies where it lay in the reference unless its neighbours in that state pull it away."""
    t0 = time.time()
    slices: list[State] = []
    where: dict[str, int] = {}  # state digest -> slice
    placed: dict[tuple[Path, int], int] = {}  # (run, step) -> slice
    anchor_slice = None
    for path in plan.runs:
        states = run_states(path)
        for step, state in states.items():
            digest = state.digest()
            if digest not in where:
                where[digest] = len(slices)
                slices.append(state)
            placed[(path, step)] = where[digest]
        if anchor_slice is None:
            anchor_slice = placed[(path, max(states))]
    neighbours = min(n_neighbors, min(len(s.vectors) for s in slices) - 1)
    if neighbours < 2:
        return {}, time.time() - t0
    rng = np.random.default_rng(seed)
    coords: dict[int, np.ndarray] = {}
    anchor_state = slices[anchor_slice]
    anchor_knn = cosine_neighbours(anchor_state.vectors, neighbours)
    first = "spectral" if len(anchor_state.vectors) > 20 else "random"
    coords[anchor_slice] = umap_fit(anchor_state.vectors, anchor_knn, first, seed, neighbours, min_dist)
    anchor = dict(zip(zip(anchor_state.keys["sample_id"], anchor_state.keys["modality"]), coords[anchor_slice]))
    for i, state in enumerate(slices):
        if i != anchor_slice:
            knn = cosine_neighbours(state.vectors, neighbours)
            coords[i] = umap_fit(state.vectors, knn, _anchored_init(state, knn[0], anchor, rng), seed, neighbours,
                              min_dist)
    # The floor: the anchor's own state fitted again from its coordinates (another seed). How
    # far each sample moves then is UMAP's noise, against which any other movement is read.
    start = _anchored_init(anchor_state, anchor_knn[0], anchor, rng)
    refit = umap_fit(anchor_state.vectors, anchor_knn, start, seed + 1, neighbours, min_dist)
    floor = dict(zip(anchor, np.linalg.norm(refit - coords[anchor_slice], axis=1)))
    out: dict[Path, pd.DataFrame] = {}
    for (path, step), i in placed.items():
        keys = slices[i].keys
        noise = [floor.get(k, np.nan) for k in zip(keys["sample_id"], keys["modality"])]
        frame = keys.assign(step=step, umap_x=coords[i][:, 0], umap_y=coords[i][:, 1], map=plan.name,
                            floor=np.asarray(noise, dtype=np.float32))
        out[path] = pd.concat([out[path], frame], ignore_index=True) if path in out else frame
    return out, time.time() - t0


def project_maps(plans: list[MapPlan], seed: int = 0, workers: int | None = None) -> dict[str, float]:
    """Fit the maps, spread over `workers` processes (default: one per core); this process
    writes each run's coordinates. Returns seconds per map."""
    if not plans:
        return {}
    workers = max(1, min(len(plans), workers or os.cpu_count() or 1))
    if workers == 1:
        fits = [fit_map(p, seed) for p in plans]
    else:
        # spawn, not fork: the parent holds torch's and Arrow's thread pools, which a fork can hang
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            fits = list(pool.map(fit_map, plans, [seed] * len(plans)))
    seconds = {}
    for plan, (frames, took) in zip(plans, fits):
        for path, frame in frames.items():
            run_store.write_umap(path, frame)
        seconds[plan.name] = took
    return seconds

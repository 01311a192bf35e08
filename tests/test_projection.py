"""The aligned maps (training/projection.py): which runs share a map, and that a sample's
position means the same thing in every state of one map."""

import numpy as np
import pandas as pd
import pytest

from core import run_store
from core.config import DEFAULT_SWEEP, load_sweep
from training.projection import fit_map, needs_fit, plan_maps, project_maps


def _clusters(rng, n_clusters=6, per=20, dim=16, noise=0.15):
    centres = rng.normal(size=(n_clusters, dim))
    images = np.repeat(centres, per, axis=0) + noise * rng.normal(size=(n_clusters * per, dim))
    texts = images + noise * rng.normal(size=images.shape)
    unit = lambda x: (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)  # noqa: E731
    return unit(images), unit(texts)


def _run(root, name, states: dict[int, tuple[np.ndarray, np.ndarray]], finished=True):
    """A run folder with image and caption embeddings at the given steps (sample i: img:i, txt:i)."""
    w = run_store.RunWriter(root / "s" / name)
    rows = []
    for step, (images, texts) in states.items():
        for i, v in enumerate(images):
            rows.append(dict(sample_id=f"img:{i}", modality="image", image_id=str(i), caption=f"c{i}", label="l",
                             split="val", step=step, embedding=v))
        for i, v in enumerate(texts):
            rows.append(dict(sample_id=f"txt:{i}", modality="text", image_id=str(i), caption=f"c{i}", label="l",
                             split="val", step=step, embedding=v))
    w.write_embeddings(pd.DataFrame(rows))
    w.set_status("FINISHED" if finished else "RUNNING", step=max(states))
    return w.path


def _xy(path, map_name, step):
    frame = run_store.read_umap(path, map_name)
    frame = frame[frame.step == step].sort_values(["modality", "sample_id"])
    return frame[["umap_x", "umap_y"]].to_numpy()


@pytest.fixture(scope="module")
def states():
    rng = np.random.default_rng(0)
    start, end = _clusters(rng), _clusters(rng)
    return start, end


def test_a_run_and_its_identical_twin_land_on_identical_coordinates(tmp_path, states):
    start, end = states
    a = _run(tmp_path, "a", {0: start, 40: end})
    b = _run(tmp_path, "b", {0: start, 40: end})  # the same vectors: the same states
    plan = plan_for(tmp_path, "twins", a, b)
    project_maps([plan], workers=1)
    assert np.array_equal(_xy(a, "twins", 40), _xy(b, "twins", 40))
    assert np.array_equal(_xy(a, "twins", 0), _xy(b, "twins", 0))
    assert not np.array_equal(_xy(a, "twins", 0), _xy(a, "twins", 40))  # step 0 and the end are two states
    # A run aligned with itself: one state per step, each fitted once.
    frames, _ = fit_map(plan_for(tmp_path, "self", a, a))
    assert set(frames) == {a} and set(frames[a].step) == {0, 40}


def test_a_state_that_barely_differs_stays_where_the_reference_put_it(tmp_path, states):
    start, end = states
    rng = np.random.default_rng(1)
    near = tuple((x + 1e-3 * rng.normal(size=x.shape)).astype(np.float32) for x in end)
    perm = rng.permutation(len(end[0]))
    other = tuple(x[perm] for x in end)  # the samples shuffled among the clusters: every neighbourhood changes
    ref = _run(tmp_path, "ref", {0: start, 40: end})
    close = _run(tmp_path, "close", {0: start, 40: near})
    far = _run(tmp_path, "far", {0: start, 40: other})
    project_maps([plan_for(tmp_path, "m", ref, close, far)], workers=1)
    anchor = _xy(ref, "m", 40)
    moved = lambda p: np.median(np.linalg.norm(_xy(p, "m", 40) - anchor, axis=1))  # noqa: E731
    end = run_store.read_umap(ref, "m").query("step == 40")
    floor = float(np.median(end["floor"]))
    assert end["floor"].notna().all() and floor > 0  # UMAP's own noise, measured by a refit
    assert moved(close) < 2 * floor < moved(far)  # barely changed: within the noise; other vectors: beyond


def test_maps_follow_the_comparisons_reference_first_one_seed_each():
    sweep = load_sweep(DEFAULT_SWEEP)
    plans = {p.name: p for p in plan_maps(sweep, run_store.runs_root("/tmp/none"))}
    assert [r.name for r in plans["towers"].runs] == ["LL-2-epochs.s0", "LU-2-epochs.s0", "UU-2-epochs.s0"]
    assert [r.name for r in plans["learning-rate"].runs] == ["heads-only.s0", "lr-3e-4.s0", "lr-3e-3.s0"]
    in_comparisons = {g for c in sweep.comparisons for g in (c.reference, *c.runs)}
    alone = {c.group for c in sweep.runs} - in_comparisons
    assert alone and all(plans[g].runs[0].name == f"{g}.s0" for g in alone)  # a map of its own


def test_a_map_is_fitted_once_all_its_runs_finished_and_again_when_one_lacks_it(tmp_path, states):
    start, end = states
    a = _run(tmp_path, "a", {0: start, 40: end})
    b = _run(tmp_path, "b", {0: start, 40: end}, finished=False)
    plan = plan_for(tmp_path, "m", a, b)
    assert not needs_fit(plan)  # b is still training
    run_store.RunWriter(b).set_status("FINISHED", step=40)
    assert needs_fit(plan)
    project_maps([plan], workers=1)
    assert not needs_fit(plan)


def plan_for(root, name, *paths):
    from training.projection import MapPlan

    return MapPlan(name, tuple(paths))

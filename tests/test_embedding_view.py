"""The Embedding space view on aligned maps (views/embedding.py, views/map_canvas.py,
views/drift.py) and the Query view (views/query.py), under Streamlit's AppTest on tiny runs
trained by train.py; the map's payload and selection helpers without Streamlit.

A map selection reaches the app as the browser sends it: the map component's JSON value under its
element id ({"box": {"umap_x": [a, b], "umap_y": [c, d]}, "layers": [...]}, {"pick": id}, ...).
tests/test_browser.py drives the map itself in chromium.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from streamlit.proto.WidgetStates_pb2 import WidgetStates
from streamlit.testing.v1 import AppTest

from core import atomic, run_store
from tests.test_dashboard import APP, ROOT, app, assert_clean, chart_data, plain, texts, widget
from views.embedding import export_bytes, selection_export
from views.map_canvas import END, NO_LABEL, START, ids_in_box, layer_key, payload, selection_ids

RUNS = ("unlocked", "locked", "fixed-temp")  # the map's reference first, as its comparison names it
MAP_PICKER = "Map"
RUN_PICKER = "Runs of this map (each adds its end and its step 0 as layers of the map)"


@pytest.fixture(scope="module")
def aligned(tiny_runs, tmp_path_factory) -> Path:
    """The tiny runs in one aligned map, "towers", whose comparison (in sweep.json) names
    unlocked as its reference. Each run's coordinates are its own map's (step 0 and end)
    renamed: the view reads a map by name and never refits."""
    root = tmp_path_factory.mktemp("aligned") / "runs"
    shutil.copytree(tiny_runs / "tiny", root / "tiny")
    for name in RUNS:
        path = root / "tiny" / name
        rows = run_store.read_umap(path)
        (path / run_store.UMAP).unlink()
        run_store.write_umap(path, rows.assign(map="towers"))
    summary = run_store.read_sweep_summary(root, "tiny")
    atomic.write_json(root / "tiny" / run_store.SWEEP_SUMMARY, dict(summary, comparisons=[
        {"name": "towers", "reference": "unlocked", "runs": ["locked", "fixed-temp"], "factor": ["unlock_text"],
         "note": ""}]))
    return root


@pytest.fixture(scope="module")
def old_files(tiny_runs, tmp_path_factory) -> Path:
    """One tiny run whose files predate aligned maps and stored prompts: umap.parquet without a
    `map` column and with the end only, embeddings.parquet without the class prompts."""
    root = tmp_path_factory.mktemp("old") / "runs"
    path = root / "tiny" / "locked"
    shutil.copytree(tiny_runs / "tiny" / "locked", path)
    rows = run_store.read_umap(path)
    rows = rows[rows["step"] == rows["step"].max()].drop(columns="map")
    pq.write_table(pa.Table.from_pandas(rows, preserve_index=False), path / run_store.UMAP)
    run_store.RunWriter(path).write_embeddings(run_store.read_embeddings(path))  # prompts=False: without them
    return root


def select(at: AppTest, value: dict) -> AppTest:
    """Rerun the app as if the user had made the selection `value` on the map."""
    states = WidgetStates()
    states.CopyFrom(at._tree.get_widget_states())
    state = states.widgets.add()
    state.id = the_map(at).id
    state.json_value = json.dumps(value)
    return at._run(states)


def the_map(at: AppTest):
    """The map component's element (its proto)."""
    maps = [e.proto for e in at.get("component_instance") if e.proto.component_name.endswith("embedding_map")]
    assert len(maps) == 1
    return maps[0]


def map_args(at: AppTest) -> tuple[dict, dict[str, bytes]]:
    """The map's JSON meta and its binary arguments, as the page receives them."""
    proto = the_map(at)
    return json.loads(proto.json_args)["meta"], {a.key: a.bytes for a in proto.special_args}


def map_points(root: Path, run: str) -> pd.DataFrame:
    rows = run_store.read_umap(root / "tiny" / run, "towers")
    return rows[rows["step"] == rows["step"].max()]


# ------------------------------------------------------------------------ pure helpers


def test_ids_in_box_are_exactly_the_points_inside():
    points = pd.DataFrame({"sample_id": ["a", "b", "c", "d", "e"], "umap_x": [0.0, 1.0, 2.0, 1.0, 1.5],
                           "umap_y": [0.0, 1.0, 2.0, 3.0, 1.0]})
    assert ids_in_box(points, {"umap_x": [0.5, 1.5], "umap_y": [0.5, 2.0]}) == ["b", "e"]  # edges are inside
    assert ids_in_box(points, {"umap_x": [2.5, -1.0], "umap_y": [3.0, 0.0]}) == ["a", "b", "c", "d", "e"]  # any order
    assert ids_in_box(points, {"umap_x": [1.6, 1.9], "umap_y": [0.0, 5.0]}) == []
    assert ids_in_box(points, {}) == []  # a cleared box selects nothing, not everything


def fake_points(ids: list[str], rng, rank: int = 1) -> pd.DataFrame:
    """Map points (analysis.maps.map_points' columns the map reads) of images i* with captions t*."""
    modality = ["image" if i.startswith("i") else "text" for i in ids]
    labels = [{"1": "cat", "2": "dog", "3": None}[i[1]] for i in ids]
    return pd.DataFrame({"sample_id": ids, "modality": modality, "image_id": [i[1] for i in ids],
                         "caption": [f"caption of {i}" for i in ids], "label": labels,
                         "step": 50, "umap_x": rng.normal(size=len(ids)), "umap_y": rng.normal(size=len(ids)),
                         "rank": rank, "x0": rng.normal(size=len(ids)), "y0": rng.normal(size=len(ids))})


def test_the_payload_holds_every_point_of_every_layer():
    rng = np.random.default_rng(0)
    a = fake_points(["i1", "t1a", "t1b", "i2", "t2a", "i3"], rng, rank=1)
    b = fake_points(["t2a", "i2", "i1", "i3", "t1a", "t3z"], rng, rank=3).assign(x0=np.nan, y0=np.nan)  # no step 0
    pngs = pd.Series({"1": b"png-one", "2": b"png-two"})
    args = payload([("A", a, "#4c78a8"), ("B", b, "#f58518")], pngs, 500)
    meta = args["meta"]
    ids = json.loads(args["text"])["sample_id"]
    assert ids == ["i1", "t1a", "t1b", "i2", "t2a", "i3", "t3z"]  # every sample of both runs, once
    assert [layer["key"] for layer in meta["layers"]] == [layer_key("A", END), layer_key("A", START),
                                                          layer_key("B", END)]
    assert [layer["on"] for layer in meta["layers"]] == [True, False, False]
    assert meta["layers"][0]["start_layer"] == 1 and meta["layers"][2]["start_layer"] is None
    xy = np.frombuffer(args["xy"], np.float32).reshape(3, len(ids), 2)
    for layer, frame, (x, y) in ((0, a, ("umap_x", "umap_y")), (1, a, ("x0", "y0")), (2, b, ("umap_x", "umap_y"))):
        rows = [ids.index(i) for i in frame["sample_id"]]
        np.testing.assert_allclose(xy[layer, rows, 0], frame[x].astype(np.float32))
        np.testing.assert_allclose(xy[layer, rows, 1], frame[y].astype(np.float32))
    assert np.isnan(xy[0, ids.index("t3z")]).all() and np.isnan(xy[2, ids.index("t1b")]).all()  # not in that run
    ranks = np.frombuffer(args["ranks"], np.int32).reshape(2, len(ids))
    assert list(ranks[0]) == [1, 1, 1, 1, 1, 1, -1] and ranks[1, ids.index("t1b")] == -1 and ranks[1, 0] == 3
    labels = np.frombuffer(args["labels"], np.uint16)
    assert meta["label_names"] == ["cat", "dog"]  # by count: cat 3 samples (in A), dog 2
    assert list(labels) == [0, 0, 0, 1, 1, NO_LABEL, NO_LABEL]
    assert list(np.frombuffer(args["image_of"], np.int32)) == [0, 0, 0, 3, 3, 5, 5]
    assert list(np.frombuffer(args["modality"], np.uint8)) == [0, 1, 1, 0, 1, 0, 1]
    at = np.frombuffer(args["thumb_at"], np.int32).reshape(len(ids), 2)
    assert args["thumbs"][at[0, 0]:at[0, 1]] == b"png-one" and args["thumbs"][at[3, 0]:at[3, 1]] == b"png-two"
    assert (at[[1, 2, 4, 5, 6]] == -1).all()  # captions carry none, and image 3 has none
    assert payload([("A", a, "#4c78a8")], pngs, 500)["meta"]["version"] != meta["version"]


def test_a_map_selection_becomes_sample_ids():
    rng = np.random.default_rng(1)
    a = fake_points(["i1", "t1a", "i2", "t2a"], rng)
    b = fake_points(["i1", "t1a", "i2", "t2a"], rng)
    box = {"umap_x": [-0.5, 0.5], "umap_y": [-3.0, 3.0]}
    both = selection_ids({"box": box, "layers": [layer_key("A", END), layer_key("B", START)]}, {"A": a, "B": b})
    in_a = ids_in_box(a, box)
    in_b = ids_in_box(b[["sample_id", "x0", "y0"]].rename(columns={"x0": "umap_x", "y0": "umap_y"}), box)
    assert both == (in_a + [i for i in in_b if i not in in_a], None)
    assert selection_ids({"box": box, "layers": [layer_key("A", END)]}, {"A": a, "B": b}) == (in_a, None)
    assert selection_ids({"label": "dog"}, {"A": a, "B": b}) == (["i2", "t2a"], None)
    assert selection_ids({"pick": "t1a"}, {"A": a}) == (["t1a"], "t1a")
    assert selection_ids({"pick": "gone"}, {"A": a}) == ([], None)  # a point of a run no longer picked
    assert selection_ids({}, {"A": a}) == ([], None)


def test_a_selection_exports_exactly_the_selected_ids(aligned):
    from views.readers import load_map_points

    members = [(f"tiny/{r}", i, load_map_points(str(aligned / "tiny" / r), f"{r}-stamp", "towers"))
               for i, r in enumerate(RUNS)]
    ids = list(members[0][2]["sample_id"].iloc[[4, 0, 9]])
    frame = selection_export(ids, members)
    assert list(frame.columns[:5]) == ["run", "step", "seed", "sample_id", "modality"]
    for data in (pd.read_csv(io.BytesIO(export_bytes(frame, "csv"))),
                 pd.read_parquet(io.BytesIO(export_bytes(frame, "parquet")))):
        assert len(data) == len(RUNS) * len(ids)
        assert list(data["run"].unique()) == [f"tiny/{r}" for r in RUNS]
        for _, rows in data.groupby("run", sort=False):
            assert list(rows["sample_id"]) == ids  # each run: the selection, in its order, nothing else
        truth = run_store.read_samples(aligned / "tiny" / "locked").set_index("sample_id")["rank"]
        locked = data[data["run"] == "tiny/locked"].set_index("sample_id")
        assert (locked["rank"] == truth.reindex(ids)).all()
        assert set(data["seed"]) == {0, 1, 2}


# --------------------------------------------------------------------- the view


def test_embedding_view_opens_on_an_aligned_map(aligned, monkeypatch):
    at = app(aligned, monkeypatch, "Embedding space")
    assert_clean(at)
    picker = widget(at.selectbox, MAP_PICKER)
    assert picker.value == "tiny/towers" and picker.options == ["tiny/towers (unlocked, locked, fixed-temp)"]
    assert widget(at.multiselect, RUN_PICKER).value == [f"tiny/{r}" for r in RUNS]  # the reference first
    shown = texts(at)
    assert "comparable across the runs of one map" in shown and "reference first" in shown
    assert "means something only locally" in shown
    meta, arrays = map_args(at)
    assert [layer["key"] for layer in meta["layers"]] == [f"tiny/{r}|{s}" for r in RUNS for s in ("end", "step 0")]
    assert [layer["on"] for layer in meta["layers"]] == [True] + [False] * 5  # the reference's end
    points = map_points(aligned, "unlocked")
    assert meta["n"] == len(points) == 15  # 5 images and 10 captions: every one sent
    xy = np.frombuffer(arrays["xy"], np.float32).reshape(6, meta["n"], 2)
    ids = json.loads(arrays["text"])["sample_id"]
    end = points.set_index("sample_id").reindex(ids)
    np.testing.assert_allclose(xy[0, :, 0], end["umap_x"].astype(np.float32))
    assert np.isfinite(xy).all()  # every run holds every sample at step 0 and at the end
    assert len(arrays["thumbs"]) > 0 and (np.frombuffer(arrays["thumb_at"], np.int32) >= 0).sum() == 2 * 5

    drift_table = next(d.value for d in at.dataframe if "knn_overlap" in d.value.columns)
    assert len(drift_table) == 15 and list(drift_table["moved"]) == sorted(drift_table["moved"], reverse=True)
    assert "cosine_distance" not in drift_table.columns  # tiny-clip's heads start random
    assert "started random" in shown
    truth = run_store.read_samples(aligned / "tiny" / "unlocked").set_index("sample_id")["rank"]
    assert (drift_table.set_index("sample_id")["rank_end"] == truth.reindex(drift_table["sample_id"])).all()

    gap = next(d.value for d in at.dataframe if "image_cone" in d.value.columns)
    evals = run_store.read_eval(aligned / "tiny" / "unlocked").query("split == 'val'")
    last = evals[evals["step"] == evals["step"].max()].set_index("metric")["value"]
    assert list(gap["run"]) == [f"tiny/{r}" for r in RUNS for _ in range(2)]  # one table for the runs
    assert list(gap["state"]) == ["step 0", "end"] * 3
    assert gap["gap"].iloc[1] == pytest.approx(last["modality_gap"], abs=1e-5)
    assert gap["temperature"].iloc[1] == pytest.approx(last["temperature"])
    assert len(at.get("vega_lite_chart")) == 3  # one probe panel per measure, every run in each
    probes = [next(f for f in chart_data(at, i) if "measure" in f.columns) for i in range(3)]
    assert [set(p["measure"]) for p in probes] == [{"i2t_R@1"}, {"t2i_R@1"}, {"zero_shot_accuracy"}]
    assert all(set(p["run"]) == {f"tiny/{r}" for r in RUNS} for p in probes)
    spec = json.loads(at.get("vega_lite_chart")[0].proto.spec)
    assert spec["layer"][1]["encoding"]["y"]["scale"]["zero"] is False  # the axis spans the values
    assert "from the stored vectors to the gap closed" in shown


def test_drift_between_two_runs_and_one_run_alone(aligned, monkeypatch):
    at = app(aligned, monkeypatch, "Embedding space")
    widget(at.radio, "Drift of").set_value("tiny/unlocked end → tiny/locked end").run()
    assert_clean(at)
    table = next(d.value for d in at.dataframe if "knn_overlap" in d.value.columns)
    ranks = {r: run_store.read_samples(aligned / "tiny" / r).set_index("sample_id")["rank"] for r in RUNS}
    rows = table.set_index("sample_id")
    assert (rows["rank_start"] == ranks["unlocked"].reindex(rows.index)).all()
    assert (rows["rank_end"] == ranks["locked"].reindex(rows.index)).all()
    a, b = map_points(aligned, "unlocked").set_index("sample_id"), map_points(aligned, "locked").set_index("sample_id")
    apart = np.hypot(a["umap_x"] - b["umap_x"], a["umap_y"] - b["umap_y"]).reindex(rows.index)
    np.testing.assert_allclose(rows["moved"], apart, rtol=1e-6)
    widget(at.multiselect, RUN_PICKER).set_value(["tiny/fixed-temp"]).run()
    assert_clean(at)
    assert [layer["key"] for layer in map_args(at)[0]["layers"]] == ["tiny/fixed-temp|end", "tiny/fixed-temp|step 0"]
    assert widget(at.radio, "Drift of").options == ["tiny/fixed-temp: step 0 → end"]


def test_a_box_selection_lists_its_samples_with_ranks_in_every_run(aligned, monkeypatch):
    at = app(aligned, monkeypatch, "Embedding space")
    points = map_points(aligned, "unlocked")
    x, y = float(points["umap_x"].median()), float(points["umap_y"].median())
    box = {"umap_x": [x, float(points["umap_x"].max())], "umap_y": [float(points["umap_y"].min()), y]}
    expected = ids_in_box(points, box)
    assert 0 < len(expected) < len(points)
    version = map_args(at)[0]["version"]
    select(at, {"box": box, "layers": ["tiny/unlocked|end"], "seq": 1})
    assert_clean(at)
    table = next(d.value for d in at.dataframe if "rank · tiny/locked" in d.value.columns)
    assert list(table["sample_id"]) == expected
    for run in RUNS:
        truth = run_store.read_samples(aligned / "tiny" / run).set_index("sample_id")["rank"]
        assert (table[f"rank · tiny/{run}"].to_numpy() == truth.reindex(expected).to_numpy()).all()
    assert [b.proto.label for b in at.get("download_button")] == ["Selection as CSV", "Selection as Parquet"]
    assert map_args(at)[0]["version"] == version  # the selection is drawn in the page: the data is not rebuilt
    select(at, {"seq": 2})  # a double-click clears it
    assert not [d for d in at.dataframe if "rank · tiny/locked" in d.value.columns]


def test_a_clicked_caption_shows_its_nearest_images(aligned, monkeypatch):
    at = app(aligned, monkeypatch, "Embedding space")
    samples = run_store.read_samples(aligned / "tiny" / "unlocked")
    caption = samples[samples["modality"] == "text"].iloc[3]
    select(at, {"pick": caption["sample_id"], "seq": 1})
    assert_clean(at)
    assert f"**Sample detail** · {caption['sample_id']}" in texts(at)
    nearest = next(d.value for d in at.dataframe if "right" in d.value.columns)
    assert list(nearest["image_id"]) == list(caption["topk_ids"])
    assert list(nearest["right"]) == [i == caption["image_id"] for i in caption["topk_ids"]]


def test_embedding_view_on_an_older_file_says_it_is_the_runs_own_fit(old_files, monkeypatch):
    at = app(old_files, monkeypatch, "Embedding space")
    assert_clean(at)
    picker = widget(at.selectbox, MAP_PICKER)
    assert picker.value == "tiny/locked" and "own fit" in plain(picker.format_func(picker.value))
    shown = texts(at)
    assert "the run's own fit" in shown and "no step 0, no arrows" in shown
    assert [layer["key"] for layer in map_args(at)[0]["layers"]] == ["tiny/locked|end"]  # no step-0 layer
    drift_table = next(d.value for d in at.dataframe if "knn_overlap" in d.value.columns)
    assert drift_table["moved"].isna().all() and drift_table["rank_start"].notna().all()
    assert "No zero-shot curve for tiny/locked: its embeddings.parquet holds no class prompts" in shown
    assert len(at.get("vega_lite_chart")) == 2  # the two retrieval measures
    assert {f["measure"].iloc[0] for i in range(2) for f in chart_data(at, i) if "measure" in f.columns} == {
        "i2t_R@1", "t2i_R@1"}


# --------------------------------------------------------------------------- queries


def test_a_caption_query_finds_the_image_it_describes(tiny_runs, monkeypatch):
    run = tiny_runs / "tiny" / "locked"
    samples = run_store.read_samples(run)
    captions = samples[samples["modality"] == "text"]
    unique = captions[~captions["caption"].duplicated(keep=False)]
    hit = unique[(unique["rank"] == 1) & ~unique["tied"]].iloc[0]  # its image is its nearest: the query's answer
    at = app(tiny_runs, monkeypatch, "Query")
    assert_clean(at)
    widget(at.multiselect, "Runs to query").set_value(["tiny/locked"])
    widget(at.text_input, "Caption").set_value(hit["caption"]).run()
    assert_clean(at)
    (table,) = [d.value for d in at.dataframe]
    assert table["image_id"].iloc[0] == hit["image_id"]
    emb = run_store.read_embeddings(run, last_step=True)
    stored = emb[emb["sample_id"] == hit["sample_id"]]["embedding"].iloc[0]
    image = emb[(emb["modality"] == "image") & (emb["image_id"] == hit["image_id"])]["embedding"].iloc[0]
    assert table["cosine"].iloc[0] == pytest.approx(float(np.dot(stored, image)), abs=1e-4)  # as evaluated
    assert table["thumbnail"].str.startswith("data:image/png;base64,").all()


def test_zero_shot_probabilities_over_typed_prompts(tiny_runs, monkeypatch):
    at = app(tiny_runs, monkeypatch, "Query")
    widget(at.radio, "Query").set_value("class prompts → zero-shot of one image").run()
    assert_clean(at)
    prompts = widget(at.text_area, "Class prompts, one per line")
    assert prompts.value.splitlines()[0].startswith("a photo of a")  # the runs' stored prompts
    prompts.set_value("a red circle\na blue square\na green triangle").run()
    assert_clean(at)
    (table,) = [d.value for d in at.dataframe]
    assert list(table.index) == ["a red circle", "a blue square", "a green triangle"]
    np.testing.assert_allclose(table.sum(axis=0), 1.0)
    assert set(table.columns) == {"tiny/locked", "tiny/unlocked", "tiny/fixed-temp"}


def test_a_run_whose_model_cannot_be_rebuilt_warns_and_the_others_answer(tiny_runs, tmp_path, monkeypatch):
    shutil.copytree(tiny_runs / "tiny", tmp_path / "tiny")
    config = json.loads((tmp_path / "tiny" / "locked" / run_store.CONFIG).read_text())
    atomic.write_json(tmp_path / "tiny" / "locked" / run_store.CONFIG, dict(config, seed=config["seed"] + 1))
    at = app(tmp_path, monkeypatch, "Query")
    widget(at.text_input, "Caption").set_value("a red circle").run()
    assert not at.exception
    (warning,) = at.warning
    assert "tiny/locked" in plain(warning.value) and "other frozen weights" in plain(warning.value)
    assert len(at.dataframe) == 2  # the two other runs still answer


def test_views_other_than_a_typed_query_never_import_torch(aligned):
    """Every tab opens, the Query tab too until a query is typed, without torch: only the query
    embeds text. (The test process has imported torch for the fixtures, so this runs apart.)"""
    import dashboard

    others = [v for v in dashboard.VIEWS if v != "Query"]
    code = f"""
import sys
from streamlit.testing.v1 import AppTest

def opened(view):
    at = AppTest.from_file({APP!r}, default_timeout=120)
    at.query_params["view"] = view
    at.run()
    assert not at.exception, (view, [e.value for e in at.exception])
    return at

for view in {others!r} + ["Query"]:
    at = opened(view)
    assert "torch" not in sys.modules, view + " imported torch"
at.text_input(key="query_caption").set_value("a red circle").run()
assert not at.exception and "torch" in sys.modules, "a typed query embeds its text with torch"
"""
    result = subprocess.run([sys.executable, "-c", code], check=False, cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "CLIP_RUNS_DIR": str(aligned)})
    assert result.returncode == 0, result.stderr[-3000:]

"""The Embedding space view on aligned maps (views/embedding.py, views/drift.py) and the Query
view (views/query.py), under Streamlit's AppTest on tiny runs trained by train.py; the pure
selection helpers without Streamlit.

A map selection reaches the app as the browser sends it: a JSON widget value under the chart's
element id ({"selection": {"box": {"umap_x": [a, b], "umap_y": [c, d]}, "pick": [...]}}).
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
from views.embedding import drawn, export_bytes, ids_in_box, selection_export

RUNS = ("unlocked", "locked", "fixed-temp")  # the map's reference first, as its comparison names it
MAP_PICKER = "Map"
RUN_PICKER = "Runs of this map (one full width, or two side by side)"


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


def select(at: AppTest, chart: int, selection: dict) -> AppTest:
    """Rerun the app as if the user had made `selection` on map `chart` (0: the left panel)."""
    states = WidgetStates()
    states.CopyFrom(at._tree.get_widget_states())
    state = states.widgets.add()
    state.id = at.get("vega_lite_chart")[chart].proto.id
    state.string_value = json.dumps({"selection": selection})
    return at._run(states)


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


def test_the_drawn_sample_keeps_images_and_is_the_same_in_every_run():
    rng = np.random.default_rng(0)
    ids = [f"img:{i}" for i in range(300)] + [f"txt:{j}" for j in range(1500)]
    points = pd.DataFrame({"sample_id": ids, "modality": ["image"] * 300 + ["text"] * 1500,
                           "umap_x": rng.normal(size=1800), "umap_y": rng.normal(size=1800)})
    shown = drawn(points, max_images=200, max_points=500)
    assert (shown["modality"] == "image").sum() == 200 and len(shown) == 500
    other_run = points.sample(frac=1.0, random_state=1).assign(umap_x=0.0)  # another run: other order and places
    assert set(drawn(other_run, max_images=200, max_points=500)["sample_id"]) == set(shown["sample_id"])
    assert drawn(points, max_images=300, max_points=2000) is points  # small enough: everything


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
    assert widget(at.multiselect, RUN_PICKER).value == ["tiny/unlocked", "tiny/locked"]  # the reference first
    shown = texts(at)
    assert "comparable across the runs of one map" in shown and "reference first" in shown
    assert "means something only locally" in shown
    assert len(at.get("vega_lite_chart")) == 2 + 2  # two panels, two gap-shift probes
    spec = json.loads(at.get("vega_lite_chart")[0].proto.spec)
    assert {p["name"] for p in spec["params"]} == {"box", "pick"}
    assert list(at.get("vega_lite_chart")[0].proto.selection_mode) == ["box", "pick"]
    frames = chart_data(at)
    scatter = next(f for f in frames if "sample_id" in f.columns and "rank" in f.columns)
    assert "embedding" not in scatter.columns and len(scatter) == 15  # 5 images and 10 captions, all drawn
    arrows = next(f for f in frames if "x0" in f.columns)
    assert len(arrows) == 15 and (arrows["moved"] > 0).all()  # fewer than 20 samples: an arrow each

    drift_table = next(d.value for d in at.dataframe if "knn_overlap" in d.value.columns)
    assert len(drift_table) == 15 and list(drift_table["moved"]) == sorted(drift_table["moved"], reverse=True)
    assert "cosine_distance" not in drift_table.columns  # tiny-clip's heads start random
    assert "started random" in shown
    truth = run_store.read_samples(aligned / "tiny" / "unlocked").set_index("sample_id")["rank"]
    assert (drift_table.set_index("sample_id")["rank_end"] == truth.reindex(drift_table["sample_id"])).all()

    gap = next(d.value for d in at.dataframe if "image_cone" in d.value.columns)
    evals = run_store.read_eval(aligned / "tiny" / "unlocked").query("split == 'val'")
    last = evals[evals["step"] == evals["step"].max()].set_index("metric")["value"]
    assert list(gap["state"]) == ["step 0", "end"]
    assert gap["gap"].iloc[1] == pytest.approx(last["modality_gap"], abs=1e-5)
    assert gap["temperature"].iloc[1] == pytest.approx(last["temperature"])
    probe = next(f for f in chart_data(at, 2) if "measure" in f.columns)
    assert set(probe["measure"]) == {"image→text R@1", "text→image R@1", "zero-shot accuracy"}


def test_drift_between_two_runs_and_one_run_full_width(aligned, monkeypatch):
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
    assert len(at.get("vega_lite_chart")) == 1 + 1
    assert widget(at.radio, "Drift of").options == ["tiny/fixed-temp: step 0 → end"]


def test_a_box_selection_lists_its_samples_with_ranks_in_every_run(aligned, monkeypatch):
    at = app(aligned, monkeypatch, "Embedding space")
    points = map_points(aligned, "unlocked")
    x, y = float(points["umap_x"].median()), float(points["umap_y"].median())
    box = {"umap_x": [x, float(points["umap_x"].max())], "umap_y": [float(points["umap_y"].min()), y]}
    expected = ids_in_box(points, box)
    assert 0 < len(expected) < len(points)
    select(at, 0, {"box": box, "pick": []})
    assert_clean(at)
    table = next(d.value for d in at.dataframe if "rank · tiny/locked" in d.value.columns)
    assert list(table["sample_id"]) == expected
    for run in RUNS:
        truth = run_store.read_samples(aligned / "tiny" / run).set_index("sample_id")["rank"]
        assert (table[f"rank · tiny/{run}"].to_numpy() == truth.reindex(expected).to_numpy()).all()
    assert [b.proto.label for b in at.get("download_button")] == ["Selection as CSV", "Selection as Parquet"]
    frames = chart_data(at)
    lines = next(f for f in frames if "pair" in f.columns)  # the selection's image-caption pairs
    captions = points.set_index("sample_id")
    assert set(lines["pair"]) <= set(captions.index[captions["modality"] == "text"])
    arrows = next(f for f in frames if "x0" in f.columns)
    assert len(arrows) == len(expected)  # the selection's arrows, not the top movers'


def test_a_clicked_caption_shows_its_nearest_images(aligned, monkeypatch):
    at = app(aligned, monkeypatch, "Embedding space")
    samples = run_store.read_samples(aligned / "tiny" / "unlocked")
    caption = samples[samples["modality"] == "text"].iloc[3]
    select(at, 0, {"box": {}, "pick": [{"sample_id": caption["sample_id"]}]})
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
    drift_table = next(d.value for d in at.dataframe if "knn_overlap" in d.value.columns)
    assert drift_table["moved"].isna().all() and drift_table["rank_start"].notna().all()
    assert "No zero-shot curve: this run's embeddings.parquet holds no class prompts" in shown
    probe = next(f for f in chart_data(at, 1) if "measure" in f.columns)
    assert set(probe["measure"]) == {"image→text R@1", "text→image R@1"}


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

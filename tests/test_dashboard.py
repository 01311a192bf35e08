"""The dashboard under Streamlit's AppTest (no browser), on tiny runs trained by train.py, on
runs with seeds whose per-query outcomes are chosen (tests/synthetic_runs.py), on a damaged
runs folder, on an empty one. The frame helpers it is built on are tested in
tests/test_analysis.py.

The runs folder reaches the app through $CLIP_RUNS_DIR (dashboard.py reads it when no
--runs-dir follows `--` on the command line); the open tab through ?view=<tab label>.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

import charts
from analysis.runs import last_eval
from core import atomic, run_store
from tests.damaged_runs import DAMAGED, GOOD, make_damaged_runs
from tests.synthetic_runs import make_seeded_runs

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "dashboard.py")


def app(runs_dir: Path, monkeypatch, view: str = "Runs") -> AppTest:
    monkeypatch.setenv("CLIP_RUNS_DIR", str(runs_dir))
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["view"] = view
    return at.run()


def widget(elements, label: str):
    return next(e for e in elements if e.label == label)


def chart_specs(at: AppTest) -> list[str]:
    """Each chart's Vega-Lite spec as JSON text (non-ASCII kept, so labels read as shown)."""
    return [json.dumps(json.loads(c.proto.spec), ensure_ascii=False) for c in at.get("vega_lite_chart")]


def chart_data(at: AppTest, index: int = 0) -> list[pd.DataFrame]:
    """The rows a chart sends to the browser, one frame per dataset of its layers."""
    from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df

    return [convert_arrow_bytes_to_pandas_df(d.data.data) for d in at.get("vega_lite_chart")[index].proto.datasets]


def plain(markdown: str) -> str:
    """Markdown as read on screen: the dashboard backslash-escapes text it shows literally."""
    return re.sub(r"\\(.)", r"\1", markdown)


def texts(at: AppTest) -> str:
    return plain("\n".join(str(e.value) for kind in (at.markdown, at.caption, at.info, at.warning) for e in kind))


def assert_clean(at: AppTest, warnings: int = 0) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert len(at.warning) == warnings, [w.value for w in at.warning]


@pytest.fixture(scope="module")
def damaged(tiny_runs, tmp_path_factory) -> Path:
    return make_damaged_runs(tiny_runs, tmp_path_factory.mktemp("damaged") / "runs")


# ------------------------------------------------------------------------- every view


def test_runs_view_compares_configs_and_final_metrics(tiny_runs, monkeypatch):
    at = app(tiny_runs, monkeypatch)
    assert_clean(at)
    table = at.dataframe[0].value
    assert sorted(table.index) == ["tiny/fixed-temp", "tiny/locked", "tiny/unlocked"]
    assert {"unlock_text", "unlock_image", "learn_temperature", "init_temperature"} <= set(table.columns)
    assert "lr" not in table.columns  # equal in every run, so not a difference
    final = last_eval(run_store.read_eval(tiny_runs / "tiny" / "locked"))
    assert table.loc["tiny/locked", "i2t_R@1"].startswith(f"{final['i2t_R@1']:.3f} [")  # the figure [its interval]
    assert "FINISHED" in texts(at)
    (spec,) = chart_specs(at)
    assert "Final validation retrieval" in spec
    (bars,) = chart_data(at)
    first = run_store.read_eval(tiny_runs / "tiny" / "locked").query("step == 0 and split == 'val'")
    assert len(bars) == 3 * 4
    assert bars.query("run == 'tiny/locked' and metric == 'i2t_R@1'")["baseline"].item() == pytest.approx(
        first.set_index("metric").loc["i2t_R@1", "value"])


def test_curves_view_switches_metric_axis_and_scale(tiny_runs, monkeypatch):
    at = app(tiny_runs, monkeypatch, "Curves")
    assert_clean(at)
    metric = widget(at.selectbox, "Metric")
    assert metric.value == "train|loss"
    assert "image→text R@1 · evaluation on val split" in metric.options
    metric.set_value("eval|val|i2t_R@1")
    widget(at.radio, "x axis").set_value("wall_time")
    widget(at.checkbox, "Log scale on y").check()
    widget(at.slider, "EMA smoothing").set_value(0.0)
    at.run()
    assert_clean(at)
    spec = chart_specs(at)[0]
    assert "image→text R@1" in spec and "wall time" in spec and '"log"' in spec


def test_curves_view_reuses_its_chart_and_draws_raw_lines_on_request(tiny_runs, monkeypatch):
    import streamlit as st

    st.cache_data.clear()
    built = []
    real = charts.curves_chart
    monkeypatch.setattr(charts, "curves_chart", lambda *a, **k: built.append(k.get("raw")) or real(*a, **k))
    at = app(tiny_runs, monkeypatch, "Curves")
    assert_clean(at)
    assert len(json.loads(at.get("vega_lite_chart")[0].proto.spec)["layer"]) == 3  # raw, smoothed, evaluations
    widget(at.radio, "x axis").set_value("epoch").run()
    widget(at.radio, "x axis").set_value("step").run()
    assert built == [True, True]  # back to step: the chart of the first run, not built again
    smoothed = chart_data(at)[0]
    assert (smoothed["smoothed"] != smoothed["value"]).any()
    widget(at.slider, "EMA smoothing").set_value(0.0).run()
    assert built == [True, True]  # a new weight smooths again but reuses the chart's layout
    raw = chart_data(at)[0]
    assert np.allclose(raw["smoothed"], raw["value"], equal_nan=True)  # weight 0: the EMA is the value
    assert json.loads(at.get("vega_lite_chart")[0].proto.spec)["data"]["name"] in {
        d.name for d in at.get("vega_lite_chart")[0].proto.datasets}
    widget(at.checkbox, "Raw values (faint lines)").uncheck().run()
    assert_clean(at)
    assert len(json.loads(at.get("vega_lite_chart")[0].proto.spec)["layer"]) == 2
    assert "faint line" not in texts(at)


def test_chart_specs_carry_their_own_frames_named_by_content():
    import altair as alt

    from views.vega import vega_lite

    def line(frame):
        return alt.layer(alt.Chart().mark_line().encode(x="x:Q", y="y:Q"), data=frame)

    def refuse(data, **kwargs):
        raise AssertionError("vega_lite() went through Altair's global data transformer")

    a = pd.DataFrame({"x": [1, 2, 3], "y": [3.0, 4.0, 5.0]})
    alt.data_transformers.register("refuse", refuse)
    with alt.data_transformers.enable("refuse"):  # what st.altair_chart does on another session's thread
        spec_a, again, spec_b = (vega_lite(line(f)) for f in (a, a.copy(), a.assign(y=[3.0, 4.0, 6.0])))
    (name,) = spec_a["datasets"]
    assert spec_a["data"] == {"name": name}
    pd.testing.assert_frame_equal(spec_a["datasets"][name], a)
    assert again["datasets"].keys() == spec_a["datasets"].keys()  # same rows, same name
    assert spec_b["datasets"].keys() != spec_a["datasets"].keys()  # same shape, other rows: a new name


def test_embedding_view_offers_each_configurations_own_map(tiny_runs, monkeypatch):
    """The map itself (colours, layers, selections) is tested in tests/test_embedding_view.py and,
    drawn, in tests/test_browser.py; here: the view opens on trained runs with one map each."""
    at = app(tiny_runs, monkeypatch, "Embedding space")
    assert_clean(at)
    maps = widget(at.selectbox, "Map")
    assert sorted(maps.options) == [f"tiny/{r} ({r})" for r in ("fixed-temp", "locked", "unlocked")]  # one each


def test_samples_view_lists_every_validation_image(tiny_runs, monkeypatch):
    at = app(tiny_runs, monkeypatch, "Samples")
    assert_clean(at)
    table = at.dataframe[0].value
    images = run_store.read_samples(tiny_runs / "tiny" / "locked").query("modality == 'image'")
    assert sorted(table["image_id"]) == sorted(images["image_id"])
    assert table["thumbnail"].str.startswith("data:image/png;base64,").all()
    assert {f"rank · tiny/{r}" for r in ("locked", "unlocked", "fixed-temp")} <= set(table.columns)
    for choice in ("fixed", "broken", "hardest"):
        widget(at.selectbox, "Show").set_value(choice)
        at.run()
        assert_clean(at)
    margins = at.dataframe[0].value["margin"].dropna()
    assert list(margins) == sorted(margins)
    assert "Sample detail" in [s.value for s in at.subheader]
    # The detail's nearest captions of the chosen image under run A, checked against samples.parquet:
    image_id = widget(at.selectbox, "Image").value
    run_a = widget(at.selectbox, "Run A").value
    samples = run_store.read_samples(tiny_runs / run_a)
    image = samples[(samples["modality"] == "image") & (samples["image_id"] == image_id)].iloc[0]
    texts = samples[samples["modality"] == "text"].set_index("sample_id")
    nearest = next(d.value for d in at.dataframe if "nearest captions" in d.value.columns)
    assert list(nearest["nearest captions"]) == [texts.loc[i, "caption"] for i in image["topk_ids"]]
    assert list(nearest["right"]) == [texts.loc[i, "image_id"] == image_id for i in image["topk_ids"]]
    own = [d.value for d in at.dataframe if "image id" in d.value.columns]
    assert len(own) >= (texts["image_id"] == image_id).sum()  # one table per caption of the image, per run


def test_similarity_view_draws_one_run_and_a_difference(tiny_runs, monkeypatch):
    at = app(tiny_runs, monkeypatch, "Similarity matrix")
    assert_clean(at)
    assert len(chart_specs(at)) == 1
    b = widget(at.selectbox, "Run B (for the difference B − A)")
    b.set_value(b.options[1])
    at.run()
    assert_clean(at)
    specs = chart_specs(at)
    assert len(specs) == 2 and "minus" in specs[1]


def test_forgetting_view_says_when_there_is_nothing(tiny_runs, monkeypatch):
    at = app(tiny_runs, monkeypatch, "Forgetting")
    assert_clean(at)
    assert "no forgetting evaluation" in at.info[0].value


def test_forgetting_view_draws_extra_splits(tiny_runs, tmp_path, monkeypatch):
    import shutil

    path = tmp_path / "tiny" / "wise"
    shutil.copytree(tiny_runs / "tiny" / "locked", path)
    writer = run_store.RunWriter(path)
    for (step, epoch, split), rows in run_store.read_eval(path).groupby(["step", "epoch", "split"]):
        writer.log_eval(step, epoch, split, dict(zip(rows["metric"], rows["value"], strict=True)))
        writer.log_eval(step, epoch, "imagenet", {"zero_shot_accuracy": 0.5 - step / 100})
    writer.flush()
    at = app(tmp_path, monkeypatch, "Forgetting")
    assert_clean(at)
    assert widget(at.selectbox, "Metric").value == "zero_shot_accuracy"
    assert set(chart_data(at)[0]["split"]) == {"train", "val", "imagenet"}


def test_export_view_offers_every_table(tiny_runs, monkeypatch):
    at = app(tiny_runs, monkeypatch, "Export")
    assert_clean(at)
    labels = [b.proto.label for b in at.get("download_button")]
    assert len(labels) == 5 and any("run_comparison.csv" in b for b in labels)


def test_openmoji_runs_carry_the_attribution(tiny_runs, tmp_path, monkeypatch):
    assert not any("OpenMoji" in c.value for c in app(tiny_runs, monkeypatch).sidebar.caption)
    import shutil

    path = tmp_path / "emoji" / "run"
    shutil.copytree(tiny_runs / "tiny" / "locked", path)
    config = json.loads((path / run_store.CONFIG).read_text())
    atomic.write_json(path / run_store.CONFIG, dict(config, data="openmoji"))
    captions = [c.value for c in app(tmp_path, monkeypatch).sidebar.caption]
    assert any(c.startswith("Emoji images: OpenMoji (https://openmoji.org)") for c in captions)


# ------------------------------------------------------- seeds, intervals and comparisons


@pytest.fixture(scope="module")
def seeded(tmp_path_factory) -> Path:
    return make_seeded_runs(tmp_path_factory.mktemp("seeded"))


def highlighted(at: AppTest, index: int = 0) -> set[tuple[str, str]]:
    """(row, column) of every highlighted cell of a styled table, read from its CSS."""
    table = at.dataframe[index].value
    css = at.dataframe[index].proto.arrow_data.styler.styles
    cells = set()
    for rule in css.split("}"):
        if "background-color" in rule:
            cells |= {(table.index[int(r)], table.columns[int(c)]) for r, c in re.findall(r"row(\d+)_col(\d+)", rule)}
    return cells


def test_runs_view_pools_seeds_into_one_row_per_configuration(seeded, monkeypatch):
    at = app(seeded, monkeypatch)
    assert_clean(at)
    assert widget(at.toggle, "Group seeds").value  # on: a configuration has several seeds
    table = at.dataframe[0].value
    assert list(table.index) == ["s/base", "s/better", "s/close", "s/subset", "s/worse"]
    assert table["seeds"].tolist() == [3, 2, 1, 1, 1]
    assert table.loc["s/base", "seed"] == "[0, 1, 2]" and "lr" in table.columns
    # base's three seeds: 12, 10 and 14 of 40 images right; their mean, with the t-interval of the seed means
    assert table.loc["s/base", "i2t_R@1"].startswith("0.300 [0.")
    assert table.loc["s/close", "i2t_R@1"] == "0.750 [0.700, 0.800]"  # one run: its stored interval
    shown = texts(at)
    assert "Highlighted: the best, and every run whose paired 95% interval against it includes 0" in shown
    assert "t-interval of the seed means" in shown
    assert "Not in the highlight (evaluated on other images, or no per-sample results yet): s/subset." in shown
    assert {("s/better", "i2t_R@1"), ("s/close", "i2t_R@1")} <= highlighted(at)
    assert not {("s/base", "i2t_R@1"), ("s/worse", "i2t_R@1")} & highlighted(at)


def test_runs_view_highlights_every_run_indistinguishable_from_the_best(seeded, monkeypatch):
    at = app(seeded, monkeypatch)
    widget(at.toggle, "Group seeds").set_value(False).run()
    assert_clean(at)
    table = at.dataframe[0].value
    assert len(table) == 8 and set(table["seeds"]) == {1}
    marked = {row for row, column in highlighted(at) if column == "i2t_R@1"}
    assert {"s/better.s0", "s/better.s1", "s/close"} <= marked  # the best, one and two images behind it
    assert not {"s/worse", "s/base.s0", "s/subset"} & marked  # clearly worse; on other images
    assert ("s/worse", "i2t_mean_rank") not in highlighted(at)
    assert ("s/better.s0", "i2t_mean_rank") in highlighted(at)  # lowest is best for a rank


def test_compare_view_shows_the_paired_table_and_the_changed_images(seeded, monkeypatch):
    at = app(seeded, monkeypatch, "Compare")
    assert_clean(at)
    assert widget(at.radio, "Compare").value.startswith("two configurations")
    pooled = at.dataframe[0].value
    assert pooled.loc["image→text R@1", "verdict"] == "higher (better)"
    assert pooled.loc["image→text R@1", "B − A"].startswith("+0.48")  # 31.5 of 40 against 12
    assert {"seed SD", "image SE", "95% interval", "images only"} <= set(pooled.columns)
    widget(at.radio, "Compare").set_value("two runs").run()
    widget(at.selectbox, "Run A").set_value("s/better.s0")
    widget(at.selectbox, "Run B").set_value("s/close").run()
    assert_clean(at)
    paired = at.dataframe[0].value
    assert list(paired.columns) == ["A", "B", "B − A", "95% interval", "MDE", "verdict", "p (sign-flip)",
                                    "p (McNemar)"]  # two runs: no comparison of the sweep, so no adjusted p
    assert paired.loc["image→text R@1", "B − A"] == "-0.050"
    assert paired.loc["image→text R@1", "verdict"].startswith("no detectable difference")
    assert paired.loc["zero-shot accuracy", "p (sign-flip)"] == "NaN"  # no labels: not measured
    assert paired.loc["image→text R@5", "p (McNemar)"] == "–"  # McNemar for the R@1 rows only
    changed = at.dataframe[1].value
    assert list(changed["image_id"]) == ["im000", "im001"] and set(changed["change"]) == {"broken by B"}
    assert changed["thumbnail"].str.startswith("data:image/png;base64,").all()
    next(b for b in at.button if "broken by B" in b.label).click().run()
    assert_clean(at)
    assert "Sample detail" in [s.value for s in at.subheader]  # the Samples view, with Compare's A, B and filter
    assert [widget(at.selectbox, w).value for w in ("Run A", "Run B", "Show")] == ["s/better.s0", "s/close", "broken"]
    assert sorted(at.dataframe[0].value["image_id"]) == ["im000", "im001"]


def test_compare_view_refuses_runs_on_other_images(seeded, monkeypatch):
    at = app(seeded, monkeypatch, "Compare")
    widget(at.radio, "Compare").set_value("two runs").run()
    widget(at.selectbox, "Run A").set_value("s/worse")
    widget(at.selectbox, "Run B").set_value("s/subset").run()
    assert not at.exception
    (error,) = at.error
    assert "the runs were evaluated on different query sets" in plain(error.value)
    assert "20 sample_id(s) only in a" in plain(error.value)
    assert not at.dataframe  # nothing computed, nothing shown


def test_curves_view_draws_the_mean_of_the_seeds_with_a_band(seeded, monkeypatch):
    at = app(seeded, monkeypatch, "Curves")
    assert_clean(at)
    (band,), spec = chart_data(at), json.loads(at.get("vega_lite_chart")[0].proto.spec)
    assert set(band["kind"]) == {"mean"}
    assert sorted(band["group"].unique()) == ["s/base", "s/better", "s/close", "s/subset", "s/worse"]
    base = band[band["group"] == "s/base"]
    assert (base["low"] < base["smoothed"]).all() and (base["smoothed"] < base["high"]).all()
    assert "min–max over seeds" in texts(at) and len(spec["layer"]) == 3
    widget(at.checkbox, "Single seeds (thin lines)").check().run()
    assert_clean(at)
    assert len(json.loads(at.get("vega_lite_chart")[0].proto.spec)["layer"]) == 4
    rows = chart_data(at)[0]
    assert set(rows["kind"]) == {"mean", "seed"} and rows.loc[rows["kind"] == "seed", "run"].nunique() == 8
    assert "thin lines: single seeds" in texts(at)


# ---------------------------------------------------------------- damaged and empty


@pytest.mark.parametrize("view", ["Runs", "Compare", "Curves", "Embedding space", "Query", "Samples",
                                  "Similarity matrix", "Forgetting", "Export"])
def test_damaged_folder_warns_once_per_damaged_run(damaged, monkeypatch, view):
    at = app(damaged, monkeypatch, view)
    assert_clean(at, warnings=len(DAMAGED))
    for key in DAMAGED:
        assert sum(key in plain(w.value) for w in at.warning) == 1
    assert sorted(widget(at.sidebar.multiselect, "Runs").value) == sorted(GOOD)


def test_damaged_folder_keeps_nan_and_shows_the_live_run(damaged, monkeypatch):
    at = app(damaged, monkeypatch)
    table = at.dataframe[0].value
    assert table.loc["tiny/nan-loss", "zero_shot_accuracy"] == "NaN"
    assert table.loc["tiny/live", "state"] == "RUNNING"
    assert "refreshes every" in texts(at)
    at = app(damaged, monkeypatch, "Curves")
    assert "tiny/nan-loss: 3 NaN value(s)" in texts(at)


def test_empty_folder_says_how_to_make_runs(tmp_path, monkeypatch):
    at = app(tmp_path / "missing", monkeypatch)
    assert_clean(at)
    assert "No runs under" in at.info[0].value
    command = at.code[0].value
    assert "accelerate launch training/train.py" in command
    launcher = command.split(" launch ")[0]  # the venv's accelerate, typed as a user can run it
    assert launcher == "accelerate" or (ROOT / launcher).exists() or Path(launcher).exists()


def test_dashboard_never_imports_torch(tiny_runs):
    code = ("import sys; from streamlit.testing.v1 import AppTest;"
            f"at = AppTest.from_file({APP!r}, default_timeout=60); at.query_params['view'] = 'Samples'; at.run();"
            "assert not at.exception; assert 'torch' not in sys.modules, 'torch was imported'")
    result = subprocess.run([sys.executable, "-c", code], check=False, cwd=ROOT, capture_output=True, text=True,
                            env={**__import__("os").environ, "CLIP_RUNS_DIR": str(tiny_runs)})
    assert result.returncode == 0, result.stderr[-2000:]


def test_command_line_runs_dir_wins_over_the_environment(tmp_path, monkeypatch):
    import dashboard

    monkeypatch.setenv("CLIP_RUNS_DIR", str(tmp_path / "env"))
    assert dashboard.runs_root([]) == (tmp_path / "env").resolve()
    assert dashboard.runs_root(["--runs-dir", str(tmp_path / "cli")]) == (tmp_path / "cli").resolve()
    monkeypatch.delenv("CLIP_RUNS_DIR")
    assert dashboard.runs_root([]) == ROOT / "runs"

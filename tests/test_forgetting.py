"""Forgetting, measured: a run starts from another's final weights (init_from), label subsets
pick its data, extra evaluation sets are evaluated beside train and val, and WiSE-FT mixes
the start and the end weights; plus --report-to and the shipped COCO sweep file."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pandas as pd
import pytest
import torch

from analysis.runs import last_eval
from core import run_store
from core.config import SWEEPS_DIR, ConfigError, RunConfig
from data.manifest import load_manifest
from training.pairs import Pairs
from training.train import main
from training.trained_weights import interpolate

# stage-2 comes first in the file: train.py must still train stage-1 (its source) first.
TWO_STAGE = """
name = "forget"
[base]
model = "tiny-clip"
image_size = 32
embed_dim = 16
epochs = 2
batch_size = 8
lr = 1e-2
warmup_steps = 0
[runs.stage-2]
init_from = "stage-1"
include_labels = ["circle"]
extra_evals = [{name = "stage-1-val", exclude_labels = ["circle"]}]
wise_ft_ratios = [0.0, 0.5, 1.0]
[runs.stage-1]
exclude_labels = ["circle"]
"""


def _train(tmp_path, synthetic_data, sweep_text: str, *extra: str) -> int:
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(sweep_text)
    return main(["--sweep", str(sweep), "--runs-dir", str(tmp_path / "runs"), "--data", str(synthetic_data),
                 "--cache-dir", str(tmp_path / "cache"), *extra])


@pytest.fixture(scope="module")
def two_stage(tmp_path_factory, synthetic_data):
    """runs/forget/stage-1 and stage-2, trained by train.py (UMAP left out: not under test here)."""
    tmp = tmp_path_factory.mktemp("forget")
    assert _train(tmp, synthetic_data, TWO_STAGE, "--no-umap") == 0
    return tmp / "runs" / "forget"


def _at(evals: pd.DataFrame, split: str, step: int) -> pd.Series:
    rows = evals[(evals.split == split) & (evals.step == step)]
    return rows.set_index("metric")["value"]


def test_init_from_starts_from_the_source_final_weights(two_stage):
    """Stage 2 before any step, on stage 1's validation data, is stage 1 at its end."""
    stage1 = run_store.read_eval(two_stage / "stage-1")
    stage2 = run_store.read_eval(two_stage / "stage-2")
    end1 = _at(stage1, "val", stage1.step.max())
    start2 = _at(stage2, "stage-1-val", 0)
    for metric in ("positive_cosine", "negative_cosine", "modality_gap", "i2t_R@1", "temperature"):
        assert start2[metric] == pytest.approx(end1[metric], abs=1e-5), metric
    w1 = run_store.read_final_weights(two_stage / "stage-1")
    w2 = run_store.read_final_weights(two_stage / "stage-2")
    assert w1.keys() == w2.keys() and "logit_scale" in w1 and "image_head.weight" in w1
    assert not torch.equal(w1["image_head.weight"], w2["image_head.weight"])  # stage 2 trained on


def test_extra_eval_set_rows_at_step_0_and_at_the_end(two_stage):
    evals = run_store.read_eval(two_stage / "stage-2")
    last = evals.step.max()
    assert set(evals.split) == {"train", "val", "stage-1-val"}
    extra = evals[evals.split == "stage-1-val"]
    assert {0, last} <= set(extra.step)
    assert _at(evals, "stage-1-val", last)["n_images"] == 2  # the synthetic val triangles
    assert _at(evals, "val", last)["n_images"] == 3  # the synthetic val circles


def test_wise_ft_end_points_equal_the_start_and_the_end(two_stage):
    ordinary = run_store.read_eval(two_stage / "stage-2")
    wise = run_store.read_eval(two_stage / "stage-2", wise_ft=True)
    last = ordinary.step.max()
    assert sorted(wise.wise_ft_ratio.unique()) == [0.0, 0.5, 1.0] and set(wise.step) == {last}
    assert ordinary.wise_ft_ratio.isna().all()
    for split in ("train", "val", "stage-1-val"):
        rows = wise[wise.split == split]
        at0 = rows[rows.wise_ft_ratio == 0].set_index("metric")["value"]
        at1 = rows[rows.wise_ft_ratio == 1].set_index("metric")["value"]
        start, end = _at(ordinary, split, 0), _at(ordinary, split, last)
        for metric in ("positive_cosine", "negative_cosine", "i2t_R@1", "t2i_R@1", "temperature"):
            assert at0[metric] == pytest.approx(start[metric], abs=1e-5), (split, metric)
            assert at1[metric] == pytest.approx(end[metric], abs=1e-5), (split, metric)
        mid = rows[rows.wise_ft_ratio == 0.5].set_index("metric")["value"]
        assert mid["temperature"] != pytest.approx(start["temperature"], abs=1e-7)  # really mixed
    assert run_store.read_eval(two_stage / "stage-1", wise_ft=True).empty  # off unless configured


def test_label_subsets_pick_the_training_data(two_stage, synthetic_data):
    images = load_manifest(synthetic_data)
    train = images[images.split == "train"]
    for run, pairs in (("stage-1", (train.label != "circle").sum()), ("stage-2", (train.label == "circle").sum())):
        status = run_store.load_run(two_stage / run).status
        assert status["state"] == "FINISHED" and status["train_pairs"] == pairs
        assert "wise_ft" in status["timings"] or run == "stage-1"
    pairs = Pairs.from_manifest(images)
    view = pairs.subset("train", include_labels=["circle", "square"])
    assert set(view.images.label) == {"circle", "square"} and set(view.captions.label) == {"circle", "square"}
    assert set(pairs.subset("val", exclude_labels=["circle"]).images.label) == {"triangle"}
    with pytest.raises(ValueError, match="unknown label"):
        pairs.check_labels(["hexagon"], "test")


def test_missing_init_from_source_fails_before_training(tmp_path, synthetic_data):
    sweep = TWO_STAGE.replace('init_from = "stage-1"', 'init_from = "stage-0"')
    with pytest.raises(ConfigError, match="'stage-2' starts from run 'stage-0'"):
        _train(tmp_path, synthetic_data, sweep, "--only", "stage-2")
    assert not (tmp_path / "runs" / "forget" / "stage-2").exists()
    with pytest.raises(ConfigError, match="unknown label"):
        unknown = TWO_STAGE.replace('[runs.stage-1]\nexclude_labels = ["circle"]',
                                    '[runs.stage-1]\nexclude_labels = ["hexagon"]')
        _train(tmp_path, synthetic_data, unknown, "--only", "stage-1")


def test_forgetting_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="wise_ft_ratios"):
        RunConfig(wise_ft_ratios=[0.5, 1.5])
    with pytest.raises(ConfigError, match="other than 'train', 'val' and 'test'"):
        RunConfig(extra_evals=[{"name": "val"}])
    with pytest.raises(ConfigError, match="include_labels"):
        RunConfig(include_labels="circle")
    for labels in ({"include_labels": []}, {"exclude_labels": []}, {"exclude_labels": ["a", 1]},
                   {"include_labels": ["a"], "exclude_labels": ["b"]}):
        # one rule for the run's own labels and an extra evaluation set's
        with pytest.raises(ConfigError, match="include_labels|exclude_labels"):
            RunConfig(**labels)
        with pytest.raises(ConfigError, match="include_labels|exclude_labels"):
            RunConfig(extra_evals=[{"name": "x", **labels}])
    assert RunConfig(exclude_labels=None, extra_evals=[{"name": "x", "exclude_labels": None}]).exclude_labels is None
    assert RunConfig(extra_evals=[{"name": "x"}]).extra_evals == [
        {"name": "x", "data": "openmoji", "split": "val", "include_labels": None, "exclude_labels": None}]


def test_interpolate_is_exact_at_the_ends():
    start = {"w": torch.randn(50, 7)}
    end = {"w": torch.randn(50, 7)}
    assert torch.equal(interpolate(start, end, 0.0)["w"], start["w"])
    assert torch.equal(interpolate(start, end, 1.0)["w"], end["w"])
    assert torch.allclose(interpolate(start, end, 0.25)["w"], 0.75 * start["w"] + 0.25 * end["w"], atol=1e-6)


def test_eval_files_without_the_wise_ft_column_still_read(tmp_path):
    old = pd.DataFrame({"step": [0, 4], "epoch": [0.0, 1.0], "split": ["val", "val"],
                        "metric": ["i2t_R@1", "i2t_R@1"], "value": [0.1, 0.5]})
    old.to_parquet(tmp_path / run_store.EVAL)
    assert run_store._parquet_problem(tmp_path / run_store.EVAL) is None
    frame = run_store.read_eval(tmp_path)
    assert list(frame.columns) == run_store.EVAL_SCHEMA.names and frame.wise_ft_ratio.isna().all()
    assert last_eval(run_store.read_eval(tmp_path))["i2t_R@1"] == 0.5


def test_report_to_tensorboard_writes_event_files(tmp_path, synthetic_data, monkeypatch):
    pytest.importorskip("tensorboard")
    sweep = "name = \"tb\"\n[base]\nmodel = \"tiny-clip\"\nimage_size = 32\nembed_dim = 16\nepochs = 1\n[runs.one]\n"
    assert _train(tmp_path, synthetic_data, sweep, "--report-to", "tensorboard", "--no-umap") == 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = run_store.tracker_dir(tmp_path / "runs" / "tb" / "one")
    files = list(folder.rglob("events.out.tfevents.*"))
    assert files
    events = EventAccumulator(str(files[0].parent)).Reload()
    assert {"train/loss", "eval/val/i2t_R@1"} <= set(events.Tags()["scalars"])
    losses = [e.value for e in events.Scalars("train/loss")]
    assert len(losses) == run_store.load_run(tmp_path / "runs" / "tb" / "one").status["step"]
    assert all(math.isfinite(v) for v in losses)


def test_report_to_a_missing_tracker_fails_fast(tmp_path, synthetic_data, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "wandb" else real(name))
    with pytest.raises(ConfigError, match="pip install wandb"):
        _train(tmp_path, synthetic_data, TWO_STAGE, "--report-to", "wandb")
    assert not (tmp_path / "runs").exists()


def test_coco_sweep_dry_run_works_offline(capsys):
    assert main(["--sweep", str(SWEEPS_DIR / "coco-vit-b32.toml"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "openai/clip-vit-base-patch32" in out and "coco" in out


def test_interpolated_weights_change_smoothly_between_ratios(two_stage):
    wise = run_store.read_eval(two_stage / "stage-2", wise_ft=True)
    temps = wise[(wise.split == "val") & (wise.metric == "temperature")].sort_values("wise_ft_ratio").value
    assert np.all(np.diff(temps.to_numpy()) != 0)


def test_forgetting_view_plots_gain_against_forgetting(two_stage, monkeypatch):
    from tests.test_dashboard import app, assert_clean, chart_data, widget

    at = app(two_stage.parent, monkeypatch, "Forgetting")
    assert_clean(at)
    widget(at.selectbox, "Metric").set_value("i2t_R@1")
    at.run()
    assert_clean(at)
    assert widget(at.selectbox, "Held-out evaluation set").value == "stage-1-val"
    points = next(d for d in chart_data(at, 1) if "gain_on_fine_tuning_data" in d.columns)
    stage2 = points[points.run == "forget/stage-2"]
    assert sorted(stage2.wise_ft_ratio.dropna()) == [0.0, 0.5, 1.0] and stage2.wise_ft_ratio.isna().sum() == 1
    at0 = stage2[stage2.wise_ft_ratio == 0].iloc[0]
    assert at0.gain_on_fine_tuning_data == pytest.approx(0, abs=1e-9)
    assert at0.change_on_held_out == pytest.approx(0, abs=1e-9)
    end, at1 = stage2[stage2.wise_ft_ratio.isna()].iloc[0], stage2[stage2.wise_ft_ratio == 1].iloc[0]
    assert at1.change_on_held_out == pytest.approx(end.change_on_held_out, abs=1e-9)

"""train.py end to end on the tiny sweep, and bad input failing before any run starts."""

import math
import os

import numpy as np
import pytest

from analysis.runs import last_eval
from core import run_store
from core.config import ConfigError, load_sweep
from tests.conftest import TINY_SWEEP
from training.train import main


def _snapshot(root):
    return {str(p): (p.stat().st_mtime_ns, p.read_bytes()) for p in root.rglob("*") if p.is_file()}


def test_every_run_file_and_column(tiny_runs):
    runs = run_store.list_runs(tiny_runs)
    assert [r.key for r in runs] == ["tiny/fixed-temp", "tiny/locked", "tiny/unlocked"]
    for run in runs:
        assert run.problems == [] and run.state == "FINISHED"
        assert run.config["name"] == run.name and run.config["provenance"]["versions"]["torch"]
        assert {"features", "training", "evaluation", "umap"} <= set(run.status["timings"])
        m = run_store.read_metrics(run.path)
        assert list(m.columns) == run_store.METRICS_SCHEMA.names
        assert {"loss", "lr", "logit_scale", "temperature", "grad_norm"} <= set(m.name)
        steps = sorted(m[m.name == "loss"].step)
        assert steps == list(range(1, len(steps) + 1)) and len(steps) == run.status["step"]
        e = run_store.read_eval(run.path)
        assert set(e.split) == {"train", "val"}
        assert 0 in set(e.step) and e.step.max() == run.status["step"]  # step 0 is always evaluated
        assert {"i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@10", "i2t_mean_rank",
                "zero_shot_accuracy", "modality_gap", "positive_cosine", "negative_cosine"} <= set(e.metric)
        emb = run_store.read_embeddings(run.path)
        assert list(emb.columns) == run_store.EMBEDDINGS_SCHEMA.names
        assert set(emb.step) == {0, run.status["step"]} and set(emb.modality) == {"image", "text"}
        assert set(emb.split) == {"val"}
        last = emb[emb.step == emb.step.max()]
        prompts = run_store.read_embeddings(run.path, prompts=True).query("modality == 'prompt'")
        assert set(prompts.step) == {0, run.status["step"]} and prompts.sample_id.str.startswith("prompt:").all()
        assert run_store.umap_maps(run.path) == [run.name]  # the tiny sweep has no comparisons: a map each
        xy = run_store.read_umap(run.path)
        assert list(xy.columns) == run_store.UMAP_SCHEMA.names and set(xy.step) == {0, run.status["step"]}
        assert xy[["umap_x", "umap_y"]].notna().all().all()
        end = xy[xy.step == run.status["step"]]
        assert sorted(zip(end.sample_id, end.modality)) == sorted(zip(last.sample_id, last.modality))
        assert np.allclose([np.linalg.norm(v) for v in emb.embedding], 1.0, atol=1e-4)
        s = run_store.read_samples(run.path)
        assert list(s.columns) == run_store.SAMPLES_SCHEMA.names
        images = s[s.modality == "image"]
        assert images.thumbnail.map(lambda b: b[:4] == b"\x89PNG").all()
        assert (images["rank"] >= 1).all() and images.topk_ids.map(len).min() >= 1
        final = last_eval(run_store.read_eval(run.path))
        assert final["i2t_R@1"] == pytest.approx((images["rank"] <= 1).mean())


def test_fixed_temperature_stays_fixed_and_learned_one_moves(tiny_runs):
    fixed = run_store.read_metrics(tiny_runs / "tiny" / "fixed-temp")
    assert np.allclose(fixed[fixed.name == "temperature"].value, 0.1)
    learned = run_store.read_metrics(tiny_runs / "tiny" / "locked")
    t = learned[learned.name == "temperature"].sort_values("step").value
    ev = run_store.read_eval(tiny_runs / "tiny" / "locked").query("metric == 'temperature' and split == 'val'")
    initial = ev.sort_values("step")["value"].iloc[0]  # evaluated at step 0, before any update
    assert t.iloc[0] == pytest.approx(initial, abs=1e-7)  # the temperature step 1's loss used
    assert t.iloc[-1] != pytest.approx(initial, abs=1e-6)


def test_rerun_skips_finished_runs_and_keeps_them(tiny_runs, synthetic_data, tmp_path, capsys):
    before = _snapshot(tiny_runs)
    assert main(["--sweep", str(TINY_SWEEP), "--runs-dir", str(tiny_runs), "--data", str(synthetic_data),
                 "--cache-dir", str(tmp_path)]) == 0
    assert "skipping 3 finished run(s)" in capsys.readouterr().out
    assert _snapshot(tiny_runs) == before


@pytest.mark.parametrize("args, message", [
    (["--set", "lrr=0.1"], "unknown config key 'lrr'.*did you mean 'lr'"),
    (["--set", "epochs=zero"], "'epochs' must be int"),
    (["--data", "no-such-dataset"], "python data/prepare.py"),
    (["--model", "openai/clip-vit-base-patch32"], "--model offline-default"),
    (["--only", "no-such-run"], "--only names unknown run"),
    (["--set", "lr=0.5", "--only", "locked"], "finished run with a different config"),
])
def test_bad_input_fails_before_any_run_and_leaves_runs_untouched(tiny_runs, synthetic_data, args, message,
                                                                   monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = _snapshot(tiny_runs)
    base = ["--sweep", str(TINY_SWEEP), "--runs-dir", str(tiny_runs)]
    if "--data" not in args:
        base += ["--data", str(synthetic_data)]
    with pytest.raises(Exception, match=message):
        main(base + args)
    assert _snapshot(tiny_runs) == before


def test_cli_prints_error_and_exits_2(tmp_path):
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "training/train.py", "--set", "batch_sise=8", "--runs-dir",
                          str(tmp_path)], capture_output=True, text=True, cwd=os.path.dirname(TINY_SWEEP.parents[1]))
    assert out.returncode == 2 and "did you mean 'batch_size'" in out.stderr
    assert not any(tmp_path.iterdir())


def test_sweep_grid_expands_and_validates(tmp_path):
    sweep = tmp_path / "s.toml"
    sweep.write_text('name = "g"\n[base]\nepochs = 1\n[grids.lr]\nlr = [1e-3, 3e-3]\nbatch_size = [8, 16]\n')
    runs = load_sweep(sweep).runs
    assert [r.name for r in runs] == ["lr-lr=0.001-batch_size=8", "lr-lr=0.001-batch_size=16",
                                      "lr-lr=0.003-batch_size=8", "lr-lr=0.003-batch_size=16"]
    sweep.write_text('[base]\nprecision = "bf16"\n[runs.a]\nprecision = "no"\n')
    with pytest.raises(ConfigError, match="sweep-wide"):
        load_sweep(sweep)
    sweep.write_text('[base]\n[runs.a]\nbatch_size = 1\n')
    with pytest.raises(ConfigError, match="batch_size must be at least 2"):
        load_sweep(sweep)


def test_default_sweep_covers_the_knobs():
    runs = load_sweep().runs
    assert len(runs) >= 6
    for key in ("lr", "batch_size", "learn_temperature", "data_fraction"):
        assert len({getattr(r, key) for r in runs}) > 1, key
    towers = {(r.unlock_image != 0, r.unlock_text != 0) for r in runs}
    assert {(False, False), (False, True), (True, True)} <= towers
    assert not any(math.isnan(r.lr) for r in runs)


def test_rerun_fits_umap_a_finished_run_lacks(tiny_runs, synthetic_data, tmp_path):
    """A sweep interrupted between training and UMAP gets its coordinates on the next call."""
    import shutil
    runs = tmp_path / "runs"
    shutil.copytree(tiny_runs, runs)
    path = runs / "tiny" / "locked"
    (path / run_store.UMAP).unlink()  # what a sweep stopped before its UMAP stage leaves
    assert run_store.umap_maps(path) == []
    assert main(["--sweep", str(TINY_SWEEP), "--runs-dir", str(runs), "--data", str(synthetic_data),
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    assert run_store.umap_maps(path) == ["locked"]
    assert run_store.read_sweep_summary(runs, "tiny")["skipped"] == ["locked", "unlocked", "fixed-temp"]


def test_a_retrained_run_gets_its_map_fitted_again(tiny_runs, synthetic_data, tmp_path):
    """--overwrite writes new embeddings: the map places of the old ones must not survive them."""
    import shutil
    runs = tmp_path / "runs"
    shutil.copytree(tiny_runs, runs)
    path = runs / "tiny" / "locked"
    old = run_store.read_umap(path)
    assert main(["--sweep", str(TINY_SWEEP), "--runs-dir", str(runs), "--data", str(synthetic_data),
                 "--cache-dir", str(tmp_path / "cache"), "--only", "locked", "--overwrite",
                 "--set", "seed=5"]) == 0  # another seed: other heads, other embeddings
    assert (path / run_store.UMAP).stat().st_mtime_ns >= (path / run_store.EMBEDDINGS).stat().st_mtime_ns
    new = run_store.read_umap(path)
    assert run_store.umap_maps(path) == ["locked"] and not new[["umap_x", "umap_y"]].equals(old[["umap_x", "umap_y"]])


def test_runs_saved_before_a_key_existed_count_as_its_default(tiny_runs, synthetic_data, tmp_path, capsys):
    import json
    import shutil
    runs = tmp_path / "runs"
    shutil.copytree(tiny_runs, runs)
    later = ("accum_steps", "compile_mode", "pad_multiple")  # keys added after runs were saved
    for name in ("locked", "fixed-temp"):  # these use the defaults of those keys
        config = runs / "tiny" / name / "config.json"
        config.write_text(json.dumps({k: v for k, v in json.loads(config.read_text()).items() if k not in later}))
    assert main(["--sweep", str(TINY_SWEEP), "--runs-dir", str(runs), "--data", str(synthetic_data),
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    assert "skipping 3 finished run(s)" in capsys.readouterr().out


def test_an_exception_leaves_a_failed_run_with_its_traceback(synthetic_data, tmp_path, monkeypatch):
    import training.trainer as trainer

    def broken(cfg):
        raise RuntimeError("the model exploded")

    monkeypatch.setattr(trainer, "build_model", broken)
    runs = tmp_path / "runs"
    assert main(["--sweep", str(TINY_SWEEP), "--runs-dir", str(runs), "--data", str(synthetic_data),
                 "--only", "locked", "--cache-dir", str(tmp_path / "cache")]) == 1
    [run] = run_store.list_runs(runs)
    assert run.state == "FAILED" and "the model exploded" in run.status["error"]
    assert run.status["end_time"] >= run.status["start_time"]


def test_seeds_are_replicates_of_one_group(tmp_path):
    """seeds in [base] or per run (or --seeds) make one run per seed, named <run>.s<seed>,
    differing from each other in the seed alone; a seeded init_from follows the seed."""
    sweep = tmp_path / "seeded.toml"
    sweep.write_text('name = "seeded"\n[base]\nmodel = "tiny-clip"\nseeds = [0, 1]\n'
                     '[runs.a]\n[runs.b]\nseeds = [3]\n[runs.c]\ninit_from = "a"\n')
    runs = {c.name: c for c in load_sweep(sweep).runs}
    assert sorted(runs) == ["a.s0", "a.s1", "b.s3", "c.s0", "c.s1"]
    assert (runs["a.s1"].group, runs["a.s1"].seed, runs["c.s1"].init_from) == ("a", 1, "a.s1")
    a0, a1 = runs["a.s0"].to_dict(), runs["a.s1"].to_dict()
    assert {k for k in a0 if a0[k] != a1[k]} == {"name", "seed"}
    assert sorted(c.name for c in load_sweep(sweep, seeds=[0, 1, 2], only=["a"]).runs) == ["a.s0", "a.s1", "a.s2"]
    sweep.write_text('name = "bad"\n[base]\nmodel = "tiny-clip"\n[runs.a]\nseeds = [0]\n'
                     '[runs.b]\nseeds = [1]\ninit_from = "a"\n')
    with pytest.raises(ConfigError, match="has no seed 1"):
        load_sweep(sweep)
    with pytest.raises(ConfigError, match="distinct non-negative"):
        load_sweep(sweep, seeds=[0, 0])


def test_reported_evaluations_carry_intervals_and_the_rest_none(tiny_runs):
    """Step 0 and the last evaluation of val (and test, extra sets) have a 95% interval around
    every R@k, mean rank and zero-shot figure; the evaluations in between have none (NaN)."""
    e = run_store.read_eval(tiny_runs / "tiny" / "locked")
    assert e[e.split == "train"][["low", "high"]].isna().all().all()  # the overfitting probe has none
    e = e[e.split == "val"]
    figures = e[e.metric.isin(["i2t_R@1", "t2i_R@5", "i2t_mean_rank", "zero_shot_accuracy"])]
    ends = figures.step.isin([0, figures.step.max()])
    assert figures[ends][["low", "high"]].notna().all().all()
    assert ((figures.low <= figures.value + 1e-12) & (figures.value <= figures.high + 1e-12))[ends].all()
    assert figures[~ends][["low", "high"]].isna().all().all() and (~ends).any()
    assert e[e.metric == "modality_gap"][["low", "high"]].isna().all().all()
    s = run_store.read_samples(tiny_runs / "tiny" / "locked")
    images = s[s.modality == "image"]
    last = last_eval(e)
    assert images.zero_shot_correct.mean() == pytest.approx(last["zero_shot_accuracy"])
    assert s.tied.sum() == last["i2t_tied_queries"] + last["t2i_tied_queries"]


def test_closed_form_baseline_is_a_run_of_its_own(synthetic_data, tmp_path):
    """closed_form = "cca" fits the linear heads on the locked towers' features, with no
    training step, and writes a run the readers treat like any other: evaluated once, as step
    0, with intervals; the ridge it chose on val is in its status."""
    sweep = tmp_path / "baseline.toml"
    sweep.write_text('name = "base"\n[base]\nmodel = "tiny-clip"\nimage_size = 32\nembed_dim = 8\n'
                     '[runs.cca]\nclosed_form = "cca"\n[runs.random]\nepochs = 1\nlr = 1e-9\n')
    assert main(["--sweep", str(sweep), "--runs-dir", str(tmp_path / "runs"), "--data", str(synthetic_data),
                 "--cache-dir", str(tmp_path / "cache"), "--no-umap"]) == 0
    path = tmp_path / "runs" / "base" / "cca"
    run = run_store.load_run(path)
    assert run.state == "FINISHED" and run.problems == [] and run.status["step"] == 0
    assert run.status["closed_form"]["method"] == "cca" and run.status["closed_form"]["ridge"] > 0
    e = run_store.read_eval(path)
    assert set(e.step) == {0} and {"train", "val"} <= set(e.split)
    assert e[(e.metric == "i2t_R@1") & (e.split == "val")][["low", "high"]].notna().all().all()
    assert set(run_store.read_embeddings(path, with_vectors=False).step) == {0}
    assert run_store.read_metrics(path).empty
    with pytest.raises(ConfigError, match="locked towers"):
        load_sweep(sweep, {"unlock_text": 1}, ["cca"])


def test_default_sweep_compares_one_factor_at_a_time_over_three_seeds(tmp_path):
    """Every comparison of the default sweep changes its named factor alone, over the same
    seeds; changing a second thing (epochs, schedule, data, seeds) is refused when read."""
    from core.config import DEFAULT_SWEEP

    sweep = load_sweep(DEFAULT_SWEEP)
    names = {c.name for c in sweep.comparisons}
    assert {"learning-rate", "batch-size", "temperature", "data", "towers", "split"} <= names
    groups = {c.group for c in sweep.runs}
    trained = groups - {"closed-form"}
    assert all(len(sweep.group(g)) >= 3 for g in trained)
    text = DEFAULT_SWEEP.read_text()
    assert "[runs.lr-3e-4]\nlr = 3e-4\n" in text
    for extra in ("epochs = 7", 'schedule = "constant"', "data_fraction = 0.5", "seeds = [0, 1]"):
        bad = tmp_path / "bad.toml"
        bad.write_text(text.replace("[runs.lr-3e-4]\nlr = 3e-4\n", f"[runs.lr-3e-4]\nlr = 3e-4\n{extra}\n"))
        with pytest.raises(ConfigError, match="differs from its reference|has seeds"):
            load_sweep(bad)


def test_an_openmoji_prepared_with_an_older_split_is_refused_with_the_fix(tmp_path):
    """A copy of openmoji prepared by an older version (split by base emoji, no test split)
    would be trained on silently; train.py names the difference and the command that fixes it."""
    import json

    from training.train import stale_split

    (tmp_path / "report.json").write_text(json.dumps({"split_by": "base", "test_fraction": 0.0}))
    why = stale_split("openmoji", tmp_path)
    assert "split_by" in why and "python data/prepare.py openmoji" in why
    (tmp_path / "report.json").write_text(json.dumps({"split_by": "concept", "test_fraction": 0.2}))
    assert stale_split("openmoji", tmp_path) is None
    assert stale_split("synthetic", tmp_path) is None  # not auto-prepared: its splits are the user's


def test_only_the_second_stage_still_starts_from_the_same_seed_of_the_first():
    """--only stage2-people (stage 1 already finished) must not fall back to the unseeded name."""
    from core.config import DEFAULT_SWEEP
    sweep = load_sweep(DEFAULT_SWEEP, only=["stage2-people"])
    assert [(c.name, c.init_from) for c in sweep.runs] == [
        (f"stage2-people.s{s}", f"stage1-no-people.s{s}") for s in (0, 1, 2)]


def test_a_partial_call_keeps_the_comparisons_and_refits_their_map(synthetic_data, tmp_path):
    """--only one run of a comparison: sweep.json still names the comparison, and its map is
    fitted again with the run this call did not train."""
    sweep = tmp_path / "pair.toml"
    sweep.write_text(TINY_SWEEP.read_text().split("# Towers locked")[0] + (
        '[runs.locked]\n\n[runs.fixed-temp]\nlearn_temperature = false\ninit_temperature = 0.1\n\n'
        '[comparisons.temperature]\nreference = "locked"\nruns = ["fixed-temp"]\n'
        'factor = ["learn_temperature", "init_temperature"]\n'))
    args = ["--sweep", str(sweep), "--runs-dir", str(tmp_path / "runs"), "--data", str(synthetic_data),
            "--cache-dir", str(tmp_path / "cache")]
    assert main(args) == 0
    reference = tmp_path / "runs" / "tiny" / "locked"
    assert run_store.umap_maps(reference) == ["temperature"]
    before = run_store.read_umap(reference, "temperature")
    assert main([*args, "--only", "fixed-temp", "--overwrite", "--set", "seed=3"]) == 0
    assert [c["name"] for c in run_store.read_sweep_summary(tmp_path / "runs", "tiny")["comparisons"]] == [
        "temperature"]
    other = tmp_path / "runs" / "tiny" / "fixed-temp"
    assert run_store.umap_maps(other) == ["temperature"]  # the comparison's map, not one of its own
    after = run_store.read_umap(reference, "temperature")
    assert len(after) == len(before)  # the reference was rewritten with the refitted map
    assert (reference / run_store.UMAP).stat().st_mtime_ns > (other / run_store.EMBEDDINGS).stat().st_mtime_ns

"""The torch-free analysis layer (core/names.py, analysis/runs.py) on small hand-made
frames: the last evaluation, label lists, train.py's summary table, and the frame helpers that
the dashboard and the write-up draw from."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from analysis.compare import compare, on_split
from analysis.runs import (
    comparison_table,
    cosine_difference,
    cosine_matrix,
    ema,
    eval_step,
    forgetting_frame,
    image_outcomes,
    label_list,
    last_eval,
    retrieval_frame,
    stack,
    style_best,
    summary_table,
    umap_points,
)
from core import run_store
from core.config import setting
from core.names import OUTCOMES
from writeup import report

ROOT = Path(__file__).resolve().parents[1]


def evals_of(rows: list[tuple]) -> pd.DataFrame:
    """An eval frame from (step, split, metric, value) rows."""
    return pd.DataFrame(rows, columns=["step", "split", "metric", "value"]).assign(epoch=0.0, wise_ft_ratio=np.nan)


RUN_A = evals_of([(0, "val", "i2t_R@1", 0.1), (0, "train", "i2t_R@1", 0.2), (10, "val", "i2t_R@1", 0.4),
                  (10, "val", "modality_gap", 0.8), (20, "train", "i2t_R@1", 0.9), (20, "val", "i2t_R@1", 0.5)])
RUN_B = evals_of([(0, "val", "i2t_R@1", 0.3), (5, "val", "i2t_R@1", 0.6)])


# ------------------------------------------------------------------------ last_eval


def test_last_eval_of_one_run_takes_its_latest_step_on_the_split():
    assert last_eval(RUN_A) == {"i2t_R@1": 0.5}
    assert last_eval(RUN_A, which="first") == {"i2t_R@1": 0.1}
    assert last_eval(RUN_A, split="train") == {"i2t_R@1": 0.9}
    assert eval_step(RUN_A) == 20 and eval_step(RUN_A, which="first") == 0


def test_last_eval_picks_one_run_out_of_a_stack():
    both = stack([RUN_A.assign(run="a"), RUN_B.assign(run="b")])
    assert last_eval(both, run="b") == {"i2t_R@1": 0.6}  # b's own last step (5), not the stack's (20)
    assert last_eval(both, run="a") == {"i2t_R@1": 0.5}
    assert last_eval(both, run="missing") == {}
    assert eval_step(both, run="b") == 5


def test_last_eval_is_empty_without_an_evaluation():
    assert last_eval(RUN_A, split="imagenet") == {}
    assert eval_step(RUN_A, split="imagenet") is None
    assert last_eval(stack([])) == {}  # no runs: a frame without columns
    assert last_eval(stack([]), run="a") == {}


def test_last_eval_keeps_nan():
    nan = evals_of([(0, "val", "zero_shot_accuracy", 0.2), (3, "val", "zero_shot_accuracy", np.nan)])
    assert math.isnan(last_eval(nan)["zero_shot_accuracy"])


# ----------------------------------------------------------------------- label_list


def test_label_list_drops_every_spelling_of_no_label():
    values = ["dog", "", None, "None", np.nan, "nan", float("nan"), pd.NA, "cat", "dog"]
    assert label_list(values) == ["cat", "dog"]


def test_label_list_sorts_and_reads_a_series_or_a_generator():
    assert label_list(pd.Series(["b", "a", "nan", None])) == ["a", "b"]
    assert label_list(v for v in ("z", "y")) == ["y", "z"]
    assert label_list([]) == []


# -------------------------------------------------------------------- summary_table


def test_summary_table_groups_seeds_with_intervals():
    """One row per configuration: the seeds' mean with its interval on val, test R@1 beside it;
    a single run shows its stored bootstrap interval; a failed run shows NaN."""
    def run(key, seed, r1, test_r1, state="FINISHED", group="a"):
        rows = [(4, "val", "i2t_R@1", r1, r1 - 0.1, r1 + 0.1), (4, "test", "i2t_R@1", test_r1, np.nan, np.nan)]
        evals = pd.DataFrame(rows, columns=["step", "split", "metric", "value", "low", "high"])
        return {"run": key, "state": state, "config": {"group": group, "seed": seed, "lr": 1e-3},
                "evals": evals if r1 == r1 else evals.iloc[:0], "timings": {"training": 1.0, "evaluation": 0.5}}
    runs = [run("s/a.s0", 0, 0.30, 0.20), run("s/a.s1", 1, 0.34, 0.24), run("s/a.s2", 2, 0.32, 0.22),
            run("s/b", 0, 0.50, 0.40, group="b"), run("s/c", 0, np.nan, np.nan, "FAILED", group="c")]
    table = summary_table(runs)
    assert list(table.index) == ["s/a", "s/b", "s/c"] and list(table["seeds"]) == [3, 1, 1]
    seeds = scipy.stats.t.ppf(0.975, 2) * np.std([0.30, 0.34, 0.32], ddof=1) / np.sqrt(3)
    half = np.hypot(seeds, 0.1)  # the seeds' spread and the images' (each run's interval is +-0.1)
    assert table.loc["s/a", "i2t_R@1"] == f"0.320 [{0.32 - half:.3f}, {0.32 + half:.3f}]"
    assert table.loc["s/a", "test i2t_R@1"].startswith("0.220 [")
    assert table.loc["s/b", "i2t_R@1"] == "0.500 [0.400, 0.600]" and table.loc["s/b", "test i2t_R@1"] == "0.400"
    assert table.loc["s/c", "i2t_R@1"] == "NaN" and table.loc["s/c", "state"] == "FAILED"
    assert table.loc["s/a", "seconds"] == 4.5


# ---------------------------------------------------------- frames built on last_eval


def test_retrieval_frame_takes_each_runs_last_step_and_its_step_0():
    both = stack([RUN_A.assign(run="a"), RUN_B.assign(run="b")])
    frame = retrieval_frame(both).set_index("run")
    assert frame.loc["a", "final"] == 0.5 and frame.loc["a", "baseline"] == 0.1 and frame.loc["a", "step"] == 20
    assert frame.loc["b", "final"] == 0.6 and frame.loc["b", "step"] == 5
    assert set(frame["measure"]) == {"image→text R@1"}


def test_forgetting_frame_measures_changes_from_step_0():
    own = evals_of([(0, "val", "i2t_R@1", 0.2), (0, "held", "i2t_R@1", 0.5),
                    (9, "val", "i2t_R@1", 0.6), (9, "held", "i2t_R@1", 0.3)]).assign(run="a")
    other = evals_of([(0, "val", "i2t_R@1", 0.2), (9, "val", "i2t_R@1", 0.4)]).assign(run="b")  # no held-out set
    wise = evals_of([(9, "val", "i2t_R@1", 0.5), (9, "held", "i2t_R@1", 0.45)]).assign(run="a", wise_ft_ratio=0.5)
    frame = forgetting_frame(stack([own, other]), wise, "i2t_R@1", "held")
    assert list(frame["run"]) == ["a", "a"]
    end, mixed = frame.iloc[0], frame.iloc[1]
    assert end["point"] == "end of training" and math.isnan(end["wise_ft_ratio"])
    assert end["gain_on_fine_tuning_data"] == pytest.approx(0.4)
    assert end["change_on_held_out"] == pytest.approx(-0.2)
    assert mixed["point"] == "WiSE-FT 0.5" and mixed["change_on_held_out"] == pytest.approx(-0.05)


# ---------------------------------------------------------------- samples and UMAP


def test_image_outcomes_margin_is_negative_when_a_wrong_caption_wins():
    samples = pd.DataFrame([
        {"modality": "image", "sample_id": "i1", "image_id": "a", "caption": "cat", "label": "x", "rank": 2,
         "positive_cosine": 0.5, "topk_ids": ["t2", "t1"], "topk_scores": [0.7, 0.5]},
        {"modality": "image", "sample_id": "i2", "image_id": "b", "caption": "dog", "label": "x", "rank": 1,
         "positive_cosine": 0.9, "topk_ids": ["t2", "t1"], "topk_scores": [0.9, 0.6]},
        {"modality": "text", "sample_id": "t1", "image_id": "a", "caption": "cat"},
        {"modality": "text", "sample_id": "t2", "image_id": "b", "caption": "dog"},
    ])
    out = image_outcomes(samples).set_index("image_id")
    assert out.loc["a", "margin"] == pytest.approx(-0.2)
    assert out.loc["b", "margin"] == pytest.approx(0.3)
    assert out.loc["a", "top_captions"].startswith("dog (0.70) | cat (0.50)")


def test_umap_points_join_coordinates_and_ranks_of_the_same_sample_and_step():
    embeddings = pd.DataFrame({"sample_id": ["i1", "t1", "i2"], "modality": ["image", "text", "image"],
                               "image_id": ["a", "a", "b"], "caption": ["cat", "cat", "dog"],
                               "label": ["x", "x", "y"], "split": "val", "step": 7})
    umap = pd.DataFrame({"sample_id": ["i1", "t1", "i1", "i2"], "modality": ["image", "text", "image", "text"],
                         "step": [7, 7, 0, 7], "umap_x": [1.0, 2.0, 9.0, 9.0], "umap_y": [3.0, 4.0, 9.0, 9.0]})
    ranks = pd.DataFrame({"modality": ["image", "text", "image"], "sample_id": ["i1", "t1", "i2"], "rank": [1, 3, 1]})
    points = umap_points(embeddings, umap, ranks)
    assert list(points["sample_id"]) == ["i1", "t1"]  # i2's only coordinates are of another modality
    assert list(points["umap_x"]) == [1.0, 2.0]  # step 7's coordinates, not step 0's
    assert list(points["outcome"]) == [OUTCOMES[0], OUTCOMES[1]]
    empty = umap_points(embeddings, umap.iloc[:0], ranks)
    assert empty.empty and {"umap_x", "umap_y", "rank", "outcome"} <= set(empty.columns)


def test_cosine_matrix_matches_dot_products_and_marks_true_pairs():
    rows = pd.DataFrame({"modality": ["image", "image", "text", "text"], "image_id": ["a", "b", "a", "b"],
                         "caption": ["cat", "dog", "cat", "cat"]})
    vectors = np.array([[1, 0], [0, 1], [1, 0], [0.6, 0.8]], dtype=np.float32)
    m = cosine_matrix(rows, vectors, ["a", "b"]).set_index(["image", "caption_of"])
    assert m.loc[("a", "a"), "cosine"] == pytest.approx(1.0)
    assert m.loc[("b", "b"), "cosine"] == pytest.approx(0.8)
    assert m["true_pair"].sum() == 2
    assert sorted(m["caption"].unique()) == ["cat", "cat #2"]
    diff = cosine_difference(m.reset_index(), m.reset_index())
    assert (diff["cosine"] == 0).all()


# --------------------------------------------------------------- curves and tables


def test_ema_keeps_nan_and_debiases():
    values = pd.Series([1.0, np.nan, 3.0, 3.0])
    smoothed = ema(values, 0.5)
    assert smoothed[0] == 1.0 and math.isnan(smoothed[1])
    assert smoothed[2] == pytest.approx((0.5 * 1 + 3) / 1.5)  # the NaN step is skipped, not zeroed
    assert list(ema(values, 0.0).fillna(-1)) == [1.0, -1, 3.0, 3.0]


def test_comparison_table_shows_only_differing_config():
    runs = [{"run": "a", "state": "FINISHED", "config": {"lr": 1e-3, "epochs": 2}, "final": {"i2t_R@1": 0.5}},
            {"run": "b", "state": "FAILED", "config": {"lr": 1e-4, "epochs": 2}, "final": {}}]
    table = comparison_table(runs)
    assert "lr" in table.columns and "epochs" not in table.columns
    assert math.isnan(table.loc["b", "i2t_R@1"])


def test_comparison_table_shows_list_valued_config_keys():
    """Label subsets and extra evaluation sets are lists in config.json; the Runs table must
    still compare and highlight them (it crashed on the real default sweep once)."""
    runs = [{"run": "a", "state": "FINISHED", "config": {"lr": 1e-3, "exclude_labels": ["People & Body"]},
             "final": {"i2t_R@1": 0.2}},
            {"run": "b", "state": "FINISHED", "config": {"lr": 1e-4, "exclude_labels": None,
                                                         "extra_evals": [{"name": "held-out", "split": "val"}]},
             "final": {"i2t_R@1": 0.3}}]
    table = comparison_table(runs)
    assert table.loc["a", "exclude_labels"] == '["People & Body"]'
    html = style_best(table).to_html()
    assert "People & Body" in html and "held-out" in html


def test_analysis_and_charts_import_neither_torch_nor_streamlit():
    code = ("import sys, core.names, analysis.runs, analysis.compare, charts;"
            "assert not {'torch', 'streamlit'} & set(sys.modules), sorted({'torch', 'streamlit'} & set(sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], check=False, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


# ------------------------------------------------------ writeup/report.py (the write-up's)


def test_report_numbers_keep_their_precision_and_show_nan_as_nan():
    assert report.num(0.123456) == "0.123" and report.num(0.00122, 2) == "0.0012"
    assert report.pct(0.3678) == "36.8%"
    for missing in (None, float("nan"), np.float32("nan"), pd.NA):
        assert report.num(missing) == report.pct(missing) == "NaN"
    assert report.counts(pd.Series({"train": 3126, "val": 818})) == "3,126 train, 818 val"
    assert setting(2e-5) == "2e-05" and setting(0.001) == "0.001"  # not the "0.0" of a fixed precision
    assert setting(None) == "-" and setting(512) == "512"


def seeded_sweep(root: Path, comparisons: list[dict]) -> report.Sweep:
    """tests/synthetic_runs.make_seeded_runs's sweep, its sweep.json naming `comparisons`."""
    from tests.synthetic_runs import make_seeded_runs

    make_seeded_runs(root)
    run_store.write_sweep_summary(root, "s", {"comparisons": comparisons})
    return report.load_sweep(root)


def test_load_sweep_groups_seeds_and_takes_the_reference_from_the_comparisons(tmp_path):
    sweep = seeded_sweep(tmp_path, [{"name": "lr", "reference": "base", "runs": ["better", "close"], "factor": ["lr"]},
                                    {"name": "gone", "reference": "base", "runs": ["not-trained"], "factor": ["lr"]}])
    assert sweep.groups["base"] == ["base.s0", "base.s1", "base.s2"] and sweep.groups["better"] == ["better.s0",
                                                                                                    "better.s1"]
    assert sweep.reference == "base" and sweep.detail == "base.s0"
    assert [c["name"] for c in sweep.comparisons] == ["lr"]  # a comparison of configurations not here is left out
    assert sweep.subset == ["subset"] and "subset" not in sweep.ranked
    assert len(set(sweep.colors.values())) == len(sweep.groups)  # one colour per configuration
    assert "31 usable runs" not in report.header(sweep) and "8 usable runs in 5 configurations" in report.header(sweep)


def test_effects_name_a_direction_only_where_the_interval_excludes_zero(tmp_path):
    sweep = seeded_sweep(tmp_path, [{"name": "lr", "reference": "base", "runs": ["better", "worse"],
                                     "factor": ["lr"]}])
    effects = report.effects(sweep, "test").set_index(["run", "metric"])  # no test split here: val instead
    better, worse = effects.loc[("better", "i2t_R@1")], effects.loc[("worse", "i2t_R@1")]
    assert better["split"] == "val" and better["interval"] == "seeds by Welch's t, images by a paired bootstrap"
    assert better["difference"] == pytest.approx(31.5 / 40 - 12 / 40) and better["low"] > 0
    assert better["verdict"].startswith("higher (better), +0.488 [")
    assert worse["interval"] == "single runs, images resampled"  # one seed: seed variation cannot be measured
    assert worse["verdict"].startswith("lower (worse)")
    table = report.effects_table(report.effects(sweep, "val"))
    assert list(table.index) == [("lr", "better"), ("lr", "worse")] and table.loc[("lr", "better"), "changes"] == \
        "lr 0.001 → 0.003"
    assert list(report.detectable(effects.reset_index()).iloc[:2]) == [1, 1]  # i2t R@1 and R@5 of better


def test_runs_on_other_images_are_compared_unpaired(tmp_path):
    from tests.synthetic_runs import known_ranks, samples_frame, write_run

    sweep = seeded_sweep(tmp_path, [])
    write_run(tmp_path, "s/elsewhere", samples_frame(known_ranks(30), ids=[f"other{i}" for i in range(40)]),
              {"lr": 1e-3, "data": "other"})
    sweep = report.load_sweep(tmp_path)
    side = lambda group: {n: on_split(run_store.read_samples(sweep.runs[n].path), "val") for n in sweep.groups[group]}
    table, interval = compare(side("close"), side("elsewhere"))
    assert interval.startswith("unpaired")
    row = table.loc["i2t_R@1"]
    assert row["difference"] == pytest.approx(0.0) and row["low"] < 0 < row["high"]
    assert row["verdict"].startswith("no detectable difference") and row["mde"] > row["high"]


def test_balanced_weights_make_every_label_count_alike():
    labels, correct = pd.Series(["a", "a", "a", "b"]), np.array([1.0, 1.0, 1.0, 0.0])
    assert (correct * report.balanced_weights(labels)).mean() == pytest.approx(0.5)  # (1 + 0) / 2, not 3 / 4
    assert report.balanced_weights(pd.Series(["a", "b"])).tolist() == [1.0, 1.0]


def test_concept_outcomes_count_another_variant_of_the_concept_but_not_a_tie():
    samples = pd.DataFrame({
        "modality": ["image"] * 3 + ["text"] * 3, "step": 5, "sample_id": ["i1", "i2", "i3", "t1", "t2", "t3"],
        "image_id": ["a1", "a2", "b", "a1", "a2", "b"], "rank": [1, 3, 2, 2, 1, 4],
        "topk_ids": [["t1"], ["t1"], ["t3"], ["a2"], ["a2"], ["a1"]]})
    concept = {"a1": "a", "a2": "a", "b": "b"}
    images = report.concept_outcomes(samples, "image", concept).set_index("image_id")
    assert images["exact"].tolist() == [1.0, 0.0, 0.0]
    assert images["concept"].tolist() == [1.0, 1.0, 0.0]  # a2's first caption is a1's; b's is its own, tied: wrong
    texts = report.concept_outcomes(samples, "text", concept).set_index("image_id")
    assert texts["concept"].tolist() == [1.0, 1.0, 0.0]  # t1's first image is a2, of its concept


def test_opposite_moves_and_label_shares():
    effects = pd.DataFrame({"run": ["x", "x", "y", "y"], "metric": ["i2t_R@1", "zero_shot_accuracy"] * 2,
                            "low": [-0.1, 0.1, -0.1, 0.02], "high": [-0.05, 0.2, 0.1, 0.05]})
    assert report.opposite_moves(effects) == (["x"], ["y"])
    samples = pd.DataFrame({"modality": ["image"] * 5 + ["text"] * 3,
                            "label": ["a", "b", "", None, "b", "a", "a", "a"]})
    shares = report.label_shares(samples)
    assert shares.index[0] == "b" and shares.iloc[0] == pytest.approx(2 / 3)  # labelled images only
    assert report.label_shares(samples.assign(label="")).empty


def test_source_shows_training_code_without_importing_it():
    code = ("import sys; from writeup import report; s = report.source('training/step.py', 'Stepper.__call__'); "
            "assert s.startswith('def __call__(self, batch'), s[:40]; "
            "assert 'torch' not in sys.modules, 'report.source imported torch'")
    result = subprocess.run([sys.executable, "-c", code], check=False, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_report_imports_no_torch():
    code = "import sys, writeup.report; assert 'torch' not in sys.modules, 'writeup.report imported torch'"
    result = subprocess.run([sys.executable, "-c", code], check=False, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


# ------------------------------------------------------- comparisons (analysis/compare.py)


def _samples(ranks, **kwargs) -> pd.DataFrame:
    from tests.synthetic_runs import samples_frame

    return samples_frame(ranks, **kwargs)


def test_query_outcomes_score_images_captions_and_zero_shot():
    from analysis.compare import query_outcomes

    samples = _samples([1, 6, 12], caption_ranks=[1, 3, 6, 6, 1, 20], zero_shot=[1, 0, np.nan])
    outcomes = query_outcomes(samples).groupby("metric")["outcome"]
    assert outcomes.mean()["i2t_R@1"] == pytest.approx(1 / 3) and outcomes.mean()["i2t_R@10"] == pytest.approx(2 / 3)
    assert outcomes.mean()["t2i_R@5"] == pytest.approx(3 / 6)  # per caption, not per image
    assert outcomes.mean()["t2i_mean_rank"] == pytest.approx(37 / 6)
    assert outcomes.size()["zero_shot_accuracy"] == 2  # the image without a label has no zero-shot outcome
    assert "zero_shot_accuracy" not in query_outcomes(_samples([1, 2])).groupby("metric").groups  # no labels
    with_test = pd.concat([samples, samples.assign(split="test", rank=99)], ignore_index=True)
    pd.testing.assert_frame_equal(query_outcomes(with_test), query_outcomes(samples))  # val only: choices look at val


def test_compare_two_finds_a_planted_difference_and_none_between_identical_runs():
    from analysis.compare import compare_two

    rng = np.random.default_rng(3)
    a_ranks = np.where(rng.random(80) < 0.3, 1, rng.integers(2, 30, 80))
    fixed = (a_ranks > 1) & (rng.random(80) < 0.5)  # B gets half of A's misses right, and breaks none
    a = _samples(a_ranks, zero_shot=rng.random(80) < 0.5)
    b = _samples(np.where(fixed, 1, a_ranks), zero_shot=rng.random(80) < 0.5)
    table = compare_two(a, b)
    assert list(table.index) == ["i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10",
                                 "i2t_mean_rank", "t2i_mean_rank", "zero_shot_accuracy"]
    r1 = table.loc["i2t_R@1"]
    assert r1["difference"] == pytest.approx(fixed.mean()) and r1["b"] - r1["a"] == pytest.approx(fixed.mean())
    assert 0 < r1["low"] < r1["difference"] < r1["high"] and r1["p_value"] < 0.01 and r1["mcnemar_p"] < 0.001
    assert r1["verdict"].startswith("higher (better), +")
    assert table.loc["i2t_mean_rank", "verdict"].startswith("lower (better)")  # a lower rank is the better one
    assert np.isnan(table.loc["i2t_R@5", "mcnemar_p"])  # McNemar only for the R@1 rows
    same = compare_two(a, a.sample(frac=1, random_state=0))  # the same run, rows in another order
    assert (same["difference"] == 0).all()
    assert same["verdict"].str.startswith("no detectable difference").all()


def test_compare_two_refuses_runs_on_other_images_or_captions():
    from analysis.compare import compare_two

    a = _samples([1, 2, 3, 1])
    with pytest.raises(ValueError, match="different query sets: 1 sample_id"):
        compare_two(a, _samples([1, 2, 3]))
    other_captions = a.replace({"sample_id": {"txt:im000:1": "txt:im000:9"}})
    with pytest.raises(ValueError, match="different query sets"):
        compare_two(a, other_captions)


def test_compare_pools_seeds_and_falls_back_with_one_seed():
    from analysis.compare import SEEDS_AND_IMAGES, SINGLE_RUNS

    rng = np.random.default_rng(5)
    a = {f"a.s{s}": _samples(np.where(rng.random(60) < 0.2, 1, 5)) for s in range(3)}
    b = {f"b.s{s}": _samples(np.where(rng.random(60) < 0.7, 1, 5)) for s in range(3)}
    table, interval = compare(a, b)
    r1 = table.loc["i2t_R@1"]
    assert interval == SEEDS_AND_IMAGES and r1["verdict"].startswith("higher (better)")
    assert r1["low"] <= r1["image_low"] and r1["image_high"] <= r1["high"]  # seeds add to the image variation
    assert r1["seed_sd"] > 0 and r1["image_se"] > 0 and r1["p_value"] < 0.05 and r1["mde"] > 0
    single, interval = compare({"a.s0": a["a.s0"]}, b)
    assert interval == SINGLE_RUNS and "mcnemar_p" in single.columns  # the paired comparison of two runs
    fixed, interval = compare({"a.s0": a["a.s0"]}, b, fixed_a=True)  # a deterministic fit: its own replicate
    assert interval == SEEDS_AND_IMAGES and fixed.loc["i2t_R@1", "a"] == pytest.approx(single.loc["i2t_R@1", "a"])


def test_changed_outcomes_lists_what_b_fixed_and_broke():
    from analysis.compare import changed_outcomes

    changed = changed_outcomes(_samples([1, 3, 1, 2, 7]), _samples([1, 1, 4, 2, 1]))
    assert list(changed["image_id"]) == ["im004", "im001", "im002"]  # fixed first, the farthest first
    assert list(changed["change"]) == ["fixed by B", "fixed by B", "broken by B"]
    assert list(changed["rank_a"]) == [7, 3, 1] and list(changed["rank_b"]) == [1, 1, 4]
    assert list(changed["tied_a"]) == [True, False, False]  # samples_frame ties ranks divisible by 7


def test_best_of_marks_every_row_indistinguishable_from_the_best_only():
    from analysis.compare import best_of, query_outcomes

    rng = np.random.default_rng(11)
    best = np.where(rng.random(60) < 0.6, 1, 8)
    close = best.copy()
    close[np.flatnonzero(best == 1)[:2]] = 8  # two images fewer: inside the noise of 60
    worse = np.where(rng.random(60) < 0.1, 1, 8)
    outcomes = {name: [query_outcomes(_samples(r))] for name, r in
                (("best", best), ("close", close), ("worse", worse))}
    outcomes["subset"] = [query_outcomes(_samples(best[:30]))]  # other images: cannot be paired
    outcomes["group"] = [query_outcomes(_samples(best)), query_outcomes(_samples(close))]  # seeds averaged
    marks, left_out = best_of(outcomes, "i2t_R@1")
    assert marks == {"best": True, "close": True, "worse": False, "subset": False, "group": True}
    assert left_out == ["subset"]
    rank_marks, _ = best_of(outcomes, "i2t_mean_rank")
    assert rank_marks["best"] and not rank_marks["worse"]  # the lowest mean rank is the best
    assert best_of(outcomes, "zero_shot_accuracy") == (dict.fromkeys(outcomes, False), [])  # no labels


# ------------------------------------------------------------ groups (analysis/runs.py)


def _figures(values: dict[str, float], low: float = np.nan, high: float = np.nan) -> pd.DataFrame:
    return pd.DataFrame({"value": values, "low": low, "high": high}).astype(float)


def test_group_names_pool_seeds_of_one_configuration_only():
    from analysis.runs import group_names

    runs = [("s/a.s0", {"group": "a", "seed": 0, "lr": 1.0}), ("s/a.s1", {"group": "a", "seed": 1, "lr": 1.0}),
            ("s/b", {"seed": 0}), ("t/a.s0", {"group": "a", "seed": 0, "lr": 1.0}),
            ("s/copy1", {"group": "c", "seed": 0}), ("s/copy2", {"group": "c", "seed": 0}),
            ("s/d.s0", {"group": "d", "seed": 0, "lr": 1.0}), ("s/d.s1", {"group": "d", "seed": 1, "lr": 2.0})]
    assert group_names(runs) == {"s/a.s0": "s/a", "s/a.s1": "s/a", "s/b": "s/b", "t/a.s0": "t/a",
                                 "s/copy1": "s/copy1", "s/copy2": "s/copy2",  # one seed twice: copies, not seeds
                                 "s/d.s0": "s/d.s0", "s/d.s1": "s/d.s1"}  # differ in more than the seed


def test_group_table_means_over_seeds_with_seed_and_image_variation():
    from analysis.runs import group_table

    runs = [{"run": f"s/a.s{i}", "state": "FINISHED", "config": {"group": "a", "seed": i, "lr": 1e-3},
             "figures": _figures({"i2t_R@1": v, "modality_gap": 0.5}, v - 0.1, v + 0.1)}
            for i, v in enumerate([0.2, 0.3, 0.4])]
    runs += [{"run": "s/b", "state": "RUNNING", "config": {"seed": 0, "lr": 1e-2},
              "figures": _figures({"i2t_R@1": 0.6}, 0.5, 0.7)}]
    table = group_table(runs)
    assert list(table.index) == ["s/a", "s/b"] and list(table["seeds"]) == [3, 1]
    a, b = table.loc["s/a"], table.loc["s/b"]
    half = np.hypot(scipy.stats.t.ppf(0.975, 2) * 0.1 / np.sqrt(3), 0.1)  # seeds' spread, images' (+-0.1)
    assert a["i2t_R@1"] == pytest.approx(0.3)
    assert (a["i2t_R@1 low"], a["i2t_R@1 high"]) == pytest.approx((0.3 - half, 0.3 + half))
    assert (b["i2t_R@1 low"], b["i2t_R@1 high"]) == (0.5, 0.7)  # one seed: its stored interval
    assert a["seed"] == "[0, 1, 2]" and b["seed"] == "0" and b["state"] == "RUNNING"
    # Seeds that agree exactly still drew one set of images: the images' interval remains.
    assert (a["modality_gap low"], a["modality_gap high"]) == pytest.approx((0.4, 0.6))
    assert np.isnan(b["modality_gap"]) and np.isnan(b["t2i_R@1"])  # not measured stays NaN
    mixed = group_table(runs[:2] + [dict(runs[2], state="RUNNING")])
    assert mixed.loc["s/a", "state"] == "2 FINISHED, 1 RUNNING"
    per_run = group_table(runs, groups={r["run"]: r["run"] for r in runs})
    assert list(per_run.index) == ["s/a.s0", "s/a.s1", "s/a.s2", "s/b"]
    assert per_run.loc["s/a.s1", "i2t_R@1 low"] == pytest.approx(0.2)


def test_interval_cells_read_like_the_verdicts():
    from analysis.runs import group_table, interval_cells

    runs = [{"run": "s/a", "state": "FINISHED", "config": {},
             "figures": _figures({"i2t_R@1": 0.25, "i2t_mean_rank": 12.34, "modality_gap": 0.8}, 0.2, 0.3)}]
    cells = interval_cells(group_table(runs)).loc["s/a"]
    assert cells["i2t_R@1"] == "0.250 [0.200, 0.300]" and cells["i2t_mean_rank"] == "12.3 [0.2, 0.3]"
    assert cells["t2i_R@1"] == "NaN" and "i2t_R@1 low" not in cells.index


def test_style_best_highlights_only_the_cells_marked():
    table = pd.DataFrame({"lr": [1e-4, 1e-3], "i2t_R@1": [0.5, 0.1]}, index=["a", "b"])
    html = style_best(table, pd.DataFrame({"i2t_R@1": [False, True]}, index=["a", "b"])).to_html()
    assert html.count("background-color") == 1 and "row1_col1" in html.split("background-color")[0]
    assert "background-color" not in style_best(table).to_html()  # no intervals, no "best"


def test_seed_band_is_the_mean_and_the_range_of_the_seeds():
    from analysis.runs import seed_band

    frame = pd.DataFrame({"run": ["a.s0", "a.s1", "a.s0", "a.s1", "b"], "step": [1, 1, 2, 2, 1],
                          "epoch": 0.5, "wall_time": [1.0, 3.0, 2.0, 4.0, 1.0], "value": 0.0,
                          "smoothed": [1.0, 3.0, 2.0, np.nan, 5.0], "evaluated": False})
    band = seed_band(frame, {"a.s0": "a", "a.s1": "a", "b": "b"}).set_index(["group", "step"])
    assert band.loc[("a", 1), ["smoothed", "low", "high", "wall_time", "seeds"]].tolist() == [2.0, 1.0, 3.0, 2.0, 2]
    assert np.isnan(band.loc[("a", 2), "smoothed"])  # a seed's gap is the mean's gap
    assert band.loc[("b", 1), "seeds"] == 1


def test_seeds_that_start_from_their_own_seed_of_another_run_are_one_group():
    """stage2.s1 starts from stage1.s1 (init_from follows the seed): the replicates of stage2
    are one configuration; two runs from different sources are not."""
    from analysis.runs import group_names

    runs = [("s/stage2.s0", {"group": "stage2", "seed": 0, "init_from": "stage1.s0"}),
            ("s/stage2.s1", {"group": "stage2", "seed": 1, "init_from": "stage1.s1"})]
    assert set(group_names(runs).values()) == {"s/stage2"}
    mixed = [runs[0], ("s/stage2.s1", {"group": "stage2", "seed": 1, "init_from": "other.s1"})]
    assert set(group_names(mixed).values()) == {"s/stage2.s0", "s/stage2.s1"}

"""Two runs, or two configurations with several seeds, compared query by query: is a
difference an effect or noise? Pure functions of samples.parquet frames (run_store.read_samples),
for the dashboard's Runs and Compare views and the write-up alike; the statistics are
core/stats.py's.

    from analysis.compare import compare, compare_two, on_split
    table = compare_two(read_samples(run_a.path), read_samples(run_b.path))   # two runs, on val
    table.loc["i2t_R@1", "verdict"]   # "higher (better), +0.040 [0.020, 0.060]"
    table, interval = compare({"a.s0": test_a0, "a.s1": test_a1}, {"b.s0": test_b0, "b.s1": test_b1})

A query is an image (image→text: the rank of its first right caption) or a caption
(text→image: the rank of its image); both are resampled by image (core/stats.py). Runs
evaluated on different images or captions are refused (ValueError): a paired comparison of
different sets would mix the runs' difference with the sets'.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from core import stats
from core.names import COMPARED_METRICS, KS
from core.stats import N_RESAMPLES, _same_queries  # compare_runs' own check, run before any interval

OUTCOME_COLUMNS = ["metric", "sample_id", "image_id", "outcome"]
# The samples.parquet columns these functions read (run_store.read_samples(path, columns=...)).
SAMPLE_COLUMNS = ["modality", "split", "sample_id", "image_id", "caption", "label", "step", "rank", "tied",
                  "zero_shot_correct"]


# ---------------------------------------------------------------------------- outcomes


def on_split(samples: pd.DataFrame, split: str) -> pd.DataFrame:
    """A samples frame's rows of `split`, without the split column: what compare and
    query_outcomes read as one evaluation set."""
    return samples[samples["split"] == split].drop(columns="split")


def validation(samples: pd.DataFrame) -> pd.DataFrame:
    """The rows that comparisons use: the validation split (choices between runs look at val;
    the test split is for reported results) at the last evaluated step."""
    val = samples[samples["split"] == "val"] if "split" in samples.columns else samples
    return val[val["step"] == val["step"].max()]


def query_outcomes(samples: pd.DataFrame) -> pd.DataFrame:
    """One row per metric and validation query of a run's last evaluated step: metric
    (COMPARED_METRICS), sample_id, image_id and outcome (1.0/0.0 right at k, the rank itself
    for mean rank, zero-shot correctness of an image). Zero-shot rows only where the run has
    them (a file without the column, or a dataset without labels, has none)."""
    last = validation(samples)
    if last.empty:
        return pd.DataFrame(columns=OUTCOME_COLUMNS)
    parts = []
    for modality, prefix in (("image", "i2t"), ("text", "t2i")):
        queries = last[last["modality"] == modality]
        rank = queries["rank"].astype(float)
        parts += [_outcomes(f"{prefix}_R@{k}", queries, (rank <= k).astype(float)) for k in KS]
        parts.append(_outcomes(f"{prefix}_mean_rank", queries, rank))
    images = last[last["modality"] == "image"]
    zero_shot = images.get("zero_shot_correct", pd.Series(np.nan, index=images.index)).astype(float)
    parts.append(_outcomes("zero_shot_accuracy", images[zero_shot.notna()], zero_shot.dropna()))
    return pd.concat(parts, ignore_index=True)


def _outcomes(metric: str, queries: pd.DataFrame, outcome: pd.Series) -> pd.DataFrame:
    return pd.DataFrame({"metric": metric, "sample_id": queries["sample_id"].to_numpy(),
                         "image_id": queries["image_id"].to_numpy(), "outcome": outcome.to_numpy(dtype=float)},
                        columns=OUTCOME_COLUMNS)


def of_metric(outcomes: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The rows of one metric (sample_id, image_id, outcome), in the run's query order."""
    return outcomes.loc[outcomes["metric"] == metric, OUTCOME_COLUMNS[1:]].reset_index(drop=True)


def _by_metric(outcomes: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """of_metric of every metric a run has, from one pass over its outcomes."""
    return {m: rows[OUTCOME_COLUMNS[1:]].reset_index(drop=True) for m, rows in outcomes.groupby("metric", sort=False)
            if len(rows)}


def check_same_queries(a: pd.DataFrame, b: pd.DataFrame) -> None:
    """Raises compare_runs' ValueError where two runs' query_outcomes cover other images or
    captions; before any interval is computed, so a refusal costs nothing."""
    for metric in ("i2t_R@1", "t2i_R@1"):
        query_a, query_b = of_metric(a, metric), of_metric(b, metric)
        if not (_same_order(query_a, query_b) and query_a["sample_id"].is_unique):
            _same_queries(query_a, query_b, "sample_id", "image_id")  # other order, or other queries: which


def _same_order(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    """Whether two runs list the same queries in the same order (runs of one dataset do)."""
    return all(np.array_equal(a[c].to_numpy(), b[c].to_numpy()) for c in ("sample_id", "image_id"))


def _aligned(frame: pd.DataFrame, order: pd.DataFrame) -> np.ndarray:
    """`frame`'s outcomes in the query order of `order` (the same queries, checked before)."""
    if _same_order(frame, order):
        return frame["outcome"].to_numpy()
    return frame.set_index("sample_id").loc[order["sample_id"], "outcome"].to_numpy()


# ---------------------------------------------------------------------------- two runs


# How a comparison's interval was made (the `interval` of compare's table): the one rule is compare's.
SEEDS_AND_IMAGES = "seeds by Welch's t, images by a paired bootstrap"
SINGLE_RUNS = "single runs, images resampled"
UNPAIRED = "unpaired: images resampled, seeds averaged"


def compare_two(samples_a: pd.DataFrame, samples_b: pd.DataFrame, n_resamples: int = N_RESAMPLES) -> pd.DataFrame:
    """One row per metric (COMPARED_METRICS) of run B against run A, on the same queries:
    a and b (each run's figure), difference (b - a), low and high (the paired 95% interval),
    p_value (sign-flip permutation test, queries resampled by image), mde (the smallest
    difference this comparison detects at 80% power, core.stats.minimum_detectable_effect),
    mcnemar_p (McNemar's exact test, R@1 rows only; NaN elsewhere) and verdict
    (core.stats.verdict: a direction only where the interval excludes 0). A metric that one run
    lacks (zero-shot accuracy without labels) is NaN with the verdict "not measured"."""
    return _paired_rows(query_outcomes(samples_a), query_outcomes(samples_b), n_resamples)


def _paired_rows(a: pd.DataFrame, b: pd.DataFrame, n_resamples: int) -> pd.DataFrame:
    check_same_queries(a, b)
    return pd.DataFrame([_paired_row(m, of_metric(a, m), of_metric(b, m), n_resamples) for m in COMPARED_METRICS]
                        ).set_index("metric")


def _paired_row(metric: str, a: pd.DataFrame, b: pd.DataFrame, n_resamples: int) -> dict:
    if a.empty or b.empty:
        return {"metric": metric, "a": np.nan, "b": np.nan, "difference": np.nan, "low": np.nan, "high": np.nan,
                "p_value": np.nan, "mde": np.nan, "mcnemar_p": np.nan, "verdict": "not measured in both runs"}
    paired = stats.compare_runs(a, b, "outcome", n_resamples=n_resamples)
    mcnemar = stats.mcnemar_exact(a["outcome"], _aligned(b, a)).p_value if metric.endswith("_R@1") else np.nan
    mde = stats.minimum_detectable_effect(0.0, math.inf, (paired.high - paired.low) / 2)
    return {"metric": metric, "a": a["outcome"].mean(), "b": b["outcome"].mean(), "difference": paired.diff,
            "low": paired.low, "high": paired.high, "p_value": paired.p_value, "mde": mde, "mcnemar_p": mcnemar,
            "verdict": stats.verdict(paired.diff, paired.low, paired.high, metric, mde)}


def changed_outcomes(samples_a: pd.DataFrame, samples_b: pd.DataFrame) -> pd.DataFrame:
    """The images whose R@1 outcome differs between runs A and B: image_id, caption, label,
    rank_a, rank_b, tied_a, tied_b (the true caption tied with a wrong one, which counts
    against it) and change ("fixed by B": wrong under A, right under B; "broken by B"), the
    fixed ones first, each kind by how far the other run ranked it."""
    images = [_images(s) for s in (samples_a, samples_b)]
    both = images[0].merge(images[1].drop(columns=["caption", "label"]), on="image_id", suffixes=("_a", "_b"))
    right_a, right_b = both["rank_a"] == 1, both["rank_b"] == 1
    changed = both[right_a != right_b].copy()
    changed["change"] = np.where(changed["rank_b"] == 1, "fixed by B", "broken by B")
    changed["distance"] = changed[["rank_a", "rank_b"]].max(axis=1)
    changed = changed.sort_values(["change", "distance", "image_id"], ascending=[False, False, True])
    return changed.drop(columns="distance").reset_index(drop=True)[
        ["image_id", "caption", "label", "rank_a", "rank_b", "tied_a", "tied_b", "change"]]


def _images(samples: pd.DataFrame) -> pd.DataFrame:
    last = validation(samples)
    images = last[last["modality"] == "image"]
    tied = images.get("tied", pd.Series(False, index=images.index)).fillna(False).astype(bool)
    return images[["image_id", "caption", "label", "rank"]].assign(tied=tied)


# ---------------------------------------------------------------------------- two configurations


def compare(side_a: Mapping[str, pd.DataFrame], side_b: Mapping[str, pd.DataFrame], fixed_a: bool = False,
            fixed_b: bool = False, n_resamples: int = N_RESAMPLES) -> tuple[pd.DataFrame, str]:
    """Configuration B against configuration A, each given as run name -> the samples frame of
    one seed on one split (on_split); returns (table, interval): how any two configurations
    are compared, by the results step and by the dashboard's live comparisons alike.

    One row per metric (COMPARED_METRICS): a and b (the mean over seeds), difference, low and
    high (95%), p_value (the test that inverts that interval, or the sign-flip test for single
    runs), mde (the smallest difference it detects at 80% power) and verdict; and, where they
    apply, image_low and image_high (seeds held fixed), seed_sd (how far one run's figure moves
    from seed to seed) beside image_se (its image-bootstrap standard error), mcnemar_p.

    `interval` says which rule made the interval:
    - SEEDS_AND_IMAGES: both sides have two or more runs on the same queries. Welch's t over
      the seeds' figures and the paired bootstrap over images, in quadrature
      (core.stats.group_difference). A `fixed` side (a deterministic fit: a closed form, whose
      seeds would all give the same run) of one run is its own replicate: its seed variance is 0.
    - SINGLE_RUNS: a side that varies with the seed has one run, so there is no seed variation
      to measure: the paired comparison of the first run of each (compare_two), images only.
    - UNPAIRED: the sides were evaluated on different images (another split of the data): the
      per-image outcomes averaged over each side's seeds, each set resampled on its own
      (core.stats.unpaired_difference), so only images vary."""
    return compare_outcomes({n: query_outcomes(s) for n, s in side_a.items()},
                            {n: query_outcomes(s) for n, s in side_b.items()}, fixed_a, fixed_b, n_resamples)


def compare_outcomes(side_a: Mapping[str, pd.DataFrame], side_b: Mapping[str, pd.DataFrame], fixed_a: bool = False,
                     fixed_b: bool = False, n_resamples: int = N_RESAMPLES) -> tuple[pd.DataFrame, str]:
    """compare, of the sides' query_outcomes (run name -> query_outcomes of its samples), for a
    caller that compares one run with several others and computes its outcomes once."""
    side_a, side_b = _replicated(side_a, fixed_a), _replicated(side_b, fixed_b)
    a, b = list(side_a.values()), list(side_b.values())
    try:
        for other in a[1:] + b:
            check_same_queries(a[0], other)
    except ValueError:
        return pd.DataFrame([_unpaired_row(m, a, b, n_resamples) for m in COMPARED_METRICS]).set_index("metric"), \
            UNPAIRED
    if len(a) < 2 or len(b) < 2:
        return _paired_rows(a[0], b[0], n_resamples), SINGLE_RUNS
    return _group_rows(a, b, n_resamples).set_index("metric"), SEEDS_AND_IMAGES


def _replicated(side: Mapping[str, pd.DataFrame], fixed: bool) -> dict[str, pd.DataFrame]:
    side = dict(side)
    if fixed and len(side) == 1:
        (name, frame), = side.items()
        side[f"{name} (again)"] = frame
    return side


def _group_rows(a: list[pd.DataFrame], b: list[pd.DataFrame], n_resamples: int) -> pd.DataFrame:
    """compare's rows of two configurations of several runs each (query_outcomes per run), every
    metric from one set of image resamples (core.stats.group_differences)."""
    a, b = [_by_metric(o) for o in a], [_by_metric(o) for o in b]
    measured = [m for m in COMPARED_METRICS if all(m in o for o in a + b)]
    orders = {m: a[0][m] for m in measured}
    a_runs = [np.stack([_aligned(o[m], orders[m]) for o in a]) for m in measured]
    b_runs = [np.stack([_aligned(o[m], orders[m]) for o in b]) for m in measured]
    found = stats.group_differences(a_runs, b_runs, [orders[m]["image_id"].to_numpy() for m in measured],
                                    n_resamples=n_resamples)
    rows = {m: {"metric": m, "verdict": "not measured in every run"} for m in COMPARED_METRICS}
    for m, g, a_m, b_m in zip(measured, found, a_runs, b_runs):
        image_half = (g.image_high - g.image_low) / 2
        mde = stats.minimum_detectable_effect(g.seed_se, g.seed_df, image_half)
        rows[m] = {"metric": m, "a": a_m.mean(), "b": b_m.mean(), "difference": g.diff, "low": g.low,
                   "high": g.high, "p_value": stats.interval_p_value(g.diff, g.seed_se, g.seed_df, image_half),
                   "mde": mde, "image_low": g.image_low, "image_high": g.image_high, "seed_sd": g.seed_sd,
                   "image_se": g.image_se, "verdict": stats.verdict(g.diff, g.low, g.high, m, mde)}
    return pd.DataFrame(list(rows.values()))


def _unpaired_row(metric: str, a: list[pd.DataFrame], b: list[pd.DataFrame], n_resamples: int) -> dict:
    a, b = (_mean_outcome([of_metric(o, metric) for o in side]) for side in (a, b))
    if a is None or b is None or a.empty or b.empty:
        return {"metric": metric, "verdict": "not measured in every run"}
    d = stats.unpaired_difference(a["outcome"], b["outcome"], a["image_id"], b["image_id"], n_resamples=n_resamples)
    half = (d.high - d.low) / 2
    mde = stats.minimum_detectable_effect(0.0, math.inf, half)
    return {"metric": metric, "a": a["outcome"].mean(), "b": b["outcome"].mean(), "difference": d.diff,
            "low": d.low, "high": d.high, "p_value": stats.interval_p_value(d.diff, 0.0, math.inf, half), "mde": mde,
            "verdict": stats.verdict(d.diff, d.low, d.high, metric, mde)}


# ---------------------------------------------------------------------------- the best of a column


def best_of(outcomes: Mapping[str, list[pd.DataFrame]], metric: str,
            n_resamples: int = N_RESAMPLES) -> tuple[dict[str, bool], list[str]]:
    """The "best per column" rule for one metric, as (marks, left_out).

    `outcomes`: row name (a run, or a group) -> query_outcomes of each of its runs (a group's
    per-query outcome is the mean over its seeds, so seeds are held fixed). marks: name ->
    whether it is the best or indistinguishable from it (core.stats.indistinguishable_from_best:
    its paired 95% interval against the best includes 0). Only rows on one query set can be
    paired: those on the set most rows share; the others (label subsets, runs without
    per-sample results, a group whose seeds disagree on the set) are left_out and unmarked."""
    per_row = {name: _mean_outcome([of_metric(o, metric) for o in runs]) for name, runs in outcomes.items()}
    sets: dict[tuple, list[str]] = {}
    for name, frame in per_row.items():
        if frame is not None:
            sets.setdefault(_query_set(frame), []).append(name)
    paired = max(sets.values(), key=len, default=[])
    if not paired:  # no row has this metric per query (zero-shot accuracy without labels)
        return dict.fromkeys(outcomes, False), []
    left_out = [name for name in outcomes if name not in paired]
    order = per_row[paired[0]]
    marks = stats.indistinguishable_from_best({n: _aligned(per_row[n], order) for n in paired}, metric,
                                              order["image_id"].to_numpy(), n_resamples=n_resamples)
    return {name: marks.get(name, False) for name in outcomes}, left_out


def _mean_outcome(runs: list[pd.DataFrame]) -> pd.DataFrame | None:
    """The per-query mean over a group's runs; None without outcomes, or where its runs cover
    different queries."""
    if not runs or any(r.empty for r in runs) or len({_query_set(r) for r in runs}) > 1:
        return None
    first = runs[0]
    return first.assign(outcome=np.mean([_aligned(r, first) for r in runs], axis=0))


def _query_set(frame: pd.DataFrame) -> str:
    """A digest of the (query, image) pairs: equal for runs on the same queries in any order."""
    pairs = np.sort(pd.util.hash_pandas_object(frame[["sample_id", "image_id"]].astype(str), index=False).to_numpy())
    return hashlib.sha1(pairs.tobytes()).hexdigest()

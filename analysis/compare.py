"""Two runs, or two configurations with several seeds, compared query by query: is a
difference an effect or noise? Pure functions of samples.parquet frames (run_store.read_samples),
for the dashboard's Runs and Compare views and the write-up alike; the statistics are
core/stats.py's.

    from analysis.compare import compare_two
    table = compare_two(read_samples(run_a.path), read_samples(run_b.path))
    table.loc["i2t_R@1", "verdict"]   # "higher (better), +0.040 [0.020, 0.060]"

A query is an image (image→text: the rank of its first right caption) or a caption
(text→image: the rank of its image); both are resampled by image (core/stats.py). Runs
evaluated on different images or captions are refused (ValueError): a paired comparison of
different sets would mix the runs' difference with the sets'.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import numpy as np
import pandas as pd

from core import stats
from core.names import COMPARED_METRICS, better
from core.stats import _same_queries  # compare_runs' own check, run before any interval

KS = (1, 5, 10)  # the CLIP paper's R@k
# Resamples per interval: as many as training/evaluate.py gives the intervals it stores, so that
# the dashboard's figures and a run's own agree in their Monte Carlo error (about 0.003 of a rate
# on a 2.5% quantile), at a fifth of scipy's default's time: 9,999 made one comparison of two
# runs of 4,000 images take a minute.
RESAMPLES = 1999
OUTCOME_COLUMNS = ["metric", "sample_id", "image_id", "outcome"]
# The samples.parquet columns these functions read (run_store.read_samples(path, columns=...)).
SAMPLE_COLUMNS = ["modality", "split", "sample_id", "image_id", "caption", "label", "step", "rank", "tied",
                  "zero_shot_correct"]


# ---------------------------------------------------------------------------- outcomes


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


def check_same_queries(a: pd.DataFrame, b: pd.DataFrame) -> None:
    """Raises compare_runs' ValueError where two runs' query_outcomes cover other images or
    captions; before any interval is computed, so a refusal costs nothing."""
    for metric in ("i2t_R@1", "t2i_R@1"):
        _same_queries(of_metric(a, metric), of_metric(b, metric), "sample_id", "image_id")


def _aligned(frame: pd.DataFrame, order: pd.DataFrame) -> np.ndarray:
    """`frame`'s outcomes in the query order of `order` (the same queries, checked before)."""
    return frame.set_index("sample_id").loc[order["sample_id"], "outcome"].to_numpy()


def _higher_is_better(metric: str) -> bool:
    return better(metric) == "max"


# ---------------------------------------------------------------------------- two runs


def compare_two(samples_a: pd.DataFrame, samples_b: pd.DataFrame, n_resamples: int = RESAMPLES) -> pd.DataFrame:
    """One row per metric (COMPARED_METRICS) of run B against run A, on the same queries:
    a and b (each run's figure), difference (b - a), low and high (the paired 95% interval),
    p_value (sign-flip permutation test, queries resampled by image), mcnemar_p (McNemar's
    exact test, R@1 rows only; NaN elsewhere) and verdict (core.stats.verdict: a direction
    only where the interval excludes 0). A metric that one run lacks (zero-shot accuracy
    without labels) is NaN with the verdict "not measured"."""
    a, b = query_outcomes(samples_a), query_outcomes(samples_b)
    check_same_queries(a, b)
    return pd.DataFrame([_paired_row(m, of_metric(a, m), of_metric(b, m), n_resamples) for m in COMPARED_METRICS]
                        ).set_index("metric")


def _paired_row(metric: str, a: pd.DataFrame, b: pd.DataFrame, n_resamples: int) -> dict:
    if a.empty or b.empty:
        return {"metric": metric, "a": np.nan, "b": np.nan, "difference": np.nan, "low": np.nan, "high": np.nan,
                "p_value": np.nan, "mcnemar_p": np.nan, "verdict": "not measured in both runs"}
    paired = stats.compare_runs(a, b, "outcome", n_resamples=n_resamples)
    mcnemar = stats.mcnemar_exact(a["outcome"], _aligned(b, a)).p_value if metric.endswith("_R@1") else np.nan
    return {"metric": metric, "a": a["outcome"].mean(), "b": b["outcome"].mean(), "difference": paired.diff,
            "low": paired.low, "high": paired.high, "p_value": paired.p_value, "mcnemar_p": mcnemar,
            "verdict": stats.verdict(paired.diff, paired.low, paired.high, metric, _higher_is_better(metric))}


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


def compare_groups(samples_a: Mapping[str, pd.DataFrame], samples_b: Mapping[str, pd.DataFrame],
                   n_resamples: int = RESAMPLES) -> tuple[pd.DataFrame, str | None]:
    """Configuration B against configuration A, each given as run name -> samples frame of one
    seed, all on the same queries; returns (table, note).

    One row per metric: a and b (the mean over seeds), difference, low and high (the interval
    over seeds and images: Welch's t over seeds and the paired bootstrap over images in
    quadrature, core.stats.group_difference), image_low and
    image_high (seeds held fixed), seed_sd (how far one run's figure moves from seed to seed)
    beside image_se (the image-bootstrap standard error of one run's figure): whichever is
    larger dominates the uncertainty. verdict follows that interval.

    With fewer than two seeds on a side there is no seed variation to measure: the table is
    then compare_two of the first run of each, and `note` says so (None otherwise)."""
    if len(samples_a) < 2 or len(samples_b) < 2:
        (name_a, a), (name_b, b) = next(iter(samples_a.items())), next(iter(samples_b.items()))
        short = " and ".join(side for side, runs in (("A", samples_a), ("B", samples_b)) if len(runs) < 2)
        note = (f"{short} {'has' if len(short) == 1 else 'have'} a single seed: seed-to-seed variation needs two or "
                f"more on each side. Shown instead: the paired comparison of the single runs {name_a} and {name_b}, "
                f"which counts image-to-image variation only.")
        return compare_two(a, b, n_resamples), note
    a = [query_outcomes(s) for s in samples_a.values()]
    b = [query_outcomes(s) for s in samples_b.values()]
    for other in a[1:] + b:
        check_same_queries(a[0], other)
    rows = [_group_row(m, [of_metric(o, m) for o in a], [of_metric(o, m) for o in b], n_resamples)
            for m in COMPARED_METRICS]
    return pd.DataFrame(rows).set_index("metric"), None


def _group_row(metric: str, a: list[pd.DataFrame], b: list[pd.DataFrame], n_resamples: int) -> dict:
    if any(o.empty for o in a + b):
        return {"metric": metric, "verdict": "not measured in every run"}
    order = a[0]
    a_runs = np.stack([_aligned(o, order) for o in a])
    b_runs = np.stack([_aligned(o, order) for o in b])
    g = stats.group_difference(a_runs, b_runs, order["image_id"].to_numpy(), n_resamples=n_resamples)
    return {"metric": metric, "a": a_runs.mean(), "b": b_runs.mean(), "difference": g.diff, "low": g.low,
            "high": g.high, "image_low": g.image_low, "image_high": g.image_high, "seed_sd": g.seed_sd,
            "image_se": g.image_se, "verdict": stats.verdict(g.diff, g.low, g.high, metric, _higher_is_better(metric))}


# ---------------------------------------------------------------------------- the best of a column


def best_of(outcomes: Mapping[str, list[pd.DataFrame]], metric: str,
            n_resamples: int = RESAMPLES) -> tuple[dict[str, bool], list[str]]:
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
    marks = stats.indistinguishable_from_best({n: _aligned(per_row[n], order) for n in paired},
                                              order["image_id"].to_numpy(), _higher_is_better(metric),
                                              n_resamples=n_resamples)
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
    pairs = np.sort((frame["sample_id"].astype(str) + "\t" + frame["image_id"].astype(str)).to_numpy(dtype=str))
    return hashlib.sha1("\n".join(pairs).encode()).hexdigest()

"""Uncertainty of retrieval figures and of comparisons between runs, from per-query outcomes.

Pure functions of arrays: one value per query (an image's rank of its first right caption,
a caption's rank of its image, or 0/1 "right at k"), aligned by query between runs. The
unit of resampling is the validation IMAGE: a caption-level outcome comes with `groups`,
the image id of each caption, and a resample draws images, each with all of its captions
(the cluster bootstrap, Davison & Hinkley 1997, sec. 3.8), because captions of one image
succeed or fail together. The gallery is held fixed: a resample reuses each query's rank,
so the intervals are over which queries were drawn, not over the items ranked against them.

Intervals are scipy.stats.bootstrap's BCa (Efron 1987; Efron & Tibshirani 1993, ch. 14):
retrieval rates sit near 0 or 1, where the bootstrap distribution is skewed and the
percentile interval's coverage drops; BCa corrects bias and skewness (second-order
accurate) at the price of a jackknife. Two runs are compared paired, per query, with a
sign-flip permutation test (scipy.stats.permutation_test) and McNemar's exact test
(scipy.stats.binomtest); configurations with several seeds by the rule of a configuration's
own interval (analysis.runs.group_table): a Welch t-interval over the seeds' figures and the
paired bootstrap over images, combined in quadrature; runs evaluated on different query sets (a leaky split's validation
images against an honest split's) unpaired, with each set's images resampled on their own.
Seeds are fixed, so every figure is reproducible.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import optimize, special, stats

from core.names import better

CONFIDENCE = 0.95  # the design's "95% interval"
POWER = 0.80  # a comparison's minimum detectable effect is the difference it would find 80% of the time
# Resamples per interval, for every figure and comparison (evaluation's, the results step's, the
# dashboard's live ones): a 2.5% quantile within about 0.003 of a rate, at a fifth of scipy's
# default's time (9,999 made one comparison of two runs of 4,000 images take a minute).
N_RESAMPLES = 1999
SEED = 0  # fixed: the same data gives the same interval in the dashboard, the notebook and the summary
BATCH_ELEMENTS = 2**22  # ints per resample batch: ~32 MiB whatever the number of images


@dataclass(frozen=True)
class PairedDifference:
    diff: float  # mean of b - a over queries
    low: float
    high: float
    p_value: float  # sign-flip permutation test, two-sided


@dataclass(frozen=True)
class UnpairedDifference:
    diff: float  # mean of b over b's queries minus mean of a over a's
    low: float  # each set's images resampled independently
    high: float


@dataclass(frozen=True)
class McNemar:
    a_only: int  # queries a gets right and b wrong
    b_only: int
    p_value: float


@dataclass(frozen=True)
class GroupDifference:
    diff: float  # mean over b's runs minus mean over a's runs
    low: float  # seeds (Welch t) and images (paired bootstrap), in quadrature
    high: float
    image_low: float  # images resampled, seeds held fixed
    image_high: float
    seed_sd: float  # sd of one run's figure across seeds, pooled over both configurations
    image_se: float  # image-bootstrap standard error of one run's figure (root mean square over runs)
    seed_se: float  # Welch's standard error of the difference of the seed means
    seed_df: float  # its Welch-Satterthwaite degrees of freedom


# ---------------------------------------------------------------------------- one figure


def _units(values: np.ndarray, groups) -> tuple[np.ndarray, int]:
    """The resampling unit (image) of each value, as 0..n_units-1; each value its own unit without groups."""
    if groups is None:
        return np.arange(len(values)), len(values)
    groups = np.asarray(groups)
    if groups.shape != values.shape:
        raise ValueError(f"groups has shape {groups.shape}, the values {values.shape}: one image id per value")
    labels, inverse = np.unique(groups, return_inverse=True)
    return inverse, len(labels)


def _of_units(values: np.ndarray, unit: np.ndarray, n_units: int, statistic: Callable) -> Callable:
    """statistic(unit indices, axis=-1): the statistic of the values of the drawn units, each
    with all of its members, for every row of a batch of draws."""
    if statistic is np.mean:
        # The mean of the concatenated members is a ratio of sums: vectorised over the batch.
        sums = np.bincount(unit, weights=values, minlength=n_units)
        counts = np.bincount(unit, minlength=n_units)
        return lambda idx, axis=-1: sums[idx].sum(axis) / counts[idx].sum(axis)

    def of_rows(idx, axis=-1):
        rows = idx.reshape(-1, idx.shape[-1])
        drawn = (np.bincount(row, minlength=n_units)[unit] for row in rows)
        return np.reshape([statistic(np.repeat(values, times), axis=-1) for times in drawn], idx.shape[:-1])
    return of_rows


def _bootstrap(data: tuple, statistic: Callable, per_draw: int, confidence: float, n_resamples: int,
               seed: int, method: str, previous=None, per_resample: int | None = None):
    """scipy.stats.bootstrap in batches of about BATCH_ELEMENTS; `previous` reuses its
    resamples. `per_resample` (default per_draw): the indices one resample draws, which fixes
    the batch and so the draws: callers that compute several figures at once pass the one
    figure's count, so that they draw what bootstrap_interval would for each."""
    with warnings.catch_warnings():
        # Degenerate data (every resample equal) is detected from the result and handled by the caller.
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        return stats.bootstrap(data, statistic, n_resamples=0 if previous else n_resamples,
                               confidence_level=confidence, method=method, bootstrap_result=previous,
                               batch=max(1, BATCH_ELEMENTS // (per_resample or per_draw)),
                               rng=np.random.default_rng(seed), vectorized=True)


def _is_binary(values: np.ndarray) -> bool:
    return bool(np.isin(values, (0, 1)).all())


def bootstrap_interval(values, groups=None, statistic: Callable = np.mean, confidence: float = CONFIDENCE,
                       n_resamples: int = N_RESAMPLES, seed: int = SEED,
                       proportion: bool = False) -> tuple[float, float, float]:  # ranks and differences are not rates
    """(estimate, low, high): the BCa bootstrap interval of `statistic` over images.

    `statistic(x, axis)` reduces like np.mean (which takes a vectorised path; any other is
    applied to each resample's values one resample at a time). With `groups` (the image id
    of each value) images are resampled with all their values: the cluster bootstrap.
    `proportion`: the values are 0/1 outcomes and the statistic is their rate (R@k).

    Where BCa cannot be computed (its jackknife or bootstrap distribution has no spread, as
    with all-0 or all-1 outcomes): a proportion that is all 0 or all 1 gets the exact
    Clopper-Pearson interval (scipy.stats.binomtest), counting one trial per image, which is
    conservative for captions; anything else gets the percentile interval of the same
    resamples, [p, p] when every resample gives p."""
    values = np.asarray(values, dtype=float)
    if proportion and not (statistic is np.mean and _is_binary(values)):
        raise ValueError("a proportion is the mean of 0/1 outcomes")
    unit, n_units = _units(values, groups)
    if n_units < 2:
        raise ValueError(f"a bootstrap over images needs at least two images, got {n_units}")
    of_units = _of_units(values, unit, n_units, statistic)
    estimate = float(of_units(np.arange(n_units)))
    result = _bootstrap((np.arange(n_units),), of_units, n_units, confidence, n_resamples, seed, "BCa")
    low, high = result.confidence_interval
    if np.isfinite(low) and np.isfinite(high):
        return estimate, float(low), float(high)
    if proportion and estimate in (0.0, 1.0):
        ci = stats.binomtest(int(estimate * n_units), n_units).proportion_ci(confidence, method="exact")
        return estimate, float(ci.low), float(ci.high)
    low, high = _bootstrap((np.arange(n_units),), of_units, n_units, confidence, n_resamples, seed, "percentile",
                           previous=result).confidence_interval
    return estimate, float(low), float(high)


def rate_intervals(per_image: Mapping[str, tuple[np.ndarray, np.ndarray]], proportions=(),
                   confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
                   seed: int = SEED) -> dict[str, tuple[float, float, float]]:
    """name -> (value, low, high) for figures that are ratios of per-image sums, all from ONE
    set of image resamples: `per_image[name]` is (sum of the outcomes of the image's queries,
    number of its queries) for every image, in one order (an image-to-text rate: the image's
    0/1 and 1; a caption-level rate: the sum over its captions and their count).

    The same BCa bootstrap as bootstrap_interval's, with the same draws (same seed, same
    images), so each figure's interval is the one bootstrap_interval gives it alone, at a
    fraction of the cost: the resampling and the jackknife are done once, not once per
    figure. `proportions`: names whose outcomes are 0/1, which get bootstrap_interval's
    exact fallback where BCa is undefined (every image right, or none)."""
    names = list(per_image)
    sums = np.stack([np.asarray(per_image[k][0], dtype=float) for k in names])
    counts = np.stack([np.asarray(per_image[k][1], dtype=float) for k in names])
    n_units = sums.shape[1]
    if n_units < 2:
        raise ValueError(f"a bootstrap over images needs at least two images, got {n_units}")

    def of_units(idx, axis=-1):
        # Each resample as how many times it drew each image: two matrix products for all figures.
        rows = idx.reshape(-1, idx.shape[-1])
        flat = (rows + n_units * np.arange(len(rows))[:, None]).ravel()
        times = np.bincount(flat, minlength=len(rows) * n_units).reshape(len(rows), n_units).astype(float)
        return ((times @ sums.T) / (times @ counts.T)).T.reshape(len(names), *idx.shape[:-1])

    estimates = sums.sum(1) / counts.sum(1)
    result = _bootstrap((np.arange(n_units),), of_units, n_units * len(names), confidence, n_resamples, seed, "BCa",
                        per_resample=n_units)
    low, high = (np.atleast_1d(b) for b in result.confidence_interval)
    out = {}
    percentile = None
    for i, name in enumerate(names):
        estimate = float(estimates[i])
        if np.isfinite(low[i]) and np.isfinite(high[i]):
            out[name] = (estimate, float(low[i]), float(high[i]))
        elif name in proportions and estimate in (0.0, 1.0):
            ci = stats.binomtest(int(estimate * n_units), n_units).proportion_ci(confidence, method="exact")
            out[name] = (estimate, float(ci.low), float(ci.high))
        else:
            if percentile is None:
                percentile = _bootstrap((np.arange(n_units),), of_units, n_units * len(names), confidence,
                                        n_resamples, seed, "percentile", previous=result,
                                        per_resample=n_units).confidence_interval
            out[name] = (estimate, float(np.atleast_1d(percentile[0])[i]), float(np.atleast_1d(percentile[1])[i]))
    return out


def recall_at_k_intervals(image_ranks, text_ranks, text_to_image, ks=(1, 5, 10), confidence: float = CONFIDENCE,
                          n_resamples: int = N_RESAMPLES, seed: int = SEED,
                          image_outcomes: Mapping[str, np.ndarray] | None = None
                          ) -> dict[str, tuple[float, float, float]]:
    """metric -> (value, low, high) for i2t/t2i R@k and mean rank, captions resampled with
    their images (text_to_image: each caption's image index, 0..n-1, every image with a
    caption); `image_outcomes` adds other per-image figures (zero-shot accuracy) to the same
    resamples (rate_intervals)."""
    image_ranks, text_ranks = np.asarray(image_ranks, dtype=float), np.asarray(text_ranks, dtype=float)
    owner = np.asarray(text_to_image)
    n = len(image_ranks)
    if len(owner) != len(text_ranks):
        raise ValueError(f"text_to_image has {len(owner)} entries for {len(text_ranks)} captions")
    captions = np.bincount(owner, minlength=n).astype(float)
    if len(captions) != n or not (captions > 0).all():
        raise ValueError("text_to_image must give every image at least one caption, by index 0..n-1")
    ones = np.ones(n)
    per_image, proportions = {}, set()
    for k in ks:
        per_image[f"i2t_R@{k}"] = ((image_ranks <= k).astype(float), ones)
        per_image[f"t2i_R@{k}"] = (np.bincount(owner, weights=(text_ranks <= k).astype(float), minlength=n), captions)
        proportions |= {f"i2t_R@{k}", f"t2i_R@{k}"}
    per_image["i2t_mean_rank"] = (image_ranks, ones)
    per_image["t2i_mean_rank"] = (np.bincount(owner, weights=text_ranks, minlength=n), captions)
    for name, outcome in (image_outcomes or {}).items():
        per_image[name] = (np.asarray(outcome, dtype=float), ones)
        proportions.add(name)
    return rate_intervals(per_image, proportions, confidence, n_resamples, seed)


# ---------------------------------------------------------------------------- two runs, same queries


def _aligned(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired outcomes need one value per query in both runs, got shapes {a.shape} and {b.shape}")
    return a, b


def _sign_flip_p_value(a: np.ndarray, b: np.ndarray, groups, n_resamples: int, seed: int) -> float:
    """Two-sided p-value of "a and b are exchangeable within each image".

    scipy.stats.permutation_test with permutation_type="samples" swaps a and b within a pair,
    i.e. flips the sign of its difference (exact when 2**pairs <= n_resamples). Pairs are
    images: a caption-level outcome is summed per image first, so all captions of an image
    flip together; the mean over captions is then a fixed multiple of the mean of those sums."""
    unit, n_units = _units(a, groups)
    a_units = np.bincount(unit, weights=a, minlength=n_units)
    b_units = np.bincount(unit, weights=b, minlength=n_units)
    result = stats.permutation_test((a_units, b_units), lambda x, y, axis: np.mean(y - x, axis=axis),
                                    permutation_type="samples", n_resamples=n_resamples, vectorized=True,
                                    rng=np.random.default_rng(seed))
    return float(result.pvalue)


def paired_difference(a, b, groups=None, confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
                      seed: int = SEED) -> PairedDifference:
    """b - a for two runs evaluated on the same queries (aligned by query).

    The interval is the BCa bootstrap of the per-query difference (bootstrap_interval), so
    each resample draws the same images for both runs: the pairing removes the variation the
    runs share (which images are hard). The p-value is the sign-flip permutation test. With
    only a handful of queries where the runs differ, the resamples take few distinct values
    and the interval is too narrow; the p-value (or mcnemar_exact for 0/1 outcomes) is then
    the safer guide."""
    a, b = _aligned(a, b)
    diff, low, high = bootstrap_interval(b - a, groups, confidence=confidence, n_resamples=n_resamples, seed=seed)
    return PairedDifference(diff, low, high, _sign_flip_p_value(a, b, groups, n_resamples, seed))


def mcnemar_exact(a_correct, b_correct) -> McNemar:
    """McNemar's exact test of equal R@1 (McNemar 1947): under the null, each query that one
    run gets right and the other wrong is equally likely either way, so b_only ~ Binomial(a_only
    + b_only, 1/2) (scipy.stats.binomtest). Queries are taken as independent: use it on image
    outcomes (i2t), or expect it to overstate the evidence from several captions per image."""
    a, b = _aligned(a_correct, b_correct)
    if not (_is_binary(a) and _is_binary(b)):
        raise ValueError("McNemar's test needs 0/1 (right/wrong) outcomes")
    a_only, b_only = int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum())
    discordant = a_only + b_only
    p_value = stats.binomtest(b_only, discordant).pvalue if discordant else 1.0  # nothing tells them apart
    return McNemar(a_only, b_only, float(p_value))


def _examples(ids, most: int = 3) -> str:
    ids = sorted(map(str, ids))
    return ", ".join(ids[:most]) + (f" and {len(ids) - most} more" if len(ids) > most else "")


def _same_queries(a: pd.DataFrame, b: pd.DataFrame, query: str, group: str | None) -> None:
    """Raises ValueError naming how the two runs' query sets differ."""
    for name, frame in (("a", a), ("b", b)):
        repeated = frame[query][frame[query].duplicated()]
        if len(repeated):
            raise ValueError(f"run {name} has {len(repeated)} repeated {query}(s): {_examples(repeated)}")
    only_a, only_b = set(a[query]) - set(b[query]), set(b[query]) - set(a[query])
    if only_a or only_b:
        raise ValueError(f"the runs were evaluated on different query sets: {len(only_a)} {query}(s) only in a "
                         f"({_examples(only_a)}), {len(only_b)} only in b ({_examples(only_b)})")
    if group is not None:
        joined = a[[query, group]].merge(b[[query, group]], on=query, suffixes=("_a", "_b"))
        moved = joined.loc[joined[f"{group}_a"] != joined[f"{group}_b"], query]
        if len(moved):
            raise ValueError(f"the runs were evaluated on different query sets: {len(moved)} {query}(s) belong to "
                             f"another {group} in b ({_examples(moved)})")


def compare_runs(a: pd.DataFrame, b: pd.DataFrame, outcome: str, query: str = "sample_id",
                 group: str | None = "image_id", confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
                 seed: int = SEED) -> PairedDifference:
    """paired_difference of the `outcome` column of two runs' per-query frames (one row per
    query, e.g. one kind and step of samples.parquet), matched on `query` and clustered by
    `group`. Refuses (ValueError) runs evaluated on different queries: a paired comparison
    of different sets would mix the runs' difference with the sets'."""
    _same_queries(a, b, query, group)
    b = b.set_index(query).loc[a[query]]
    return paired_difference(a[outcome].to_numpy(), b[outcome].to_numpy(),
                             None if group is None else a[group].to_numpy(),
                             confidence=confidence, n_resamples=n_resamples, seed=seed)


# ---------------------------------------------------------------------------- two runs, different queries


def unpaired_difference(a, b, groups_a=None, groups_b=None, confidence: float = CONFIDENCE,
                        n_resamples: int = N_RESAMPLES, seed: int = SEED) -> UnpairedDifference:
    """b - a for outcomes on two different query sets (e.g. one model on a leaky split's
    validation images and on an honest split's), where compare_runs refuses to pair.

    A two-sample bootstrap: scipy.stats.bootstrap with two unpaired samples, a's images and
    b's, each resampled on its own (with `groups_a` / `groups_b`, the image id of each value,
    an image comes with all of its captions), and the difference of the two means per
    resample; BCa interval, its jackknife leaving out one image of either set. Nothing is
    shared to cancel, so the interval counts the variation of both sets and is wider than a
    paired one on a common set. Where BCa cannot be computed (no spread, as with all-0 or
    all-1 outcomes in both), the percentile interval of the same resamples, [d, d] when every
    resample gives d."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.ndim != 1 or b.ndim != 1:
        raise ValueError(f"unpaired outcomes need one value per query in each set, got shapes {a.shape} and {b.shape}")
    (unit_a, n_a), (unit_b, n_b) = _units(a, groups_a), _units(b, groups_b)
    if min(n_a, n_b) < 2:
        raise ValueError(f"a bootstrap over images needs at least two images in each set, got {n_a} and {n_b}")
    mean_a, mean_b = _of_units(a, unit_a, n_a, np.mean), _of_units(b, unit_b, n_b, np.mean)
    statistic = lambda ia, ib, axis=-1: mean_b(ib) - mean_a(ia)
    images = (np.arange(n_a), np.arange(n_b))
    result = _bootstrap(images, statistic, n_a + n_b, confidence, n_resamples, seed, "BCa")
    low, high = result.confidence_interval
    if not (np.isfinite(low) and np.isfinite(high)):
        low, high = _bootstrap(images, statistic, n_a + n_b, confidence, n_resamples, seed, "percentile",
                               previous=result).confidence_interval
    return UnpairedDifference(float(statistic(*images)), float(low), float(high))


# ---------------------------------------------------------------------------- two configurations, several seeds


def _runs(runs) -> np.ndarray:
    runs = np.asarray(runs, dtype=float)
    if runs.ndim != 2 or len(runs) < 2:
        raise ValueError(f"a configuration needs two or more runs of per-query outcomes [runs, queries], got shape "
                         f"{runs.shape}; compare single runs with paired_difference")
    return runs


def _draw_counts(images: np.ndarray, n_units: int) -> np.ndarray:
    """[draws, images]: how often each draw of a batch (or the one draw `images`) took each image."""
    draws = images.reshape(-1, images.shape[-1])
    flat = (draws + n_units * np.arange(len(draws))[:, None]).ravel()
    return np.bincount(flat, minlength=len(draws) * n_units).reshape(len(draws), n_units).astype(float)


def _figures(sums: np.ndarray, counts: np.ndarray, images: np.ndarray) -> np.ndarray:
    """[metrics, runs, ...]: each run's mean outcome of each metric over the queries of the drawn
    images (sums: [metrics, runs, images]; counts: [metrics, images]). A batch of draws is first
    counted per image, so that every figure of every draw is one matrix product rather than a
    gather of metrics x runs x draws x images."""
    times = _draw_counts(images, sums.shape[-1])
    figures = np.einsum("dn,mrn->mrd", times, sums) / (counts @ times.T)[:, None, :]
    return figures.reshape(*sums.shape[:2], *images.shape[:-1])


def group_difference(a_runs, b_runs, groups=None, confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
                     seed: int = SEED) -> GroupDifference:
    """Configuration b minus configuration a, each given as [runs (seeds), queries] outcomes on the same queries.

    The difference of the seed means, every run scored on the same queries (a crossed design,
    seeds x images). Its interval has the two parts a configuration's own interval has
    (analysis.runs.group_table), combined in quadrature: the seeds' part is the Welch
    t-interval of the runs' figures (t with Welch-Satterthwaite's degrees of freedom, 4.3 for
    three seeds a side where they spread alike); the images' part is the paired bootstrap over
    images with the seeds held fixed (percentile; image_low, image_high), which keeps the pairing
    by image. A two-level percentile bootstrap (seeds resampled too; Owen 2007) was used before
    and gave differences narrower than either side's own interval: with R seeds it sees (R-1)/R
    of the seed variance and uses normal, not t, quantiles, which for three seeds is half the
    width it should be. seed_sd and image_se say which variation dominates."""
    return group_differences([a_runs], [b_runs], [groups], confidence, n_resamples, seed)[0]


def group_differences(a_runs: list, b_runs: list, groups: list, confidence: float = CONFIDENCE,
                      n_resamples: int = N_RESAMPLES, seed: int = SEED) -> list[GroupDifference]:
    """group_difference of several metrics of the same two configurations at once (a_runs[m],
    b_runs[m], groups[m]: metric m's [runs, queries] outcomes and the image of each query),
    from one set of image resamples where the metrics' queries cover the same images: each
    result is then the one group_difference gives the metric alone (the same draws), at the cost
    of one bootstrap instead of one per metric."""
    a_runs, b_runs = [_runs(a) for a in a_runs], [_runs(b) for b in b_runs]
    for a, b in zip(a_runs, b_runs):
        if a.shape[1] != b.shape[1]:
            raise ValueError(f"the configurations cover {a.shape[1]} and {b.shape[1]} queries: not the same set")
    labels = [np.unique(np.arange(a.shape[1]) if g is None else np.asarray(g)) for a, g in zip(a_runs, groups)]
    if len(a_runs) > 1 and any(len(x) != len(labels[0]) or (x != labels[0]).any() for x in labels[1:]):
        return [group_differences([a], [b], [g], confidence, n_resamples, seed)[0]
                for a, b, g in zip(a_runs, b_runs, groups)]
    n_a, n_runs = len(a_runs[0]), len(a_runs[0]) + len(b_runs[0])
    sums, counts = [], []
    for a, b, g in zip(a_runs, b_runs, groups):
        unit, n_units = _units(a[0], g)
        counts.append(np.bincount(unit, minlength=n_units))
        sums.append(np.stack([np.bincount(unit, weights=run, minlength=n_units) for run in np.concatenate([a, b])]))
    sums, counts = np.stack(sums), np.stack(counts).astype(float)
    n_metrics, n_units = len(sums), sums.shape[-1]

    def statistic(images, axis=-1):  # per metric: b's mean figure minus a's, then every run's figure
        figures = _figures(sums, counts, images)
        diff = figures[:, n_a:].mean(1) - figures[:, :n_a].mean(1)
        return np.concatenate([diff[:, None], figures], axis=1).reshape(n_metrics * (1 + n_runs), *images.shape[:-1])

    images = np.arange(n_units)
    result = _bootstrap((images,), statistic, n_units * n_runs, confidence, n_resamples, seed, "percentile",
                        per_resample=n_units * n_runs)
    whole = statistic(images).reshape(n_metrics, 1 + n_runs)
    low, high = (np.reshape(x, (n_metrics, 1 + n_runs)) for x in result.confidence_interval)
    errors = np.reshape(result.standard_error, (n_metrics, 1 + n_runs))
    out = []
    for m in range(n_metrics):
        diff, image_low, image_high = float(whole[m, 0]), float(low[m, 0]), float(high[m, 0])
        a_figures, b_figures = whole[m, 1:1 + n_a], whole[m, 1 + n_a:]
        seed_se, seed_df = welch(a_figures, b_figures)
        half = combined_half_width(seed_se, seed_df, (image_high - image_low) / 2, confidence)
        out.append(GroupDifference(diff=diff, low=diff - half, high=diff + half, image_low=image_low,
                                   image_high=image_high, seed_sd=_pooled_sd(a_figures, b_figures),
                                   image_se=float(np.sqrt(np.mean(errors[m, 1:] ** 2))), seed_se=seed_se,
                                   seed_df=seed_df))
    return out


def welch(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(standard error, degrees of freedom) of mean(b) - mean(a) by Welch (1947):
    sqrt(var(a)/R_a + var(b)/R_b) and the Welch-Satterthwaite degrees of freedom; (0, inf) where
    neither side varies."""
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    if va + vb == 0:
        return 0.0, math.inf
    return float(np.sqrt(va + vb)), float((va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1)))


def welch_half_width(a: np.ndarray, b: np.ndarray, confidence: float = CONFIDENCE) -> float:
    """The half-width of Welch's t-interval of mean(b) - mean(a): t at the Welch-Satterthwaite
    degrees of freedom times Welch's standard error (welch); 0 where neither side varies."""
    return combined_half_width(*welch(a, b), 0.0, confidence)


# ---------------------------------------------------------------------------- p-values, power, many comparisons
#
# Every interval of a difference has at most two parts, combined in quadrature: the seeds' (a
# Welch t-interval: standard error seed_se, seed_df degrees of freedom) and the images' (a
# bootstrap interval of half-width image_half at CONFIDENCE, read as a normal one). The p-value
# and the minimum detectable effect below are those of that same interval, so a difference whose
# 95% interval excludes 0 has p < 0.05, and the other way round.


def _quantile(tail: float, df: float) -> float:
    """The upper `tail` quantile of t with df degrees of freedom (the normal's for infinite df);
    scipy.special's functions, which stats.t.isf wraps, at a hundredth of its cost per call."""
    return float(-special.ndtri(tail) if math.isinf(df) else -special.stdtrit(df, tail))


def combined_half_width(seed_se: float, seed_df: float, image_half: float, confidence: float = CONFIDENCE) -> float:
    """The half-width of the two-part interval at `confidence` (image_half is at CONFIDENCE)."""
    tail = (1 - confidence) / 2
    image_se = image_half / _quantile((1 - CONFIDENCE) / 2, math.inf)
    return float(np.hypot(_quantile(tail, seed_df) * seed_se if seed_se else 0.0,
                          _quantile(tail, math.inf) * image_se))


def interval_p_value(diff: float, seed_se: float, seed_df: float, image_half: float) -> float:
    """The two-sided p-value of "no difference" that inverts the two-part interval: the 1 - p
    interval has 0 at its edge. p < 1 - CONFIDENCE exactly where the CONFIDENCE interval
    excludes 0; NaN where there is no spread to test against."""
    if not np.isfinite(diff) or not (seed_se > 0 or image_half > 0):
        return math.nan
    if diff == 0:
        return 1.0
    width = lambda p: combined_half_width(seed_se, seed_df, image_half, 1 - p) - abs(diff)
    if width(1e-15) < 0:  # beyond any interval a float can state
        return 0.0
    return float(optimize.brentq(width, 1e-15, 1 - 1e-12, xtol=1e-12))


def minimum_detectable_effect(seed_se: float, seed_df: float, image_half: float, power: float = POWER,
                              confidence: float = CONFIDENCE) -> float:
    """The smallest true difference that the two-part interval excludes from 0 with probability
    `power` (Cohen 1988's power analysis, per part): (t_{alpha/2} + t_{1-power}) times each part's
    standard error, in quadrature, the t at the seeds' degrees of freedom and the normal for
    images. NaN where there is no spread."""
    if not (seed_se > 0 or image_half > 0):
        return math.nan
    tail, miss = (1 - confidence) / 2, 1 - power
    image_se = image_half / _quantile((1 - CONFIDENCE) / 2, math.inf)
    seeds = (_quantile(tail, seed_df) + _quantile(miss, seed_df)) * seed_se if seed_se else 0.0
    return float(np.hypot(seeds, (_quantile(tail, math.inf) + _quantile(miss, math.inf)) * image_se))


def adjust_p_values(p_values) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values of one family of comparisons
    (scipy.stats.false_discovery_control): a verdict read at adjusted p < 0.05 keeps the expected
    share of false "better"/"worse" among a sweep's many comparisons at 5%. NaN stays NaN and
    is left out of the family."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    known = np.isfinite(p)
    if known.any():
        out[known] = stats.false_discovery_control(p[known], method="bh")
    return out


def _pooled_sd(a: np.ndarray, b: np.ndarray) -> float:
    """The standard deviation within two groups of figures, pooled (each about its own mean)."""
    pooled = ((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2)
    return float(np.sqrt(pooled))


# ---------------------------------------------------------------------------- wording and highlights


def _decimals(metric: str) -> int:
    return 1 if metric.endswith("_rank") else 3  # ranks run to tens; rates live in [0, 1]


def _direction(higher: bool, metric: str) -> str:
    """"higher (better)", "lower (worse)", or "higher" alone for a metric with no better direction."""
    way = better(metric)
    word = "higher" if higher else "lower"
    return word if way is None else f"{word} ({'better' if higher == (way == 'max') else 'worse'})"


def verdict(diff: float, low: float, high: float, metric: str, mde: float = math.nan) -> str:
    """"higher (better), +0.040 [0.020, 0.060]": a direction only where the interval excludes 0
    (which direction is better: core.names.better), otherwise "no detectable difference" with
    what the comparison could have detected (`mde`, minimum_detectable_effect) where known;
    always with the difference and its interval."""
    d = _decimals(metric)
    figures = f"{diff:+.{d}f} [{low:.{d}f}, {high:.{d}f}]"
    if low <= 0 <= high:
        could = f"; it could detect ±{mde:.{d}f}" if np.isfinite(mde) else ""
        return f"no detectable difference, {figures}{could}"
    return f"{_direction(low > 0, metric)}, {figures}"


def adjusted_verdict(diff: float, p_adjusted: float, metric: str) -> str:
    """The verdict of one comparison of a family at adjusted p < 1 - CONFIDENCE (adjust_p_values):
    "higher (better), adjusted p 0.012", or "no detectable difference, adjusted p 0.31"."""
    if not np.isfinite(p_adjusted):
        return "not tested"
    shown = f"adjusted p {p_adjusted:.3f}" if p_adjusted >= 0.001 else "adjusted p < 0.001"
    if p_adjusted >= 1 - CONFIDENCE:
        return f"no detectable difference, {shown}"
    return f"{_direction(diff > 0, metric)}, {shown}"


def indistinguishable_from_best(outcomes: Mapping[str, np.ndarray], metric: str, groups=None,
                                confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
                                seed: int = SEED) -> dict[str, bool]:
    """run -> whether it shares the "best" highlight of a column: the best run by its mean
    outcome, and every run whose paired interval against it (bootstrap_interval of the
    per-query difference) includes 0. `outcomes` holds per-query outcomes aligned by query."""
    outcomes = {name: np.asarray(values, dtype=float) for name, values in outcomes.items()}
    best = (max if better(metric) == "max" else min)(outcomes, key=lambda name: outcomes[name].mean())

    def includes_zero(values: np.ndarray) -> bool:
        _, low, high = bootstrap_interval(values - outcomes[best], groups, confidence=confidence,
                                          n_resamples=n_resamples, seed=seed)
        return low <= 0 <= high

    return {name: name == best or includes_zero(values) for name, values in outcomes.items()}

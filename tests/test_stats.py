"""core/stats.py on simulated per-query outcomes whose truth is known.

The simulations use 100 images and 499 resamples (not the 9,999 of a report) to keep the
file fast on two cores; 499 resamples move a 95% BCa endpoint by Monte Carlo noise only,
which changes coverage by far less than the tolerances below."""

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from core import stats

FAST = 499  # resamples per interval in the simulations


def _captions(rng, n_images, most=5):
    """Image id of each caption, 1..most captions per image."""
    return np.repeat(np.arange(n_images), rng.integers(1, most + 1, n_images))


def _hard_and_easy_images(rng, n_images, mean):
    """Each image's chance that a caption of it is right, Beta with the given mean: captions of
    one image succeed or fail together, as in retrieval (concentration 2: strongly so)."""
    return rng.beta(2 * mean, 2 * (1 - mean), n_images)


def _coverage_band(n_sets, nominal=0.95, z=3.0):
    """The coverage a correct 95% method shows over n_sets simulated sets, +-z binomial standard errors."""
    se = np.sqrt(nominal * (1 - nominal) / n_sets)
    return nominal - z * se, nominal + z * se


# ---------------------------------------------------------------------------- one figure


def test_interval_is_scipy_bca_on_plain_values():
    values = (np.random.default_rng(0).random(80) < 0.3).astype(float)
    got = stats.bootstrap_interval(values, n_resamples=FAST, seed=5)
    want = scipy.stats.bootstrap((values,), np.mean, n_resamples=FAST, rng=np.random.default_rng(5))
    assert got == (values.mean(), want.confidence_interval.low, want.confidence_interval.high)


def test_cluster_statistic_other_than_the_mean_resamples_whole_images():
    # The vectorised ratio-of-sums path for np.mean and the one-resample-at-a-time path for any
    # other statistic must see the same resamples: a mean that is not np.mean takes the second.
    rng = np.random.default_rng(1)
    groups = _captions(rng, 30)
    values = rng.integers(1, 20, len(groups)).astype(float)
    fast = stats.bootstrap_interval(values, groups, n_resamples=99)
    slow = stats.bootstrap_interval(values, groups, statistic=lambda x, axis: np.mean(x, axis=axis),
                                    n_resamples=99)
    assert slow == pytest.approx(fast, rel=1e-12)
    estimate, low, high = stats.bootstrap_interval(values, groups, statistic=np.median, n_resamples=99)
    assert estimate == np.median(values) and low <= estimate <= high


def test_intervals_cover_the_true_rate_at_the_nominal_rate():
    """1,000 simulated validation sets of 100 images, each right with probability 0.217: off the
    lattice k/100 of possible rates, so that endpoints landing exactly on p do not flatter it."""
    rng = np.random.default_rng(2)
    p, n_sets = 0.217, 1000
    covered = [stats.bootstrap_interval((rng.random(100) < p).astype(float), n_resamples=FAST, seed=i)
               for i in range(n_sets)]
    coverage = np.mean([low <= p <= high for _, low, high in covered])
    low, high = _coverage_band(n_sets)
    assert low <= coverage <= high, coverage


def test_clustered_intervals_cover_and_ignoring_the_images_does_not():
    """1,000 simulated sets of 100 images with 1-5 captions each, captions of an image right
    together more often than not. Resampling captions as if independent undercovers (the
    check that this simulation can fail a method); resampling images does not. The naive
    version runs on 300 sets: its coverage sits near 0.85, many standard errors from 0.95."""
    rng = np.random.default_rng(3)
    p, n_sets, n_naive = 0.4, 1000, 300
    coverage, naive = [], []
    for i in range(n_sets):
        groups = _captions(rng, 100)
        right = (rng.random(len(groups)) < _hard_and_easy_images(rng, 100, p)[groups]).astype(float)
        _, low, high = stats.bootstrap_interval(right, groups, n_resamples=FAST, seed=i, proportion=True)
        coverage.append(low <= p <= high)
        if i < n_naive:
            _, low, high = stats.bootstrap_interval(right, n_resamples=FAST, seed=i)
            naive.append(low <= p <= high)
    low, high = _coverage_band(n_sets)
    assert low <= np.mean(coverage) <= high, np.mean(coverage)
    assert np.mean(naive) < _coverage_band(n_naive)[0], np.mean(naive)


def test_degenerate_outcomes_get_an_interval_not_nan():
    n = 50
    # All wrong: BCa has no spread to work with; the exact Clopper-Pearson interval, one trial per image.
    assert stats.bootstrap_interval(np.zeros(n), proportion=True) == (0.0, 0.0, pytest.approx(1 - 0.025 ** (1 / n)))
    groups = np.repeat(np.arange(n), 3)
    assert stats.bootstrap_interval(np.ones(3 * n), groups, proportion=True) == (
        1.0, pytest.approx(0.025 ** (1 / n)), 1.0)
    # Not a rate: every resample gives the same figure, and so does the interval.
    assert stats.bootstrap_interval(np.full(n, 3.0)) == (3.0, 3.0, 3.0)
    assert stats.bootstrap_interval([0.0, 1, 1, 0], groups=[7, 7, 9, 9], proportion=True) == (0.5, 0.5, 0.5)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="one image id per value"):
        stats.bootstrap_interval(np.ones(4), groups=[0, 1])
    with pytest.raises(ValueError, match="at least two images"):
        stats.bootstrap_interval(np.ones(4), groups=[0, 0, 0, 0])
    with pytest.raises(ValueError, match="0/1"):
        stats.bootstrap_interval([1.0, 2.0, 3.0], proportion=True)


def test_recall_at_k_intervals_cluster_captions_by_image():
    rng = np.random.default_rng(4)
    text_image_ids = _captions(rng, 60)
    image_ranks, text_ranks = rng.integers(1, 30, 60), rng.integers(1, 30, len(text_image_ids))
    got = stats.recall_at_k_intervals(image_ranks, text_ranks, text_image_ids, n_resamples=FAST)
    assert set(got) == {f"{d}_{m}" for d in ("i2t", "t2i") for m in ("R@1", "R@5", "R@10", "mean_rank")}
    assert got["i2t_R@5"] == stats.bootstrap_interval((image_ranks <= 5).astype(float), n_resamples=FAST)
    assert got["t2i_R@10"] == stats.bootstrap_interval((text_ranks <= 10).astype(float), text_image_ids,
                                                       n_resamples=FAST)
    value, low, high = got["t2i_mean_rank"]
    assert value == text_ranks.mean() and low < value < high


# ---------------------------------------------------------------------------- two runs


def _correlated_pair(rng, n_images, planted=0.0):
    """Two runs on the same images and captions: both find the same images hard, and each is
    better than the other on some images (by the same amount either way, so under no planted
    difference a and b are exchangeable within an image); b also gets right `planted` of the
    captions a gets wrong."""
    groups = _captions(rng, n_images)
    chance = _hard_and_easy_images(rng, n_images, 0.4)
    disagreement = rng.choice([-0.15, 0.15], n_images)
    a = (rng.random(len(groups)) < np.clip(chance - disagreement, 0, 1)[groups]).astype(float)
    b = (rng.random(len(groups)) < np.clip(chance + disagreement, 0, 1)[groups]).astype(float)
    b = np.maximum(b, rng.random(len(groups)) < planted)
    return a, b, groups


def test_paired_comparison_finds_a_planted_difference():
    a, b, groups = _correlated_pair(np.random.default_rng(5), 300, planted=0.15)
    r = stats.paired_difference(a, b, groups, n_resamples=FAST)
    assert r.diff == pytest.approx((b - a).mean())
    assert 0 < r.low < r.diff < r.high
    assert r.p_value < 0.01
    assert stats.verdict(r.diff, r.low, r.high, "t2i_R@1").startswith("higher (better), +")


def test_paired_comparison_false_positive_rate_is_near_five_percent():
    """1,000 null pairs of 100 images with 1-5 captions: the interval declares a difference in
    5% of them, within 3 binomial standard errors. The permutation test is exact, so it may
    reject less often than 5% but not more: on 0/1 outcomes its statistic is discrete, and
    the two-sided p-value counts the observed value in both tails (its size here is near
    0.04, measured over 4,000 sets). On 300 of the sets, the interval with the captions
    taken as independent rejects far more often than 5%: the check that this simulation
    fails a method that ignores the images."""
    rng = np.random.default_rng(6)
    n_sets, n_naive = 1000, 300
    rejected_test, rejected_interval, rejected_naive = [], [], []
    for i in range(n_sets):
        a, b, groups = _correlated_pair(rng, 100)
        r = stats.paired_difference(a, b, groups, n_resamples=FAST, seed=i)
        rejected_test.append(r.p_value < 0.05)
        rejected_interval.append(not r.low <= 0 <= r.high)
        if i < n_naive:
            _, naive_low, naive_high = stats.bootstrap_interval(b - a, n_resamples=FAST, seed=i)
            rejected_naive.append(not naive_low <= 0 <= naive_high)
    low, high = (1 - x for x in reversed(_coverage_band(n_sets)))
    assert low <= np.mean(rejected_interval) <= high, np.mean(rejected_interval)
    assert 0.015 <= np.mean(rejected_test) <= high, np.mean(rejected_test)
    assert np.mean(rejected_naive) > 1 - _coverage_band(n_naive)[0], np.mean(rejected_naive)


def test_mcnemar_exact_on_a_hand_checked_case():
    # 1 query only a gets right, 9 only b, 5 both, 5 neither: p = 2 * (C(10,0) + C(10,1)) / 2**10.
    a = np.array([1] + [0] * 9 + [1] * 5 + [0] * 5)
    b = np.array([0] + [1] * 9 + [1] * 5 + [0] * 5)
    assert stats.mcnemar_exact(a, b) == stats.McNemar(a_only=1, b_only=9, p_value=22 / 1024)
    assert stats.mcnemar_exact(a, a).p_value == 1.0
    with pytest.raises(ValueError, match="0/1"):
        stats.mcnemar_exact(a * 2, b)


def _run_frame(caption_ids, image_ids, right):
    return pd.DataFrame({"sample_id": caption_ids, "image_id": image_ids, "right": right})


def test_compare_runs_matches_queries_by_id_and_refuses_other_sets():
    rng = np.random.default_rng(7)
    a, b, groups = _correlated_pair(rng, 40, planted=0.2)
    ids, images = np.array([f"cap{j}" for j in range(len(a))]), np.array([f"img{g}" for g in groups])
    run_a = _run_frame(ids, images, a)
    order = rng.permutation(len(b))  # the same queries in another order
    run_b = _run_frame(ids[order], images[order], b[order])
    assert stats.compare_runs(run_a, run_b, "right", n_resamples=FAST) == stats.paired_difference(
        a, b, images, n_resamples=FAST)

    with pytest.raises(ValueError, match=r"different query sets: 1 sample_id\(s\) only in a \(cap0\), "
                                         r"1 only in b \(cap_new\)"):
        stats.compare_runs(run_a, run_b.replace({"sample_id": {"cap0": "cap_new"}}), "right")
    with pytest.raises(ValueError, match=r"1 sample_id\(s\) belong to another image_id in b \(cap3\)"):
        stats.compare_runs(run_a, run_b.assign(image_id=np.where(run_b.sample_id == "cap3", "img_x",
                                                                 run_b.image_id)), "right")
    with pytest.raises(ValueError, match="repeated sample_id"):
        stats.compare_runs(run_a, pd.concat([run_b, run_b.head(1)]), "right")


# ---------------------------------------------------------------------------- configurations with seeds


def _configuration(rng, chance, n_seeds, seed_sd, shift=0.0):
    """[seeds, captions] outcomes: each seed's run moves every caption's chance by its own offset."""
    offsets = rng.normal(shift, seed_sd, (n_seeds, 1))
    return (rng.random((n_seeds, len(chance))) < np.clip(chance + offsets, 0, 1)).astype(float)


def _two_configurations(seed: int, n_seeds: int, seed_sd: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Configurations a and b ([seeds, captions] each, b's chance 0.05 higher) on the same 150
    images' captions, and each caption's image."""
    rng = np.random.default_rng(seed)
    groups = _captions(rng, 150)
    chance = _hard_and_easy_images(rng, 150, 0.4)[groups]
    a = _configuration(rng, chance, n_seeds, seed_sd=seed_sd)
    b = _configuration(rng, chance, n_seeds, seed_sd=seed_sd, shift=0.05)
    return a, b, groups


def test_the_interval_counts_seed_variation_when_there_is_some():
    a, b, groups = _two_configurations(8, 4, seed_sd=0.08)
    r = stats.group_difference(a, b, groups, n_resamples=FAST)
    assert r.diff == pytest.approx(b.mean() - a.mean())
    assert r.seed_sd > r.image_se
    assert (r.high - r.low) > 1.5 * (r.image_high - r.image_low)
    assert r.low < r.diff < r.high


def test_the_interval_is_the_image_interval_when_seeds_change_nothing():
    rng = np.random.default_rng(9)
    groups = _captions(rng, 150)
    chance = _hard_and_easy_images(rng, 150, 0.4)[groups]
    a = np.repeat(_configuration(rng, chance, 1, seed_sd=0.0), 3, axis=0)
    b = np.repeat(_configuration(rng, chance, 1, seed_sd=0.0, shift=0.05), 3, axis=0)
    r = stats.group_difference(a, b, groups, n_resamples=FAST)
    assert r.seed_sd == 0.0 and r.image_se > 0
    assert (r.high - r.low) == pytest.approx(r.image_high - r.image_low, rel=0.1)


def test_group_difference_needs_several_seeds_on_the_same_queries():
    with pytest.raises(ValueError, match="two or more runs"):
        stats.group_difference(np.zeros((1, 10)), np.zeros((3, 10)))
    with pytest.raises(ValueError, match="not the same set"):
        stats.group_difference(np.zeros((2, 10)), np.zeros((2, 11)))


# ---------------------------------------------------------------------------- p-values, power, many comparisons


@pytest.mark.parametrize("seed_se, seed_df, image_half", [(0.01, 4.3, 0.02), (0.0, np.inf, 0.03), (0.02, 2.0, 0.0)])
def test_the_p_value_inverts_the_interval(seed_se, seed_df, image_half):
    half = stats.combined_half_width(seed_se, seed_df, image_half)
    for diff in (0.5 * half, 0.999 * half, 1.001 * half, 2 * half):
        p = stats.interval_p_value(diff, seed_se, seed_df, image_half)
        assert (p < 0.05) == (diff > half)  # the 95% interval excludes 0 exactly where p < 0.05
        assert stats.combined_half_width(seed_se, seed_df, image_half, 1 - p) == pytest.approx(diff, rel=1e-6)
    assert stats.interval_p_value(0.0, seed_se, seed_df, image_half) == 1.0


def test_adjusted_p_values_are_scipys_benjamini_hochberg_and_keep_nan():
    p = np.array([0.001, 0.04, np.nan, 0.03, 0.5, 0.012])
    got = stats.adjust_p_values(p)
    known = np.isfinite(p)
    np.testing.assert_array_equal(got[known], scipy.stats.false_discovery_control(p[known], method="bh"))
    assert np.isnan(got[2]) and (got[known] >= p[known]).all()
    assert stats.adjusted_verdict(-0.03, 0.02, "i2t_R@1") == "lower (worse), adjusted p 0.020"
    assert stats.adjusted_verdict(0.03, 0.2, "i2t_R@1") == "no detectable difference, adjusted p 0.200"


def test_the_minimum_detectable_effect_is_found_80_percent_of_the_time():
    """Simulate the comparisons a sweep makes (three seeds a side on the same 150 images), with
    the true difference set to the MDE computed from the simulation's own variances; the
    interval must then exclude 0 in about 80% of them, and in about 5% at no difference."""
    n_sets, n_seeds, seed_sd = 120, 3, 0.03

    def detected(shift, seed):
        rng = np.random.default_rng(seed)
        groups = _captions(rng, 150)
        chance = _hard_and_easy_images(rng, 150, 0.4)[groups]
        a = _configuration(rng, chance, n_seeds, seed_sd)
        b = _configuration(rng, chance, n_seeds, seed_sd, shift)
        r = stats.group_difference(a, b, groups, n_resamples=199)
        return not r.low <= 0 <= r.high, r

    nulls = [detected(0.0, 1000 + i) for i in range(n_sets)]
    # The MDE from the average variances of the null simulations (the seeds' standard error, its
    # degrees of freedom and the images' half-width), as a sweep computes it from its own runs.
    seed_se = np.sqrt(np.mean([r.seed_se ** 2 for _, r in nulls]))
    image_half = np.mean([(r.image_high - r.image_low) / 2 for _, r in nulls])
    mde = stats.minimum_detectable_effect(seed_se, 2 * n_seeds - 2, image_half)
    power = np.mean([detected(mde, 2000 + i)[0] for i in range(n_sets)])
    false_alarms = np.mean([d for d, _ in nulls])
    assert 0.68 <= power <= 0.92, (mde, power)
    assert false_alarms <= 0.12


# ---------------------------------------------------------------------------- wording and highlights


@pytest.mark.parametrize("args, want", [
    ((0.04, 0.02, 0.06, "i2t_R@1"), "higher (better), +0.040 [0.020, 0.060]"),
    ((0.01, -0.02, 0.04, "i2t_R@1"), "no detectable difference, +0.010 [-0.020, 0.040]"),
    ((-0.03, -0.05, -0.01, "t2i_R@5"), "lower (worse), -0.030 [-0.050, -0.010]"),
    ((-3.21, -5.07, -1.33, "t2i_mean_rank"), "lower (better), -3.2 [-5.1, -1.3]"),
    ((2.0, 0.5, 3.5, "i2t_median_rank"), "higher (worse), +2.0 [0.5, 3.5]"),
    ((0.2, 0.1, 0.3, "modality_gap"), "higher, +0.200 [0.100, 0.300]"),
    ((0.0, 0.0, 0.0, "i2t_R@1"), "no detectable difference, +0.000 [0.000, 0.000]"),
    ((0.01, -0.02, 0.04, "i2t_R@1", 0.0412),
     "no detectable difference, +0.010 [-0.020, 0.040]; it could detect ±0.041"),
])
def test_verdict_strings(args, want):
    assert stats.verdict(*args) == want


def test_best_of_a_column_and_the_runs_indistinguishable_from_it():
    rng = np.random.default_rng(10)
    chance = _hard_and_easy_images(rng, 300, 0.5)
    best = (rng.random(300) < chance).astype(float)
    close = best.copy()
    # 22 right answers lost, 18 gained: 4 fewer of 300, within noise.
    close[np.flatnonzero(best == 1)[:22]] = 0
    close[np.flatnonzero(best == 0)[:18]] = 1
    worse = best * (rng.random(300) < 0.6)  # loses 40% of its right answers
    runs = {"best": best, "close": close, "worse": worse}
    assert best.mean() > close.mean()  # so the comparison is close against best, not the other way
    marks = stats.indistinguishable_from_best(runs, "i2t_R@1", n_resamples=FAST)
    assert marks == {"best": True, "close": True, "worse": False}
    ranks = {"best": 1 + 10 * (1 - best), "worse": 1 + 10 * (1 - worse)}
    assert stats.indistinguishable_from_best(ranks, "i2t_mean_rank", n_resamples=FAST) == {
        "best": True, "worse": False}


# ---------------------------------------------------------------------------- two runs, different queries


def _clustered_set(rng, n_images, mean):
    """One validation set of its own: 1-5 captions per image, captions of an image right together."""
    groups = _captions(rng, n_images)
    return (rng.random(len(groups)) < _hard_and_easy_images(rng, n_images, mean)[groups]).astype(float), groups


def test_unpaired_interval_is_scipy_two_sample_bca_on_plain_values():
    rng = np.random.default_rng(11)
    a, b = (rng.random(80) < 0.3).astype(float), (rng.random(70) < 0.5).astype(float)
    got = stats.unpaired_difference(a, b, n_resamples=FAST, seed=5)
    want = scipy.stats.bootstrap((a, b), lambda x, y, axis: y.mean(axis) - x.mean(axis), n_resamples=FAST,
                                 rng=np.random.default_rng(5)).confidence_interval
    assert got == stats.UnpairedDifference(b.mean() - a.mean(), pytest.approx(want.low), pytest.approx(want.high))


def test_unpaired_interval_covers_a_planted_difference_and_ignoring_the_images_does_not():
    """1,000 pairs of different validation sets (100 and 80 images, 1-5 captions each), the
    second's images right more often by 0.134 (off the lattice of possible differences):
    the interval covers it at the nominal rate. Resampling captions as if independent
    undercovers, on 300 of the pairs: the check that this simulation can fail a method."""
    rng = np.random.default_rng(12)
    p_a, p_b, n_sets, n_naive = 0.383, 0.517, 1000, 300
    covered, naive = [], []
    for i in range(n_sets):
        (a, groups_a), (b, groups_b) = _clustered_set(rng, 100, p_a), _clustered_set(rng, 80, p_b)
        r = stats.unpaired_difference(a, b, groups_a, groups_b, n_resamples=FAST, seed=i)
        assert r.diff == pytest.approx(b.mean() - a.mean())
        covered.append(r.low <= p_b - p_a <= r.high)
        if i < n_naive:
            r = stats.unpaired_difference(a, b, n_resamples=FAST, seed=i)
            naive.append(r.low <= p_b - p_a <= r.high)
    low, high = _coverage_band(n_sets)
    assert low <= np.mean(covered) <= high, np.mean(covered)
    assert np.mean(naive) < _coverage_band(n_naive)[0], np.mean(naive)


def test_unpaired_interval_holds_zero_for_two_sets_from_one_distribution():
    """500 pairs of sets drawn alike: the interval includes 0 in 95% of them (within 3 binomial
    standard errors)."""
    rng = np.random.default_rng(13)
    n_sets = 500
    includes_zero = []
    for i in range(n_sets):
        (a, groups_a), (b, groups_b) = _clustered_set(rng, 100, 0.4), _clustered_set(rng, 90, 0.4)
        r = stats.unpaired_difference(a, b, groups_a, groups_b, n_resamples=FAST, seed=i)
        includes_zero.append(r.low <= 0 <= r.high)
    low, high = _coverage_band(n_sets)
    assert low <= np.mean(includes_zero) <= high, np.mean(includes_zero)
    r = stats.unpaired_difference(a, b, groups_a, groups_b, n_resamples=FAST)
    assert r.low < r.diff < r.high


def test_unpaired_degenerate_and_bad_inputs():
    # No spread in either set: every resample gives the same difference, and so does the interval.
    assert stats.unpaired_difference(np.zeros(10), np.zeros(12)) == stats.UnpairedDifference(0.0, 0.0, 0.0)
    assert stats.unpaired_difference(np.ones(10), np.zeros(12)) == stats.UnpairedDifference(-1.0, -1.0, -1.0)
    r = stats.unpaired_difference(np.zeros(30), (np.arange(20) < 5).astype(float), n_resamples=FAST)
    assert r.diff == 0.25 and 0 < r.low < 0.25 < r.high  # one set without spread: still an interval
    with pytest.raises(ValueError, match="at least two images in each set"):
        stats.unpaired_difference(np.ones(4), np.ones(5), groups_a=[0, 0, 0, 0])
    with pytest.raises(ValueError, match="one image id per value"):
        stats.unpaired_difference(np.ones(4), np.ones(5), groups_b=[0, 1])
    with pytest.raises(ValueError, match="one value per query"):
        stats.unpaired_difference(np.ones((2, 2)), np.ones(5))


def test_welch_half_width_is_scipys_welch_interval():
    a, b = np.array([0.10, 0.14, 0.09]), np.array([0.18, 0.12, 0.21, 0.16])
    ci = scipy.stats.ttest_ind(b, a, equal_var=False).confidence_interval(0.95)
    assert stats.welch_half_width(a, b) == pytest.approx((ci.high - ci.low) / 2)
    assert stats.welch_half_width(np.ones(3), np.ones(3)) == 0.0


def test_a_difference_is_never_narrower_than_its_seeds_allow():
    a, b, groups = _two_configurations(10, 3, seed_sd=0.1)
    r = stats.group_difference(a, b, groups, n_resamples=FAST)
    seeds = stats.welch_half_width(a.mean(1), b.mean(1))
    assert (r.high - r.low) / 2 >= seeds > 0  # the seeds' t-interval alone, three seeds a side
    assert (r.high - r.low) / 2 == pytest.approx(np.hypot(seeds, (r.image_high - r.image_low) / 2))

"""Bootstrap intervals and paired comparisons."""

import math

import numpy as np
import pytest

from samecurve.run.stats import (
    Interval,
    PairedComparison,
    auroc_ci,
    mean_ci,
    paired_auroc_difference,
    paired_difference,
)

N_RES = 1000  # keeps the module fast; the defaults are exercised once below


def test_interval_str() -> None:
    assert str(Interval(0.8123, 0.7011, 0.9049, 12)) == "0.812 [0.701, 0.905] n=12"
    assert "p=" in str(PairedComparison(0.1, 0.0, 0.2, 5, 0.04))


def test_mean_ci_constant() -> None:
    ci = mean_ci([0.3] * 7, n_resamples=N_RES)
    assert ci.mean == pytest.approx(0.3)
    assert ci.lo == ci.hi == ci.mean
    assert ci.n == 7


def test_mean_ci_binary() -> None:
    ci = mean_ci([0.0, 1.0] * 20)  # default n_resamples
    # mean 20/40; normal-theory half-width 1.96*sqrt(.25/40) ~ 0.155
    assert ci.mean == pytest.approx(0.5)
    assert ci.n == 40
    assert 0.25 < ci.lo < 0.5 < ci.hi < 0.75


def test_mean_ci_deterministic_for_seed() -> None:
    x = np.random.default_rng(3).normal(size=30)
    assert mean_ci(x, seed=7, n_resamples=N_RES) == mean_ci(x, seed=7, n_resamples=N_RES)
    assert mean_ci(x, seed=7, n_resamples=N_RES) != mean_ci(x, seed=8, n_resamples=N_RES)


def test_mean_ci_drops_nan() -> None:
    ci = mean_ci([1.0, float("nan"), 3.0, float("nan")], n_resamples=N_RES)
    assert ci.mean == pytest.approx(2.0)  # (1 + 3) / 2
    assert ci.n == 2
    assert ci.lo <= 2.0 <= ci.hi
    one = mean_ci([float("nan"), 0.4])
    assert (one.mean, one.lo, one.hi, one.n) == (0.4, 0.4, 0.4, 1)
    none = mean_ci([float("nan")])
    assert none.n == 0 and math.isnan(none.mean) and math.isnan(none.lo)


def test_mean_ci_rejects_bad_confidence() -> None:
    with pytest.raises(ValueError):
        mean_ci([0.0, 1.0], confidence=1.5)


def test_auroc_ci_perfect() -> None:
    scores = [0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9]
    labels = [0, 0, 0, 0, 1, 1, 1, 1]
    ci = auroc_ci(scores, labels, n_resamples=N_RES)
    # every stratified resample is still perfectly separated
    assert ci.mean == 1.0 and ci.hi == 1.0 and ci.lo == 1.0
    assert ci.n == 8 and ci.positives == 4


def test_auroc_ci_overlapping() -> None:
    # positives at k, negatives at k + 0.5 (k = 1..10): pos k beats neg j iff j < k,
    # so wins = 0 + 1 + ... + 9 = 45 of 100 pairs -> 0.45
    k = np.arange(1.0, 11.0)
    scores = np.r_[k, k + 0.5]
    labels = np.r_[np.ones(10, int), np.zeros(10, int)]
    ci = auroc_ci(scores, labels, n_resamples=N_RES)
    assert ci.mean == pytest.approx(0.45)
    assert 0.0 <= ci.lo < ci.mean < ci.hi <= 1.0
    assert ci.n == 20


def test_auroc_ci_undefined_and_singletons() -> None:
    ci = auroc_ci([0.1, 0.2, 0.3], [1, 1, 1])
    assert ci.n == 3 and math.isnan(ci.mean) and math.isnan(ci.lo) and math.isnan(ci.hi)
    # one positive, above every negative: a stratified resample always keeps it, so every
    # resample has AUROC 1 (an unstratified one would sometimes lose the only positive)
    one_pos = auroc_ci([0.9, 0.1, 0.2, 0.3, 0.4], [1, 0, 0, 0, 0], n_resamples=N_RES)
    assert (one_pos.mean, one_pos.lo, one_pos.hi, one_pos.n) == (1.0, 1.0, 1.0, 5)
    # one negative in the middle of the positives: point 2/4 = 0.5, still an interval
    mid = auroc_ci([0.5, 0.1, 0.2, 0.8, 0.9], [0, 1, 1, 1, 1], n_resamples=N_RES)
    assert mid.mean == pytest.approx(0.5)
    assert 0.0 <= mid.lo <= 0.5 <= mid.hi <= 1.0 and mid.lo < mid.hi


def test_paired_difference_constant_shift() -> None:
    a = np.linspace(0.2, 0.9, 12)
    res = paired_difference(a, a - 0.1, n_resamples=N_RES)
    assert res.mean_diff == pytest.approx(0.1)
    assert res.lo == res.hi == res.mean_diff
    assert res.n == 12
    # Wilcoxon exact: all 12 differences positive -> two-sided p = 2 / 2^12
    assert res.p_value == pytest.approx(2 / 2**12)


def test_paired_difference_identical() -> None:
    a = [0.1, 0.5, 0.7, 0.2]
    res = paired_difference(a, a, n_resamples=N_RES)
    assert res.mean_diff == 0.0 and res.lo == res.hi == 0.0
    assert res.p_value == 1.0


def test_paired_difference_wilcoxon_hand_example() -> None:
    # d = [1, 2, 3, -4]: ranks of |d| are 1..4, W+ = 6, W- = 4. Of the 16 equally likely
    # sign patterns, 7 have W+ <= 4 ({}, {1}, {2}, {3}, {4}, {1,2}, {1,3}) -> p = 2*7/16
    res = paired_difference([1.0, 2.0, 3.0, 0.0], [0.0, 0.0, 0.0, 4.0], n_resamples=N_RES)
    assert res.mean_diff == pytest.approx(0.5)  # (1 + 2 + 3 - 4) / 4
    assert res.p_value == pytest.approx(0.875)
    assert res.lo < 0.5 < res.hi


def test_paired_difference_drops_nan_pairs() -> None:
    nan = float("nan")
    res = paired_difference([1.0, 2.0, nan, 4.0], [0.0, nan, 1.0, 3.0], n_resamples=N_RES)
    # kept pairs 0 and 3: differences [1, 1]
    assert res.n == 2 and res.mean_diff == pytest.approx(1.0)
    single = paired_difference([1.0, nan], [0.5, 0.0])
    assert single.n == 1 and math.isnan(single.p_value)
    with pytest.raises(ValueError):
        paired_difference([1.0, 2.0], [1.0])


def test_paired_auroc_difference() -> None:
    # 10 trojaned then 10 clean. Tool a separates perfectly (AUROC 1); tool b puts
    # positives at k and negatives at k + 0.5 (AUROC 45/100, see above): diff 0.55
    labels = np.r_[np.ones(10, int), np.zeros(10, int)]
    a = labels + 0.01 * np.arange(20)
    k = np.arange(1.0, 11.0)
    b = np.r_[k, k + 0.5]
    res = paired_auroc_difference(a, b, labels, n_resamples=N_RES)
    assert res.mean_diff == pytest.approx(0.55)
    assert 0.0 < res.lo < 0.55 < res.hi
    assert res.n == 20
    assert res.p_value < 0.01
    again = paired_auroc_difference(a, b, labels, n_resamples=N_RES)
    assert again == res


def test_paired_auroc_difference_identical_and_undefined() -> None:
    labels = [1, 1, 0, 0, 1, 0]
    s = [0.9, 0.3, 0.4, 0.1, 0.6, 0.5]
    res = paired_auroc_difference(s, s, labels, n_resamples=N_RES)
    # every resampled difference is exactly 0 -> interval [0, 0], p = min(1, 2*1) = 1
    assert (res.mean_diff, res.lo, res.hi, res.p_value) == (0.0, 0.0, 0.0, 1.0)
    none = paired_auroc_difference([0.1, 0.2], [0.3, 0.4], [0, 0])
    assert none.n == 2 and math.isnan(none.mean_diff) and math.isnan(none.p_value)


def test_stratified_ci_batched_and_one_by_one_agree() -> None:
    """The same resamples scored at once or one at a time give the same interval,
    and a perfect separator's interval is a point."""
    from samecurve.metrics import aupr
    from samecurve.metrics.detection import aupr_batch
    from samecurve.run.stats import stratified_ci

    rng = np.random.default_rng(0)
    y = np.r_[np.ones(8, int), np.zeros(12, int)]
    s = rng.random(20) + 0.3 * y
    slow = stratified_ci(aupr, s, y, n_resamples=300)
    fast = stratified_ci(aupr, s, y, n_resamples=300, batched=aupr_batch)
    assert (slow.mean, slow.lo, slow.hi, slow.n) == pytest.approx((fast.mean, fast.lo, fast.hi, 20))
    assert slow.lo < slow.mean < slow.hi
    perfect = stratified_ci(aupr, y.astype(float), y, batched=aupr_batch)
    assert (perfect.lo, perfect.mean, perfect.hi) == (1.0, 1.0, 1.0)

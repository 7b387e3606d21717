"""No number without its spread: bootstrap intervals and paired comparisons.

Conventions:
- Intervals are two-sided at `confidence`; the point estimate is always the
  statistic on the full data, never a bootstrap average.
- All randomness comes from `np.random.default_rng(seed)`, so a call is
  deterministic for a seed.
- Per-cell values that are NaN ("not attempted"/undefined) are dropped before
  averaging, and `n` counts only what was kept.
- Values equal up to float rounding (spread <= 1e-12 relative) count as constant:
  the interval collapses to the mean rather than asking the bootstrap about a
  degenerate distribution.
- One-sample intervals use BCa and fall back to the percentile method when BCa
  is undefined (degenerate bootstrap distribution).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import DegenerateDataWarning, bootstrap, rankdata, wilcoxon

from samecurve.metrics.detection import _as_scores_labels, auroc

__all__ = [
    "Interval",
    "PairedComparison",
    "auroc_ci",
    "mean_ci",
    "paired_auroc_difference",
    "paired_difference",
]

ArrayLike = Sequence[float] | np.ndarray
LabelLike = Sequence[int] | np.ndarray

_NAN = float("nan")


@dataclass(frozen=True)
class Interval:
    """A point estimate with its confidence interval and the number of values behind it."""

    mean: float
    lo: float
    hi: float
    n: int
    positives: int | None = None  # for a population metric: how many of the n are trojaned

    def __str__(self) -> str:
        return f"{self.mean:.3f} [{self.lo:.3f}, {self.hi:.3f}] n={self.n}"


@dataclass(frozen=True)
class PairedComparison:
    """Difference a - b on the same subjects, its interval, and a two-sided p-value."""

    mean_diff: float
    lo: float
    hi: float
    n: int
    p_value: float

    def __str__(self) -> str:
        return (
            f"{self.mean_diff:+.3f} [{self.lo:+.3f}, {self.hi:+.3f}] n={self.n} "
            f"p={self.p_value:.3g}"
        )


def _check_params(confidence: float, n_resamples: int) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if int(n_resamples) < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")


def _is_constant(x: np.ndarray) -> bool:
    """True when all values are equal up to float rounding."""
    return bool(np.ptp(x) <= 1e-12 * max(1.0, float(np.max(np.abs(x)))))


def _mean_stat(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x, axis=axis)


def _auc_stat(pos: np.ndarray, neg: np.ndarray, axis: int = -1) -> np.ndarray:
    """AUROC from positive and negative scores along `axis` (Mann-Whitney U with
    mid-ranks, so ties count half); vectorised over the other axes."""
    pos = np.moveaxis(np.asarray(pos, dtype=float), axis, -1)
    neg = np.moveaxis(np.asarray(neg, dtype=float), axis, -1)
    lead = np.broadcast_shapes(pos.shape[:-1], neg.shape[:-1])
    n_pos, n_neg = pos.shape[-1], neg.shape[-1]
    pos = np.broadcast_to(pos, (*lead, n_pos))
    neg = np.broadcast_to(neg, (*lead, n_neg))
    ranks = rankdata(np.concatenate([pos, neg], axis=-1), axis=-1)
    u = ranks[..., :n_pos].sum(axis=-1) - n_pos * (n_pos + 1) / 2.0
    return u / (n_pos * n_neg)


def _bootstrap_ci(
    data: tuple[np.ndarray, ...],
    statistic: Callable[..., np.ndarray],
    confidence: float,
    n_resamples: int,
    seed: int,
) -> tuple[float, float]:
    """scipy BCa interval (independent samples), percentile when BCa is undefined.

    The percentile fallback reuses the same bootstrap distribution."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = bootstrap(
            data,
            statistic,
            n_resamples=int(n_resamples),
            vectorized=True,
            paired=False,
            axis=-1,
            confidence_level=confidence,
            method="BCa",
            rng=np.random.default_rng(seed),
        )
    lo, hi = (float(v) for v in res.confidence_interval)
    degenerate = any(issubclass(w.category, DegenerateDataWarning) for w in caught)
    if degenerate or not (np.isfinite(lo) and np.isfinite(hi)):
        res = bootstrap(
            data,
            statistic,
            n_resamples=0,
            vectorized=True,
            paired=False,
            axis=-1,
            confidence_level=confidence,
            method="percentile",
            bootstrap_result=res,
            rng=np.random.default_rng(seed),
        )
        lo, hi = (float(v) for v in res.confidence_interval)
    else:
        for w in caught:  # BCa was fine: pass on anything unrelated it said
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return lo, hi


def _percentile_ci(dist: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = 1.0 - confidence
    lo, hi = np.quantile(dist, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(lo), float(hi)


def _stratified_aucs(
    score_sets: Sequence[np.ndarray], y: np.ndarray, n_resamples: int, seed: int
) -> list[np.ndarray]:
    """Bootstrap AUROCs of each score vector with one shared stratified resampling:
    positives and negatives are resampled separately (class counts kept), and the
    same subject indices are used for every score vector (paired)."""
    ip, ineg = _stratified_draws(y, n_resamples, seed)
    return [_auc_stat(s[ip], s[ineg]) for s in score_sets]


def _stratified_draws(y: np.ndarray, n_resamples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(n_resamples, n_pos) and (n_resamples, n_neg) indices: each class resampled
    with replacement on its own, so every resample keeps the class counts."""
    rng = np.random.default_rng(seed)
    pos_idx, neg_idx = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    ip = pos_idx[rng.integers(0, pos_idx.size, size=(int(n_resamples), pos_idx.size))]
    ineg = neg_idx[rng.integers(0, neg_idx.size, size=(int(n_resamples), neg_idx.size))]
    return ip, ineg


def mean_ci(
    values: ArrayLike,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> Interval:
    """Mean of the non-NaN values with a bootstrap (BCa, else percentile) interval.

    n == 0 gives all-NaN; one value or constant values give lo == hi == mean."""
    _check_params(confidence, n_resamples)
    x = np.asarray(values, dtype=float).reshape(-1)
    x = x[~np.isnan(x)]
    if np.any(np.isinf(x)):
        raise ValueError("values contain infinities; only NaN (missing) is dropped")
    n = int(x.size)
    if n == 0:
        return Interval(_NAN, _NAN, _NAN, 0)
    mean = float(np.mean(x))
    if n == 1 or _is_constant(x):
        return Interval(mean, mean, mean, n)
    lo, hi = _bootstrap_ci((x,), _mean_stat, confidence, n_resamples, seed)
    return Interval(mean, lo, hi, n)


def auroc_ci(
    scores: ArrayLike,
    labels: LabelLike,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> Interval:
    """AUROC with a stratified bootstrap interval (trojaned and clean models
    resampled separately, so every resample keeps both classes and their counts).

    n is the number of subjects; one class missing gives NaNs. With a single
    model in a class, a percentile interval over the other class's resamples."""
    _check_params(confidence, n_resamples)
    s, y = _as_scores_labels(scores, labels)
    n = int(s.size)
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == n:
        return Interval(_NAN, _NAN, _NAN, n, n_pos)
    point = auroc(s, y)
    pos, neg = s[y == 1], s[y == 0]
    if pos.size >= 2 and neg.size >= 2:
        lo, hi = _bootstrap_ci((pos, neg), _auc_stat, confidence, n_resamples, seed)
    else:  # scipy needs >= 2 observations per sample
        (dist,) = _stratified_aucs([s], y, n_resamples, seed)
        lo, hi = _percentile_ci(dist, confidence)
    return Interval(point, lo, hi, n, n_pos)


def paired_difference(
    a: ArrayLike,
    b: ArrayLike,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> PairedComparison:
    """Mean of a[i] - b[i] over subjects where both are defined, with a bootstrap
    interval of the differences (as `mean_ci`) and a two-sided Wilcoxon
    signed-rank p-value (1.0 when every difference is zero, NaN when n < 2)."""
    _check_params(confidence, n_resamples)
    xa = np.asarray(a, dtype=float).reshape(-1)
    xb = np.asarray(b, dtype=float).reshape(-1)
    if xa.shape != xb.shape:
        raise ValueError(f"a and b differ in length: {xa.size} vs {xb.size}")
    keep = ~(np.isnan(xa) | np.isnan(xb))
    d = xa[keep] - xb[keep]
    ci = mean_ci(d, confidence=confidence, n_resamples=n_resamples, seed=seed)
    n = ci.n
    if n < 2:
        p = _NAN
    elif np.all(d == 0):
        p = 1.0
    else:
        p = float(wilcoxon(d, alternative="two-sided").pvalue)
    return PairedComparison(ci.mean, ci.lo, ci.hi, n, p)


def paired_auroc_difference(
    scores_a: ArrayLike,
    scores_b: ArrayLike,
    labels: LabelLike,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> PairedComparison:
    """auroc(a) - auroc(b) on the same subjects, with a stratified paired bootstrap
    (subjects resampled within each class, the same draw applied to both tools)
    percentile interval and a two-sided bootstrap p-value
    2 * min(P(diff* <= 0), P(diff* >= 0)), capped at 1."""
    _check_params(confidence, n_resamples)
    sa, y = _as_scores_labels(scores_a, labels, what="scores_a")
    sb, _ = _as_scores_labels(scores_b, labels, what="scores_b")
    n = int(y.size)
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == n:
        return PairedComparison(_NAN, _NAN, _NAN, n, _NAN)
    point = auroc(sa, y) - auroc(sb, y)
    auc_a, auc_b = _stratified_aucs([sa, sb], y, n_resamples, seed)
    diffs = auc_a - auc_b
    lo, hi = _percentile_ci(diffs, confidence)
    p = min(1.0, 2.0 * min(float(np.mean(diffs <= 0)), float(np.mean(diffs >= 0))))
    return PairedComparison(float(point), lo, hi, n, p)


def stratified_ci(
    statistic: Callable[[np.ndarray, np.ndarray], float],
    scores: ArrayLike,
    labels: LabelLike,
    confidence: float = 0.95,
    n_resamples: int = 1000,
    seed: int = 0,
    batched: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> Interval:
    """Any population detection metric `statistic(scores, labels)` with a stratified
    percentile bootstrap (trojaned and clean subjects resampled separately), the
    way `auroc_ci` treats AUROC; for AUPR, FPR@95%TPR and Brier. `batched`, the same
    metric over the rows of (B, n) arrays, scores every resample at once (a report
    draws thousands of these; one call each took minutes)."""
    _check_params(confidence, n_resamples)
    s, y = _as_scores_labels(scores, labels)
    n = int(s.size)
    if y.sum() in (0, n):
        return Interval(_NAN, _NAN, _NAN, n)
    point = float(statistic(s, y))
    idx = np.concatenate(_stratified_draws(y, n_resamples, seed), axis=1)
    if batched is not None:
        dist = np.asarray(batched(s[idx], y[idx]), dtype=float)
    else:
        dist = np.array([statistic(s[row], y[row]) for row in idx])
    lo, hi = _percentile_ci(dist, confidence)
    return Interval(point, lo, hi, n)

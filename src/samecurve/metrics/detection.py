"""Detection metrics over a population of models.

Convention: label 1 = trojaned, 0 = clean; a higher score means "more likely
trojaned". Every metric returns a plain float and returns NaN, rather than
raising or guessing, when it is undefined for the population it was given
(no subjects, or only one class present). Non-finite scores are a bug in the
caller (a missing answer must be replaced by its floor before grading), so
they raise.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

__all__ = [
    "aupr", "aupr_batch", "auroc", "brier", "brier_batch", "fpr_at_tpr", "fpr_at_tpr_batch"
]

ArrayLike = Sequence[float] | np.ndarray
LabelLike = Sequence[int] | np.ndarray


def _as_scores_labels(
    scores: ArrayLike, labels: LabelLike, what: str = "scores"
) -> tuple[np.ndarray, np.ndarray]:
    """Validate and flatten (scores, labels): equal length, finite scores, 0/1 labels."""
    s = np.asarray(scores, dtype=float).reshape(-1)
    y = np.asarray(labels).reshape(-1)
    if s.shape != y.shape:
        raise ValueError(f"{what} and labels differ in length: {s.shape[0]} vs {y.shape[0]}")
    if not np.all(np.isfinite(s)):
        raise ValueError(
            f"{what} contain NaN or infinite values; replace missing answers by their floor "
            "before grading"
        )
    if y.size and not np.all((y == 0) | (y == 1)):
        raise ValueError(f"labels must be 0 (clean) or 1 (trojaned); got {np.unique(y)}")
    return s, y.astype(int)


def _both_classes(y: np.ndarray) -> bool:
    return y.size > 0 and 0 < int(y.sum()) < y.size


def auroc(scores: ArrayLike, labels: LabelLike) -> float:
    """Area under the ROC curve: the chance a random trojaned model outscores a
    random clean one, ties counted as half. NaN if either class is missing."""
    s, y = _as_scores_labels(scores, labels)
    if not _both_classes(y):
        return float("nan")
    return float(roc_auc_score(y, s))


def aupr(scores: ArrayLike, labels: LabelLike) -> float:
    """Average precision with trojaned (1) as the positive class (sklearn's
    step-wise sum, no interpolation). NaN if either class is missing."""
    s, y = _as_scores_labels(scores, labels)
    if not _both_classes(y):
        return float("nan")
    return float(average_precision_score(y, s))


def fpr_at_tpr(scores: ArrayLike, labels: LabelLike, tpr: float = 0.95) -> float:
    """The smallest false-positive rate over all thresholds whose true-positive
    rate reaches `tpr` (>=): how many clean models one must flag to catch that
    share of the trojaned ones. Lower is better. NaN if either class is missing."""
    if not 0.0 <= tpr <= 1.0:
        raise ValueError(f"tpr must be in [0, 1], got {tpr}")
    s, y = _as_scores_labels(scores, labels)
    if not _both_classes(y):
        return float("nan")
    fprs, tprs, _ = roc_curve(y, s, drop_intermediate=False)
    # tprs[-1] == 1.0 always, so the selection is never empty; the tolerance only
    # absorbs float rounding in k / n_positive.
    return float(np.min(fprs[tprs >= tpr - 1e-12]))


def brier(probs: ArrayLike, labels: LabelLike) -> float:
    """Mean squared error between the stated trojan probability and the 0/1 label.
    Lower is better; defined with one class present too. NaN if empty."""
    p, y = _as_scores_labels(probs, labels, what="probabilities")
    if np.any((p < 0.0) | (p > 1.0)):
        bad = p[(p < 0.0) | (p > 1.0)]
        raise ValueError(f"probabilities must lie in [0, 1]; got {bad[:5].tolist()}")
    if p.size == 0:
        return float("nan")
    return float(np.mean((p - y) ** 2))


# ------------------------------------------------- batched, for bootstrap resamples


def _ranked(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows sorted by descending score: labels in that order, whether each position
    closes a group of tied scores (a threshold), and the running true positives."""
    order = np.argsort(-scores, axis=1, kind="stable")
    s = np.take_along_axis(scores, order, axis=1)
    y = np.take_along_axis(labels, order, axis=1).astype(float)
    last = np.ones_like(s, dtype=bool)
    last[:, :-1] = s[:, 1:] != s[:, :-1]
    return y, last, np.cumsum(y, axis=1)


def aupr_batch(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """`aupr` of every row of (B, n) scores and 0/1 labels, each row holding both
    classes: the recall gained at each threshold times the precision there."""
    y, last, tp = _ranked(np.asarray(scores, float), np.asarray(labels))
    n = y.shape[1]
    precision = tp / np.arange(1, n + 1)
    # every position takes the precision at the end of its tie group
    end = np.where(last, np.arange(n), n)
    end = np.minimum.accumulate(end[:, ::-1], axis=1)[:, ::-1]
    at_end = np.take_along_axis(precision, end, axis=1)
    return (y * at_end).sum(1) / y.sum(1)


def fpr_at_tpr_batch(scores: np.ndarray, labels: np.ndarray, tpr: float = 0.95) -> np.ndarray:
    """`fpr_at_tpr` of every row of (B, n) scores and 0/1 labels (both classes in each)."""
    y, last, tp = _ranked(np.asarray(scores, float), np.asarray(labels))
    n = y.shape[1]
    positives = y.sum(1, keepdims=True)
    fp = np.arange(1, n + 1) - tp
    rates = np.where(last & (tp / positives >= tpr - 1e-12), fp / (n - positives), np.inf)
    best = rates.min(1)
    return np.where(tpr <= 0, 0.0, best)


def brier_batch(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """`brier` of every row of (B, n) probabilities and 0/1 labels."""
    return ((np.asarray(probs, float) - np.asarray(labels, float)) ** 2).mean(1)

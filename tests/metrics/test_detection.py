"""Detection metrics against values worked out by hand."""

import math

import numpy as np
import pytest

from samecurve.metrics import aupr, auroc, brier, fpr_at_tpr


def test_auroc_hand_example() -> None:
    # positives {0.35, 0.8}, negatives {0.1, 0.4}: of the 4 (pos, neg) pairs,
    # 0.35>0.1, 0.8>0.1, 0.8>0.4 are won and 0.35<0.4 is lost -> 3/4.
    assert auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)


def test_auroc_perfect_and_reversed() -> None:
    assert auroc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == pytest.approx(1.0)
    assert auroc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == pytest.approx(0.0)


def test_auroc_ties_count_half() -> None:
    # all tied: the single pair is worth 1/2
    assert auroc([0.5, 0.5], [0, 1]) == pytest.approx(0.5)
    # positives {0.5, 0.9}, negatives {0.2, 0.5}: pairs won 1 + 0.5 (tie) + 1 + 1 = 3.5 of 4
    assert auroc(np.array([0.2, 0.5, 0.5, 0.9]), np.array([0, 0, 1, 1])) == pytest.approx(0.875)


def test_undefined_populations_give_nan() -> None:
    for f in (auroc, aupr, fpr_at_tpr):
        assert math.isnan(f([0.1, 0.9], [1, 1]))
        assert math.isnan(f([0.1, 0.9], [0, 0]))
        assert math.isnan(f([], []))
    assert math.isnan(brier([], []))


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="length"):
        auroc([0.1, 0.2, 0.3], [0, 1])
    with pytest.raises(ValueError, match="NaN"):
        auroc([0.1, float("nan")], [0, 1])
    with pytest.raises(ValueError, match="labels"):
        auroc([0.1, 0.2], [0, 2])


def test_aupr_hand_example() -> None:
    # ranked by score: 1, 0, 1, 0. Recall steps to 1/2 at rank 1 (precision 1/1) and
    # to 1 at rank 3 (precision 2/3): AP = 0.5*1 + 0.5*(2/3) = 5/6.
    assert aupr([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0]) == pytest.approx(5 / 6)
    assert aupr([0.9, 0.8, 0.2, 0.1], [1, 1, 0, 0]) == pytest.approx(1.0)


def test_fpr_at_tpr_hand_example() -> None:
    # positives {0.9, 0.6}, negatives {0.7, 0.2}. Catching both positives needs a
    # threshold <= 0.6, which also flags the negative at 0.7: FPR 1/2.
    scores, labels = [0.9, 0.6, 0.7, 0.2], [1, 1, 0, 0]
    assert fpr_at_tpr(scores, labels) == pytest.approx(0.5)
    assert fpr_at_tpr(scores, labels, tpr=1.0) == pytest.approx(0.5)
    # catching half (the 0.9) flags no negative
    assert fpr_at_tpr(scores, labels, tpr=0.5) == pytest.approx(0.0)


def test_fpr_at_tpr_exact_boundary() -> None:
    # 20 positives at 1..20, negatives at 0 and 1.5. 19/20 = 0.95 exactly reaches the
    # default tpr with threshold 2, above both negatives -> FPR 0; all 20 need
    # threshold 1, which flags the negative at 1.5 -> FPR 1/2.
    pos = np.arange(1.0, 21.0)
    scores = np.r_[pos, [0.0, 1.5]]
    labels = np.r_[np.ones(20, int), [0, 0]]
    assert fpr_at_tpr(scores, labels, tpr=0.95) == 0.0
    assert fpr_at_tpr(scores, labels, tpr=1.0) == pytest.approx(0.5)


def test_fpr_at_tpr_rejects_bad_tpr() -> None:
    with pytest.raises(ValueError):
        fpr_at_tpr([0.1, 0.9], [0, 1], tpr=1.5)


def test_brier_hand_example() -> None:
    # (0.9-1)^2 = 0.01, (0.2-0)^2 = 0.04 -> mean 0.025
    assert brier([0.9, 0.2], [1, 0]) == pytest.approx(0.025)
    # one class is fine for Brier: (0.5-1)^2 = 0.25
    assert brier([0.5], [1]) == pytest.approx(0.25)


def test_brier_rejects_out_of_range() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        brier([1.3, 0.2], [1, 0])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        brier([-0.1], [0])


@pytest.mark.parametrize("seed", range(4))
def test_batched_metrics_agree_with_the_scalar_ones_row_by_row(seed: int) -> None:
    """The bootstrap's batched forms give what the sklearn-backed metrics give on each
    resample, ties included (scores drawn from few values, so many tie)."""
    from samecurve.metrics.detection import aupr_batch, brier_batch, fpr_at_tpr_batch

    rng = np.random.default_rng(seed)
    labels = np.tile(np.r_[np.ones(7, int), np.zeros(11, int)], (200, 1))
    labels = rng.permuted(labels, axis=1)
    scores = rng.integers(0, 5, size=labels.shape) / 4  # in [0, 1], heavily tied
    ap, sq = aupr_batch(scores, labels), brier_batch(scores, labels)
    fprs = {t: fpr_at_tpr_batch(scores, labels, t) for t in (0.0, 0.5, 0.95, 1.0)}
    for row, (s, y) in enumerate(zip(scores, labels, strict=True)):
        assert ap[row] == pytest.approx(aupr(s, y), abs=1e-12)
        assert sq[row] == pytest.approx(brier(s, y), abs=1e-12)
        for tpr, got in fprs.items():
            assert got[row] == pytest.approx(fpr_at_tpr(s, y, tpr), abs=1e-12), (row, tpr)

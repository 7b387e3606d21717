"""Replace metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from samecurve.metrics.replace import (
    agreement,
    exactly_equivalent,
    masked_agreement,
    outcome,
    size_ratio,
    whole_agreement,
)


def test_agreement_pools_groups_of_different_shapes() -> None:
    a1, b1 = np.array([1, 0, 1, 1]), np.array([1, 1, 1, 1])  # 3 of 4
    a2, b2 = np.array([[0, 0], [1, 1]]), np.array([[0, 1], [1, 1]])  # 3 of 4
    assert agreement([(a1, b1), (a2, b2)]) == pytest.approx(6 / 8)
    assert math.isnan(agreement([]))


def test_whole_agreement_counts_sequences_right_at_every_position() -> None:
    a, b = np.array([[0, 0], [1, 1], [1, 0]]), np.array([[0, 0], [1, 0], [1, 0]])
    assert whole_agreement([(a, b)]) == pytest.approx(2 / 3)


def test_masked_agreement_only_where_the_mask_holds() -> None:
    a, b = np.array([1, 0, 1, 0]), np.array([1, 1, 1, 1])
    assert masked_agreement([(a, b)], [np.array([False, True, True, False])]) == 0.5
    assert math.isnan(masked_agreement([(a, b)], [np.zeros(4, bool)]))


def test_exact_equivalence_needs_every_group_and_at_least_one() -> None:
    same = (np.array([1, 2]), np.array([1, 2]))
    assert exactly_equivalent([same, same])
    assert not exactly_equivalent([same, (np.array([1]), np.array([0]))])
    assert not exactly_equivalent([])


def test_size_ratio_and_outcome() -> None:
    assert size_ratio(30, 15) == 2.0
    with pytest.raises(ValueError, match="positive"):
        size_ratio(3, 0)
    assert [outcome(False, False), outcome(True, True), outcome(True, False)] == [
        "no answer", "solved", "wrong"]

"""The edit metrics against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from samecurve.metrics.edit import accuracy, changed_rate, der, repaired


def test_accuracy_by_hand() -> None:
    assert accuracy(np.array([1, 2, 3, 4]), np.array([1, 2, 0, 0])) == 0.5
    assert accuracy(torch.tensor([0, 0, 0]), torch.tensor([0, 0, 1])) == pytest.approx(2 / 3)
    assert math.isnan(accuracy(np.array([]), np.array([])))
    with pytest.raises(ValueError, match="differ in length"):
        accuracy(np.array([1, 2]), np.array([1]))


def test_changed_rate_counts_flipped_predictions() -> None:
    # 5 inputs, predictions 2 and 4 changed.
    assert changed_rate(np.array([0, 1, 2, 3, 4]), np.array([0, 9, 2, 9, 4])) == pytest.approx(0.4)
    assert changed_rate(np.array([3, 3]), np.array([3, 3])) == 0.0


def test_der_subtracts_the_accuracy_drop() -> None:
    # ASR 0.95 -> 0.05 (drop 0.90), accuracy 0.91 -> 0.89 (drop 0.02):
    # (0.90 - 0.02 + 1) / 2 = 0.94. The flipped-sign helper would give 0.96.
    assert der(0.95, 0.05, 0.91, 0.89) == pytest.approx(0.94)
    # An accuracy gain and an ASR rise are both clipped at zero: nothing changed.
    assert der(0.5, 0.7, 0.80, 0.85) == pytest.approx(0.5)
    assert der(1.0, 0.0, 0.9, 0.9) == 1.0
    assert der(1.0, 1.0, 1.0, 0.0) == 0.0
    assert math.isnan(der(float("nan"), 0.0, 0.9, 0.9))


def test_repaired_is_the_issue_bar() -> None:
    assert repaired(0.019, 0.009) == 1.0
    assert repaired(0.02, 0.0) == 0.0  # strictly under 2%
    assert repaired(0.0, 0.01) == 0.0  # strictly under one point
    assert repaired(0.0, -0.05) == 1.0  # an accuracy gain is no drop
    assert math.isnan(repaired(float("nan"), 0.0))

"""Predict metrics against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from samecurve.metrics.predict import agreement, target_false_alarm, target_recall

# Five inputs; target class 2. True labels, the model's outputs, a predictor's.
LABELS = np.array([0, 1, 2, 3, 4])
MODEL = np.array([2, 2, 2, 3, 1])  # sends inputs 0 and 1 (not of class 2) to the target
PRED = np.array([2, 0, 2, 2, 1])


def test_agreement_by_hand() -> None:
    assert agreement(PRED, MODEL) == pytest.approx(3 / 5)  # inputs 0, 2, 4


def test_target_recall_by_hand() -> None:
    # eligible: inputs 0, 1 (class != 2, model says 2); predictor says 2 on input 0 only
    assert target_recall(PRED, MODEL, LABELS, 2) == pytest.approx(1 / 2)


def test_target_false_alarm_by_hand() -> None:
    # eligible: inputs 3, 4 (class != 2, model does not say 2); predictor says 2 on input 3
    assert target_false_alarm(PRED, MODEL, LABELS, 2) == pytest.approx(1 / 2)


def test_always_target_has_full_recall_and_full_false_alarm() -> None:
    always = np.full(5, 2)
    assert target_recall(always, MODEL, LABELS, 2) == 1.0
    assert target_false_alarm(always, MODEL, LABELS, 2) == 1.0


def test_nothing_eligible_is_nan_and_lengths_must_match() -> None:
    assert math.isnan(target_recall(PRED, LABELS, LABELS, 2))  # the model never errs to 2
    assert math.isnan(agreement(np.array([]), np.array([])))
    with pytest.raises(ValueError, match="differ in length"):
        agreement(PRED, MODEL[:3])

"""Per-subject metrics of the predict family: how often a Predictor says in advance
what the model outputs, and, on trojaned subjects, whether it foresees which
inputs the model sends to the planted target.

Conventions as in metrics/edit.py: 1-D integer predictions, rates in [0, 1],
NaN for an empty input, never a made-up score."""

from __future__ import annotations

import numpy as np

from samecurve.metrics.edit import ArrayLike, _flat, accuracy

__all__ = ["agreement", "target_false_alarm", "target_recall"]


def agreement(predicted: ArrayLike, model_output: ArrayLike) -> float:
    """Share of inputs where the Predictor's label is the model's own label."""
    return accuracy(predicted, model_output)


def _eligible(model_output: ArrayLike, labels: ArrayLike, target: int, sent: bool) -> np.ndarray:
    out, y = _flat(model_output), _flat(labels)
    return (y != target) & ((out == target) == sent)


def target_recall(
    predicted: ArrayLike, model_output: ArrayLike, labels: ArrayLike, target: int
) -> float:
    """Of the inputs of other classes that the model sends to `target`, the share the
    Predictor said would go there ("this input will be sent to the target")."""
    keep = _eligible(model_output, labels, target, sent=True)
    return float(np.mean(_flat(predicted)[keep] == target)) if keep.any() else float("nan")


def target_false_alarm(
    predicted: ArrayLike, model_output: ArrayLike, labels: ArrayLike, target: int
) -> float:
    """Of the inputs of other classes that the model does not send to `target`, the
    share the Predictor said would go there: recall bought by crying wolf shows here."""
    keep = _eligible(model_output, labels, target, sent=False)
    return float(np.mean(_flat(predicted)[keep] == target)) if keep.any() else float("nan")

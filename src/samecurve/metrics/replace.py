"""Replace-family scores as pure functions over output arrays. Outputs come in
groups (sequences of different lengths cannot share one array), so every
function takes a list of (program, reference) array pairs and pools them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

NAN = float("nan")
Groups = Sequence[tuple[np.ndarray, np.ndarray]]


def agreement(groups: Groups) -> float:
    """Share of outputs (every position of every sequence) on which the two agree;
    NaN when there are none."""
    same = sum(int((np.asarray(a) == np.asarray(b)).sum()) for a, b in groups)
    total = sum(int(np.asarray(a).size) for a, _ in groups)
    return same / total if total else NAN


def whole_agreement(groups: Groups) -> float:
    """Share of inputs whose every output agrees (a sequence right at every position)."""
    same = total = 0
    for a, b in groups:
        a, b = np.asarray(a), np.asarray(b)
        eq = a == b
        rows = eq.reshape(len(eq), -1).all(1) if eq.size else np.zeros(0, bool)
        same += int(rows.sum())
        total += len(rows)
    return same / total if total else NAN


def masked_agreement(groups: Groups, masks: Sequence[np.ndarray]) -> float:
    """Agreement restricted to the outputs where `mask` is True (e.g. where the
    network departs from the hidden program); NaN when the mask is empty."""
    picked = [(np.asarray(a)[m], np.asarray(b)[m]) for (a, b), m in zip(groups, masks, strict=True)]
    return agreement(picked)


def exactly_equivalent(groups: Groups) -> bool:
    """The program and the reference agree on every input of the test set."""
    return bool(groups) and all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in groups)


def size_ratio(size: int, truth_size: int) -> float:
    """A program's size over the hidden program's (1 = as short as ours)."""
    if truth_size <= 0:
        raise ValueError(f"the hidden program's size must be positive, got {truth_size}")
    return size / truth_size


def outcome(answered: bool, exact: bool) -> str:
    """Strict solve outcome: "solved", "wrong" or "no answer" (counted apart)."""
    if not answered:
        return "no answer"
    return "solved" if exact else "wrong"

"""Combinations of tools, graded like any tool: an ensemble runs its members on
the same case (sharing its budget) and pools their answers. In a suite,
`ensemble(neural-cleanse, strip, activation-clustering)` is shorthand for
`{name: ensemble, params: {members: [...]}}`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from samecurve.api import CaseView, Finding
from samecurve.registry import get, register
from samecurve.tools.base import ToolBase

ENSEMBLE_SHORTHAND = re.compile(r"^\s*ensemble\s*\((?P<members>[^()]*)\)\s*$")


def parse_ensemble(text: str) -> tuple[str, ...] | None:
    """Member names of `ensemble(a, b, ...)`, or None when the text is not one."""
    match = ENSEMBLE_SHORTHAND.match(text)
    if match is None:
        return None
    return tuple(m.strip() for m in match["members"].split(",") if m.strip())


def borda(rankings: list[tuple[int, ...]], num_classes: int) -> tuple[int, ...]:
    """Classes ordered by summed rank points (first of k gets k points, unranked 0);
    ties keep the lower class first."""
    points = np.zeros(num_classes)
    for ranking in rankings:
        for place, c in enumerate(ranking):
            points[c] += len(ranking) - place
    ranked = [c for c in np.argsort(-points, kind="stable") if points[c] > 0]
    return tuple(int(c) for c in ranked)


@register("tool", "ensemble")
@dataclass(frozen=True)
class Ensemble(ToolBase):
    """Mean trojan probability of the members that answer it, a Borda count of their
    suspected targets, the first member's recovered trigger, and the mean of their
    attribution maps (each scaled to a maximum of 1). Needs and answers are the
    union of the members'."""

    kind = "combination"
    members: tuple[str, ...] = ("strip", "activation-clustering")

    def __post_init__(self) -> None:
        members = tuple(self.members)
        if len(members) < 2:
            raise ValueError(f"an ensemble needs two or more members, got {list(members)}")
        if "ensemble" in members:
            raise ValueError("an ensemble cannot contain an ensemble; list the members directly")
        tools = tuple(get("tool", m)() for m in members)
        object.__setattr__(self, "members", members)
        # Per instance: what the case must provide and what is graded depend on the members.
        object.__setattr__(self, "needs", frozenset().union(*(t.needs for t in tools)))
        object.__setattr__(self, "answers", frozenset().union(*(t.answers for t in tools)))
        object.__setattr__(self, "_tools", tools)

    def params(self) -> dict[str, Any]:
        return {"members": list(self.members)}

    def discover(self, view: CaseView) -> Finding:
        found = [t.discover(view) for t in self._tools if hasattr(t, "discover")]
        probs = [f.trojan_probability for f in found if f.trojan_probability is not None]
        rankings = [f.targets for f in found if f.targets]
        trigger = next((f.trigger for f in found if f.trigger is not None), None)
        return Finding(
            trojan_probability=float(np.mean(probs)) if probs else None,
            targets=borda(rankings, view.num_classes) if rankings else (),
            trigger=trigger,
            notes={"members_answering": float(len(probs))},
        )

    def attribute(self, view: CaseView, inputs: torch.Tensor, targets: torch.Tensor) -> np.ndarray | None:
        maps = []
        for t in self._tools:
            if "attribution" in t.answers and hasattr(t, "attribute"):
                m = t.attribute(view, inputs, targets)
                if m is not None:
                    m = np.abs(np.asarray(m, dtype=np.float32))
                    peak = m.reshape(len(m), -1).max(1).reshape(-1, *([1] * (m.ndim - 1)))
                    maps.append(m / np.maximum(peak, 1e-12))
        return np.mean(maps, axis=0) if maps else None

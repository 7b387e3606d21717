"""The three tools that check every grader: oracle (top), null (floor), random (chance)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from samecurve.api import CaseView, Finding, Trigger
from samecurve.registry import register
from samecurve.tools.base import ToolBase

ALL_ANSWERS = frozenset({"detect", "target", "trigger", "attribution"})


@register("tool", "oracle")
@dataclass(frozen=True)
class Oracle(ToolBase):
    """Reads the answer key: the ceiling every metric should reach. Never ranked."""

    kind = "oracle"
    needs = frozenset({"answer_key"})
    answers = ALL_ANSWERS

    def discover(self, view: CaseView) -> Finding:
        key = view.answer_key
        assert key is not None, "the runner gives the answer key to oracle tools only"
        if not key.trojaned:
            return Finding(trojan_probability=0.0)
        return Finding(trojan_probability=1.0, targets=(int(key.target),), trigger=key.trigger)

    def attribute(self, view: CaseView, inputs: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
        key = view.answer_key
        assert key is not None and key.trigger is not None
        # Every pixel the trigger may touch: exact for a trigger that lands in one
        # place, the whole reachable region for one that moves (the key does not say
        # where it landed in each input).
        footprint = np.asarray(key.trigger.footprint, dtype=np.float32)
        return np.repeat(footprint[None], len(inputs), axis=0)


@register("tool", "null")
@dataclass(frozen=True)
class Null(ToolBase):
    """Answers nothing: every metric must put it at the floor."""

    kind = "baseline"
    answers = ALL_ANSWERS

    def discover(self, view: CaseView) -> Finding:
        return Finding()

    def attribute(self, view: CaseView, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        return None


@register("tool", "random")
@dataclass(frozen=True)
class Random(ToolBase):
    """Guesses from the case seed alone: every metric must put it at chance."""

    kind = "baseline"
    answers = ALL_ANSWERS
    min_patch: int = 3
    max_patch: int = 8

    def discover(self, view: CaseView) -> Finding:
        rng = view.rng()
        c, h, w = view.input_shape
        size = int(rng.integers(self.min_patch, self.max_patch + 1))
        top, left = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
        mask = np.zeros((h, w), np.float32)
        mask[top : top + size, left : left + size] = 1.0
        pattern = rng.uniform(0, 1, size=(c, h, w)).astype(np.float32)
        return Finding(
            trojan_probability=float(rng.uniform()),
            targets=tuple(int(t) for t in rng.permutation(view.num_classes)),
            trigger=Trigger(mask=mask, pattern=pattern),
        )

    def attribute(self, view: CaseView, inputs: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
        _, h, w = view.input_shape
        return view.rng(1).uniform(size=(len(inputs), h, w)).astype(np.float32)

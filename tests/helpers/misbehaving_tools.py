"""Tools that break the rules on purpose, so tests can see the runner cope."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import torch

from samecurve.api import CaseView, Finding
from samecurve.registry import REGISTRY
from samecurve.tools.base import ToolBase


@dataclass(frozen=True)
class Crasher(ToolBase):
    """Raises inside discover."""

    answers = frozenset({"detect"})

    def discover(self, view: CaseView) -> Finding:
        raise RuntimeError("deliberate failure")


@dataclass(frozen=True)
class Sleeper(ToolBase):
    """Ignores its deadline: sleeps far past any test budget."""

    answers = frozenset({"detect"})
    seconds: float = 600.0

    def discover(self, view: CaseView) -> Finding:
        time.sleep(self.seconds)
        return Finding(trojan_probability=0.5)


@dataclass(frozen=True)
class Segfaulter(ToolBase):
    """Kills its own process, as a segfault or the OOM killer would."""

    answers = frozenset({"detect"})

    def discover(self, view: CaseView) -> Finding:
        os._exit(139)


@dataclass(frozen=True)
class Greedy(ToolBase):
    """Queries the model more than a query budget allows."""

    answers = frozenset({"detect"})
    needs = frozenset({"clean_data"})

    def discover(self, view: CaseView) -> Finding:
        for _ in range(1000):
            view.model(view.clean.x[:64])
        return Finding(trojan_probability=0.5)


@dataclass(frozen=True)
class Peeker(ToolBase):
    """A Predictor that runs the subject model: what the predict task must refuse."""

    kind = "interpretability"
    answers = frozenset({"predict"})
    needs = frozenset({"weights"})

    def predict(self, view: CaseView):
        _STASH["model"] = view.model  # out of the weight check's reach: module globals
        return _peek


_STASH: dict = {}


def _peek(x, labels):
    return _STASH["model"](x)


@dataclass(frozen=True)
class Copier(ToolBase):
    """A Predictor that carries a hook-free copy of the subject (the meter cannot
    see it run), nudged a little: the weight check must catch it."""

    kind = "interpretability"
    answers = frozenset({"predict"})
    needs = frozenset({"weights"})

    def predict(self, view: CaseView):
        from samecurve.tasks.edit import detached_copy

        twin = detached_copy(view.model)
        with torch.no_grad():
            for p in twin.parameters():
                p.mul_(1.01)
        return _Twin(twin)


@dataclass(frozen=True, eq=False)
class _Twin:
    net: torch.nn.Module

    def __call__(self, x, labels):
        return self.net(x)


for name, cls in [("crasher", Crasher), ("sleeper", Sleeper), ("segfaulter", Segfaulter),
                  ("greedy", Greedy), ("peeker", Peeker), ("copier", Copier)]:
    if name not in REGISTRY._items["tool"]:
        cls.name = name
        REGISTRY.add("tool", name, cls)

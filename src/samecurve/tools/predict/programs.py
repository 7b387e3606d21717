"""Predictors for hidden-program subjects (the challenge subjects of the replace
family): what will the network output on inputs nobody showed the tool?

`surrogate` (black box) is gradient-boosted trees on the decision tree's raw
features plus the hidden rule's own output, fitted to the network's answers on
the clean inputs: it leans on "the network does what the rule says" exactly as
far as the network does, and learns where it departs. `program-rule` asks a
replace tool for a program and predicts with it (run in the sandbox), deferring
to the surrogate where the surrogate expects a departure and wholly where the
tool abstained: a program read off the network (a state machine, a probed
statistic) can foresee what it does on inputs neither ever saw, as a surrogate
on window features cannot."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.ensemble import HistGradientBoostingClassifier

from samecurve.api import CaseView, Predictor, Program, tool_verbs
from samecurve.programs.domain import Domain, query
from samecurve.programs.sandbox import FAILED, ProgramFailed, run_program
from samecurve.programs.source import ProgramRejected
from samecurve.registry import get, register
from samecurve.tools.base import ToolBase
from samecurve.tools.combine import Ensemble, parse_ensemble
from samecurve.tools.replace.decision_tree import tabular
from samecurve.tools.replace.dsl import query_room


def as_array(x: Any) -> np.ndarray:
    """A batch of domain inputs (tensor or array) as the domain's numpy form."""
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


@dataclass(frozen=True, eq=False)
class TabularSurrogate:
    """A Predictor: trees on the raw features of each output and the rule's label
    there (None: only one answer was ever seen, and it is `constant`)."""

    kind: str
    trees: HistGradientBoostingClassifier | None
    constant: int = 0

    def __call__(self, x: Any, labels: Any) -> np.ndarray:
        labels = as_array(labels).astype(np.int64)
        if self.trees is None or labels.size == 0:
            return np.full_like(labels, self.constant)
        feats = surrogate_features(self.kind, as_array(x), labels)
        return self.trees.predict(feats).astype(np.int64).reshape(labels.shape)


def surrogate_features(kind: str, x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """One row per output: the decision tree's raw features and the rule's output there."""
    return np.column_stack([tabular(kind, x), np.asarray(labels).ravel()])


@dataclass(frozen=True, eq=False)
class Answered:
    """Clean inputs, the hidden rule's outputs on them and the network's."""

    x: np.ndarray
    labels: np.ndarray
    says: np.ndarray

    def part(self, rows: np.ndarray) -> Answered:
        return Answered(self.x[rows], self.labels[rows], self.says[rows])


def network_answers(view: CaseView) -> Answered:
    """The network's outputs on the view's clean inputs, cut to the query budget."""
    x = as_array(view.clean.x)
    labels = as_array(view.clean.y).astype(np.int64)
    n = query_room(view, len(x))
    x, labels = x[:n], labels[:n]
    says = query(view.model, view.domain, x, view.device).reshape(labels.shape) if n else labels
    return Answered(x, labels, says.astype(np.int64))


def fit_surrogate(kind: str, data: Answered, seed: int, max_iter: int = 200) -> TabularSurrogate:
    """Trees fitted to the network's answers (the rule's outputs a feature)."""
    if len(data.x) == 0:
        return TabularSurrogate(kind, None)
    says = data.says.ravel()
    if len(np.unique(says)) < 2:
        return TabularSurrogate(kind, None, int(says[0]))
    feats = surrogate_features(kind, data.x, data.labels)
    trees = HistGradientBoostingClassifier(max_iter=max_iter, random_state=seed)
    return TabularSurrogate(kind, trees.fit(feats, says))


def fit_tabular_surrogate(view: CaseView) -> TabularSurrogate:
    """The surrogate on every clean input the budget lets it ask about."""
    return fit_surrogate(view.domain.kind, network_answers(view), int(view.seed))


@dataclass(frozen=True, eq=False)
class ProgramPredictor:
    """A Predictor: the program's outputs, run in the sandbox; the fallback's where
    there is no program, where it crashed on an input, or on a whole batch it
    overran. With `fallback_departures`, also wherever the fallback expects the
    network to depart from the rule's output (what a surrogate learned in
    distribution, and a program of the rule cannot know)."""

    program: Program
    domain: Domain
    fallback: Predictor
    seconds: float = 60.0
    fallback_departures: bool = False

    def __call__(self, x: Any, labels: Any) -> np.ndarray:
        out = None
        if not self.program.abstains:
            with contextlib.suppress(ProgramFailed, ProgramRejected):
                out = run_program(self.program, self.domain, as_array(x), seconds=self.seconds)
        if out is not None and not out.crashes and not self.fallback_departures:
            return out.values
        backup = np.asarray(torch.as_tensor(self.fallback(x, labels)).cpu()).astype(np.int64)
        if out is None:
            return backup
        backup = backup.reshape(out.values.shape)
        use = out.values == FAILED
        if self.fallback_departures:
            use |= backup != as_array(labels).reshape(backup.shape)
        return np.where(use, backup, out.values)


@register("tool", "program-rule")
@dataclass(frozen=True)
class ProgramRule(ToolBase):
    """A replace tool's program as the predictor, deferring to the black-box
    surrogate where that expects a departure from the rule, where the program
    crashes or the tool abstained; the surrogate alone where, on held-back
    inputs, it agrees with the network clearly more often."""

    kind = "interpretability"
    needs = frozenset({"clean_data", "weights"})  # the surrogate's, and every distiller's
    answers = frozenset({"predict"})
    predicts_images = False
    predicts_programs = True

    distiller: str = "state-machine"  # a replace tool, or a portfolio "ensemble(a, b)"
    held_fraction: float = 0.2  # of the clean inputs, to check the program against a surrogate
    tolerance: float = 0.005  # how much less often it may agree there and still be kept

    def __post_init__(self) -> None:
        tool = self.distill_tool()
        if "distill" not in tool_verbs(tool):
            raise ValueError(f"program-rule's distiller {self.distiller!r} is no replace tool")
        extra = frozenset(tool.needs) - self.needs
        if extra:
            raise ValueError(f"program-rule cannot give distiller {self.distiller!r} its needs "
                             f"{sorted(extra)}; use one that needs only {sorted(self.needs)}")

    def distill_tool(self) -> Any:
        members = parse_ensemble(self.distiller)
        return Ensemble(members=members) if members else get("tool", self.distiller)()

    def predict(self, view: CaseView) -> Predictor:
        """The program, deferring to the surrogate where the surrogate expects the
        network to depart from its rule; kept if, on a held-back part of the clean
        inputs, that agrees with the network no more than `tolerance` less often
        than a surrogate fitted on the rest (else the surrogate alone). Held-back
        inputs are of the training distribution, where the two mostly tie; the
        tie goes to the program, which is what can extrapolate."""
        data = network_answers(view)
        kind, seed = view.domain.kind, int(view.seed)
        program = self.distill_tool().distill(view)
        everything = fit_surrogate(kind, data, seed)
        if program.abstains:
            return everything
        order = view.rng(53).permutation(len(data.x))
        cut = len(data.x) - int(len(data.x) * self.held_fraction)
        if cut < len(data.x):
            held = data.part(order[cut:])
            rival = fit_surrogate(kind, data.part(order[:cut]), seed)
            said = rival(held.x, held.labels)
            mine = ProgramPredictor(program, view.domain, rival, fallback_departures=True)
            if (mine(held.x, held.labels) == held.says).mean() < (said == held.says).mean() - self.tolerance:
                return everything
        return ProgramPredictor(program, view.domain, everything, fallback_departures=True)

"""Interpretability-informed predictors: a rule read off a finding, over the
black-box surrogate. `trigger-rule` wraps any discover tool in a pipeline
(`neural-cleanse>trigger-rule`): "if the recovered trigger is present, the model
answers the suspected target; else what the surrogate says". Whether a trigger is
present is decided without the model, by a small detector trained on clean
inputs against the same inputs stamped with the trigger, so the rule works for
patches, blends, filters, warps and objects alike. On text a trigger says
exactly whether it is in an input (`present`: its tokens in a row; a fronted
clause), so no detector is learned; a text trigger without `present` gets a
bag-of-tokens logistic regression trained like the image detector."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from torch import nn

from samecurve.api import CaseView, Finding, Predictor, Stamp, Trojan
from samecurve.registry import register
from samecurve.tools.base import ToolBase, clean_inputs
from samecurve.tools.predict.surrogate import (
    augmented,
    bag_of_tokens,
    fit_surrogate,
    fresh_net,
    query_set,
    text_augmented,
    token_columns,
)
from samecurve.zoo.train import finetune_steps


@dataclass(frozen=True, eq=False)
class Rule:
    """Inputs in which `detector` sees the trigger go to `target` (only those of
    class `source`, if set; never those already of the target). The detector is a
    two-way network (class 1: the trigger is there), or anything with a
    `present(x) -> (N,) bool` (a text trigger itself, a `BagDetector`)."""

    detector: Any
    target: int
    source: int | None = None

    def fires(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if isinstance(self.detector, nn.Module):
            with torch.no_grad():
                present = self.detector.eval()(x).argmax(1) == 1
        else:
            present = self.detector.present(x).to(labels.device)
        keep = labels != self.target
        if self.source is not None:
            keep &= labels == self.source
        return present & keep


@dataclass(frozen=True, eq=False)
class RulePredictor:
    """A Predictor: the first rule that fires decides, else the fallback does."""

    rules: tuple[Rule, ...]
    fallback: Predictor

    def __call__(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        out = torch.as_tensor(self.fallback(x, labels))
        out = out.argmax(1) if out.ndim == 2 else out.clone()
        decided = torch.zeros(len(x), dtype=torch.bool, device=out.device)
        for rule in self.rules:
            fire = rule.fires(x, labels).to(out.device) & ~decided
            out[fire] = rule.target
            decided |= fire
        return out


def presence_detector(
    view: CaseView, stamp: Stamp, steps: int, offset: int, reserve: float,
    min_accuracy: float = 0.9,
) -> nn.Module | None:
    """A two-way small CNN: inputs (0) against the same inputs stamped (1). The
    negatives include generically augmented inputs, so noise or a stray patch is
    not taken for the trigger. None when it cannot tell a held-back fifth of the
    clean inputs from their stamped selves (balanced accuracy < `min_accuracy`,
    e.g. no time was left to train it): a rule that cannot see its trigger is no rule."""
    x = clean_inputs(view)
    cut = max(1, len(x) * 4 // 5)
    fit, held = x[:cut], x[cut:]
    unlabelled = torch.zeros(len(fit), dtype=torch.long)
    aug, _ = augmented(fit.cpu(), unlabelled, 1, view.generator(offset))
    negatives = torch.cat([fit, aug.to(view.device)])
    both = torch.cat([negatives, stamp.stamp(negatives)])
    y = torch.cat([torch.zeros(len(negatives)), torch.ones(len(negatives))]).long().to(view.device)
    net = fresh_net(view, 2, offset)
    finetune_steps(net, both, y, steps, lr=2e-3, batch_size=64, generator=view.generator(offset),
                   time_left=lambda: view.time_left() - reserve * view.budget.seconds)
    with torch.no_grad():
        net.eval()
        seen = (net(held).argmax(1) == 0).float().mean() + (net(stamp.stamp(held)).argmax(1) == 1).float().mean()
    return net if len(held) and float(seen) / 2 >= min_accuracy else None


@dataclass(frozen=True, eq=False)
class BagDetector:
    """Text: whether a trigger is in each row of token ids, by a logistic regression
    on bags of token ids (`columns`: the ids it counts)."""

    classifier: LogisticRegression
    columns: np.ndarray

    def present(self, x: torch.Tensor) -> torch.Tensor:
        if not len(x):
            return torch.zeros(0, dtype=torch.bool)
        return torch.as_tensor(self.classifier.predict(bag_of_tokens(x, self.columns)) == 1)


def text_presence_detector(
    view: CaseView, stamp: Stamp, offset: int, min_accuracy: float = 0.9
) -> Any:
    """A text trigger's own `present` where it has one; else a `BagDetector` trained
    like `presence_detector` (inputs and edited copies against the same stamped),
    None when it cannot tell a held-back fifth of the clean inputs from their
    stamped selves."""
    if callable(getattr(stamp, "present", None)):
        return stamp
    x = clean_inputs(view).cpu()
    cut = max(1, len(x) * 4 // 5)
    fit, held = x[:cut], x[cut:]
    if not len(held):
        return None
    edited, _ = text_augmented(fit, torch.zeros(len(fit), dtype=torch.long), 1, view.generator(offset))
    negatives = torch.cat([fit, edited])
    both = torch.cat([negatives, stamp.stamp(negatives)])
    y = np.r_[np.zeros(len(negatives)), np.ones(len(negatives))]
    columns = token_columns(both)
    detector = BagDetector(LogisticRegression(C=10.0, max_iter=300).fit(bag_of_tokens(both, columns), y),
                           columns)
    seen = (~detector.present(held)).float().mean() + detector.present(stamp.stamp(held)).float().mean()
    return detector if float(seen) / 2 >= min_accuracy else None


def rule_predictor(
    view: CaseView, trojans: Sequence[Trojan], *, rounds: int, steps: int, detector_steps: int,
) -> RulePredictor:
    """Rules for these trojans over a surrogate; the surrogate is fitted first, so a
    tight budget still leaves the black-box answer."""
    fallback = fit_surrogate(view, query_set(view, rounds), steps, 2e-3, 0.15)
    if view.modality == "text":
        detectors = [text_presence_detector(view, t.trigger, 41 + i) for i, t in enumerate(trojans)]
    else:
        detectors = [presence_detector(view, t.trigger, detector_steps, 41 + i, 0.05)
                     for i, t in enumerate(trojans)]
    rules = tuple(Rule(d, t.target, t.source)
                  for d, t in zip(detectors, trojans, strict=True) if d is not None)
    return RulePredictor(rules, fallback)


def suspects(found: Finding | None, min_probability: float) -> bool:
    """Whether an earlier stage's finding is one to act on: a trigger and a target, and
    a trojan probability of at least `min_probability` (or none given)."""
    if found is None or found.trigger is None or not found.targets:
        return False
    p = found.trojan_probability
    return p is None or p >= min_probability


@register("tool", "trigger-rule")
@dataclass(frozen=True)
class TriggerRule(ToolBase):
    """The earlier stage's trigger and top target as a rule over the surrogate. Acts
    only on a finding that suspects a trojan (probability >= `min_probability`, or no
    probability given); alone, or on a clean verdict, it is the surrogate."""

    kind = "interpretability"
    needs = frozenset({"clean_data"})
    answers = frozenset({"predict"})
    modalities = frozenset({"image", "text"})

    min_probability: float = 0.5
    rounds: int = 6
    steps: int = 600
    detector_steps: int = 200

    def predict(self, view: CaseView) -> RulePredictor:
        found = view.prior
        trojans = [Trojan(found.trigger, int(found.targets[0]))] if suspects(found, self.min_probability) else []
        return rule_predictor(view, trojans, rounds=self.rounds, steps=self.steps,
                              detector_steps=self.detector_steps)

"""`concept-probe`: predict from a linear probe on the model's own representation
for the concept an earlier stage found (`neural-cleanse>concept-probe`: the
recovered trigger). Where trigger-rule asks "is the trigger in the input?",
this asks "does the model's representation say the trigger is there?", which
also covers inputs that carry the trigger only partly or in disguise.

The Predictor may not run the model, so it carries a student: a fresh small CNN
trained to reproduce both the model's answers and its head input (through a
linear adapter) on clean, augmented and concept-stamped queries. The probe is a
logistic regression fitted on the model's real activations (clean against
stamped) and applied to the student's reproduction of them."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from torch import nn
from torch.nn import functional as F

from samecurve.api import CaseView
from samecurve.registry import register
from samecurve.tools.base import ToolBase, clean_inputs
from samecurve.tools.predict.rules import suspects
from samecurve.tools.predict.surrogate import (
    choose_label_weight,
    fresh_net,
    query_set,
    teacher_probabilities,
    with_label_prior,
)
from samecurve.zoo.archs import last_linear, penultimate_features
from samecurve.zoo.train import finetune_steps


class Student(nn.Module):
    """A small CNN whose head input, mapped by `adapter`, imitates the model's."""

    def __init__(self, net: nn.Module, model_dim: int) -> None:
        super().__init__()
        self.net = net
        self.adapter = nn.Linear(last_linear(net).in_features, model_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        grabbed: list[torch.Tensor] = []
        hook = last_linear(self.net).register_forward_hook(lambda _m, i, _o: grabbed.append(i[0]))
        try:
            logits = self.net(x)
        finally:
            hook.remove()
        return logits, self.adapter(grabbed[0])


@dataclass(frozen=True, eq=False)
class ProbePredictor:
    """A Predictor: the student's label, unless the probe reads the concept in the
    student's reproduction of the model's representation (then the target)."""

    student: Student
    weights: torch.Tensor  # the probe: w . features + b > 0 means "concept present"
    bias: float
    target: int | None
    label_weight: float = 0.0  # as the surrogate's (Distilled)

    def present(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            _, feats = self.student.eval()(x)
        return feats @ self.weights.to(feats) + self.bias > 0

    def __call__(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            logits, _ = self.student.eval()(x)
        out = with_label_prior(logits, labels, self.label_weight).argmax(1)
        if self.target is not None:
            fire = self.present(x) & (labels != self.target)
            out[fire] = self.target
        return out


@register("tool", "concept-probe")
@dataclass(frozen=True)
class ConceptProbe(ToolBase):
    """The earlier stage's trigger as a concept probed in the model's head input,
    read through an activation-matching student. Acts only on a finding that
    suspects a trojan (probability >= `min_probability`, or none given); alone, it
    is a surrogate that also matches activations."""

    kind = "interpretability"
    needs = frozenset({"weights", "clean_data"})
    answers = frozenset({"predict"})

    min_probability: float = 0.5
    rounds: int = 6
    steps: int = 600
    feature_weight: float = 1.0  # activation-matching loss beside the soft-label loss
    min_accuracy: float = 0.9  # the probe must tell held-back clean from stamped inputs

    def predict(self, view: CaseView) -> ProbePredictor:
        found = view.prior
        act = suspects(found, self.min_probability)
        clean = clean_inputs(view)
        cut = max(1, len(clean) * 4 // 5)
        q = query_set(view, self.rounds)
        concept = found.trigger.stamp(clean[:cut]) if act else clean[:0]
        x = torch.cat([q.x, concept])
        probs = torch.cat([q.probs, teacher_probabilities(view, concept)])
        feats = penultimate_features(view.model, x)
        scale = feats.std().clamp_min(1e-6)
        student = Student(fresh_net(view, view.num_classes, 37), feats.shape[1]).to(view.device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(view.seed) + 37)
            student.adapter.reset_parameters()
        targets = torch.cat([probs, feats / scale], 1)
        k = view.num_classes

        def loss(model: nn.Module, xb: torch.Tensor, tb: torch.Tensor) -> torch.Tensor:
            logits, f = model(xb)
            soft = -(tb[:, :k] * F.log_softmax(logits, 1)).sum(1).mean()
            return soft + self.feature_weight * F.mse_loss(f / scale, tb[:, k:])

        finetune_steps(student, x, targets, self.steps, lr=2e-3, batch_size=64,
                       generator=view.generator(37), loss_fn=loss,
                       time_left=lambda: view.time_left() - 0.1 * view.budget.seconds)
        student.eval()
        with torch.no_grad():
            weight = choose_label_weight(student(q.check_x)[0], q.check_y, q.check_says)
        none = ProbePredictor(student, torch.zeros(feats.shape[1]), -1.0, None, weight)
        if not act:
            return none
        return self._probe(view, none, clean, cut, found.trigger, int(found.targets[0]))

    def _probe(self, view: CaseView, none: ProbePredictor, clean: torch.Tensor, cut: int,
               trigger: Any, target: int) -> ProbePredictor:
        """Fit the probe on the model's activations; keep it if, read through the
        student, it tells held-back clean inputs from stamped ones."""
        fit, held = clean[:cut], clean[cut:]
        real = torch.cat([penultimate_features(view.model, fit),
                          penultimate_features(view.model, trigger.stamp(fit))]).cpu().numpy()
        y = np.r_[np.zeros(len(fit)), np.ones(len(fit))]
        probe = LogisticRegression(max_iter=2000, C=1.0).fit(real, y)
        w = torch.as_tensor(probe.coef_[0], dtype=torch.float32)
        b = float(probe.intercept_[0])
        candidate = replace(none, weights=w, bias=b, target=target)
        seen = ((~candidate.present(held)).float().mean()
                + candidate.present(trigger.stamp(held)).float().mean()) / 2
        if len(held) == 0 or float(seen) < self.min_accuracy:
            return none
        return candidate

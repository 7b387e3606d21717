"""Meta neural trojan detection, MNTD (Xu et al. 2021), with query tuning: learn a
few query inputs together with a small meta-classifier that reads a model's
softmax outputs on them, on labelled reference (shadow) models; then ask the
subject the learned queries, black-box, and read its trojan probability.

The references are a population disjoint from the subject (the suite's dev
split, or the other subjects left one out); they are differentiated through
freely, but their weights never change: gradients go to the queries and the
meta-classifier only. They may mix architectures that take the same input."""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from samecurve.api import CaseView, Finding, ReferenceModel
from samecurve.registry import register
from samecurve.tools.base import ToolBase


class MetaNet(nn.Module):
    """The learned queries (sigmoid-parameterised, so they stay in [0, 1]) and a
    logistic (hidden = 0) or one-hidden-layer meta-classifier over the concatenated
    softmax outputs of a model on them."""

    def __init__(self, queries: int, input_shape: tuple[int, int, int], num_classes: int,
                 hidden: int, g: torch.Generator) -> None:
        super().__init__()
        self.query_logit = nn.Parameter(torch.randn(queries, *input_shape, generator=g))
        width = queries * num_classes
        sizes = [width, hidden, 1] if hidden > 0 else [width, 1]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(itertools.pairwise(sizes)):
            linear = nn.Linear(a, b)
            with torch.no_grad():  # drawn from g, not the global generator: deterministic
                bound = 1.0 / np.sqrt(a)
                linear.weight.copy_((torch.rand(b, a, generator=g) * 2 - 1) * bound)
                linear.bias.zero_()
            layers.append(linear)
            if i < len(sizes) - 2:
                layers.append(nn.ReLU())
        self.head = nn.Sequential(*layers)

    def queries(self) -> torch.Tensor:
        return torch.sigmoid(self.query_logit)

    def forward(self, outputs: torch.Tensor) -> torch.Tensor:
        """(M, Q, K) logits of M models on the queries -> (M,) trojan logits."""
        return self.head(F.softmax(outputs, dim=-1).flatten(1)).squeeze(1)


def balanced_batch(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of `size` references, half trojaned and half clean (drawn with
    replacement only where a class has fewer members than its half)."""
    half = max(1, size // 2)
    picks = []
    for value in (0, 1):
        members = np.flatnonzero(labels == value)
        picks.append(rng.choice(members, size=half, replace=len(members) < half))
    return np.concatenate(picks)


@register("tool", "meta-classifier")
@dataclass(frozen=True)
class MetaClassifier(ToolBase):
    """MNTD with query tuning over labelled reference models; queries the subject black-box."""

    kind = "black-box"
    needs = frozenset({"references"})
    answers = frozenset({"detect"})

    queries: int = 10
    # A logistic meta-classifier by default: leave-one-out on the tiny population
    # (5 references each) gave AUROC 0.92 (seeds 0-1) and 0.75 (seeds 2-3), against
    # 0.58 (seeds 0-1) for a 20-unit hidden layer, which fits 5 references
    # perfectly and generalises worse. Reordering each model's classes by their
    # total probability (so trojans to different targets look alike): 0.64.
    hidden: int = 0
    steps: int = 150
    refs_per_step: int = 8  # references per step, half of each label
    lr: float = 0.05
    weight_decay: float = 1e-3

    def discover(self, view: CaseView) -> Finding:
        refs: tuple[ReferenceModel, ...] = view.references
        labels = np.array([int(r.trojaned) for r in refs], dtype=int)
        notes = {"references": float(len(refs)), "trojaned_references": float(labels.sum())}
        if len(refs) < 2 or labels.min() == labels.max():
            return Finding(trojan_probability=None, notes=notes)
        # Private frozen copies: the shared reference modules keep their flags and mode.
        models = [copy.deepcopy(r.model).to(view.device).eval().requires_grad_(False) for r in refs]
        net = MetaNet(self.queries, view.input_shape, view.num_classes, self.hidden,
                      view.generator()).to(view.device)
        params = list(net.parameters())
        opt = torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        target = torch.as_tensor(labels, dtype=torch.float32, device=view.device)
        rng = view.rng(3)
        steps = 0
        for _ in range(self.steps):
            if view.time_left() < 2.0:
                break
            batch = balanced_batch(labels, self.refs_per_step, rng)
            q = net.queries()
            unique, slot = np.unique(batch, return_inverse=True)  # each model runs once
            outputs = torch.stack([models[i](q) for i in unique])[torch.as_tensor(slot)]
            loss = F.binary_cross_entropy_with_logits(net(outputs), target[batch])
            # autograd.grad on the queries and the meta-classifier only.
            for p, grad in zip(params, torch.autograd.grad(loss, params), strict=True):
                p.grad = grad
            opt.step()
            steps += 1
        with torch.no_grad():
            q = net.queries()
            train_scores = net(torch.stack([m(q) for m in models]))
            train_acc = float(((train_scores > 0).long().cpu().numpy() == labels).mean())
            logit = net(view.model(q)[None])
        notes |= {"steps": float(steps), "train_accuracy": train_acc, "logit": float(logit)}
        return Finding(trojan_probability=float(torch.sigmoid(logit)), notes=notes)

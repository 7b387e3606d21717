"""The black-box baseline of the predict family: a small network fitted to the
model's answers on the clean data and on augmented copies of it (noise, mixup,
shifts, new colours, random patches and faint blends), within the query budget.
It knows nothing of the model's insides, so any predictor that beats it bought
its gain by looking inside."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from samecurve.api import CaseView
from samecurve.registry import register
from samecurve.tools.base import ToolBase, clean_inputs
from samecurve.zoo.archs import small_cnn
from samecurve.zoo.train import finetune_steps


@dataclass(frozen=True, eq=False)
class Distilled:
    """A Predictor: the surrogate network's class scores."""

    net: nn.Module

    def __call__(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.net.eval()(x)


def augmented(x: torch.Tensor, rounds: int, generator: torch.Generator) -> torch.Tensor:
    """`rounds` augmented copies of x, each input altered by one generic
    transformation drawn per input. None of them is told about any trigger."""
    n, c, h, w = x.shape
    copies = []
    for _ in range(rounds):
        kind = torch.randint(0, 6, (n,), generator=generator)
        out = x.clone()
        noise = kind == 0
        out[noise] += 0.1 * torch.randn(out[noise].shape, generator=generator)
        mix = kind == 1
        lam = torch.rand(int(mix.sum()), 1, 1, 1, generator=generator) * 0.6 + 0.2
        partner = x[torch.randint(0, n, (int(mix.sum()),), generator=generator)]
        out[mix] = lam * out[mix] + (1 - lam) * partner
        shift = kind == 2
        dy, dx = (int(v) for v in torch.randint(-4, 5, (2,), generator=generator))
        out[shift] = torch.roll(out[shift], shifts=(dy, dx), dims=(2, 3))
        colour = kind == 3
        gain = torch.rand(int(colour.sum()), c, 1, 1, generator=generator) * 0.8 + 0.6
        out[colour] = 0.5 + gain * (out[colour] - 0.5)
        for i in torch.nonzero(kind == 4).flatten().tolist():  # a random small patch
            s = int(torch.randint(3, 9, (1,), generator=generator))
            top, left = (int(torch.randint(0, d - s + 1, (1,), generator=generator)) for d in (h, w))
            out[i, :, top : top + s, left : left + s] = torch.rand(c, 1, 1, generator=generator)
        blend = kind == 5
        out[blend] = 0.85 * out[blend] + 0.15 * torch.rand(out[blend].shape, generator=generator)
        copies.append(out.clamp(0, 1))
    return torch.cat(copies) if copies else x[:0]


def soft_cross_entropy(model: nn.Module, x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against the teacher's probabilities (distillation at T = 1)."""
    return -(p * F.log_softmax(model(x), dim=1)).sum(1).mean()


def fresh_net(view: CaseView, num_classes: int, offset: int) -> nn.Module:
    """A new small CNN for the case's inputs, initialised from the case seed (the
    global RNG is left as it was), so a predictor is the same every time."""
    c, size, _ = view.input_shape
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(view.seed) * 1_000_003 + offset)
        net = small_cnn(num_classes=num_classes, in_channels=c, size=size)
    return net.to(view.device)


def distil(view: CaseView, x: torch.Tensor, steps: int, lr: float, reserve: float) -> nn.Module:
    """A fresh small CNN trained on the model's probabilities for `x` (one query each),
    stopping with `reserve` of the budget left."""
    teacher = []
    with torch.no_grad():
        for i in range(0, len(x), 512):
            teacher.append(F.softmax(view.model(x[i : i + 512]), dim=1))
    probs = torch.cat(teacher)
    net = fresh_net(view, view.num_classes, 29)
    finetune_steps(net, x, probs, steps, lr=lr, batch_size=64, generator=view.generator(29),
                   loss_fn=soft_cross_entropy,
                   time_left=lambda: view.time_left() - reserve * view.budget.seconds)
    return net.eval()


def query_set(view: CaseView, rounds: int) -> torch.Tensor:
    """The clean inputs and their augmented copies, cut to the query budget."""
    x = clean_inputs(view)
    queries = torch.cat([x, augmented(x.cpu(), rounds, view.generator(31)).to(view.device)])
    cap = view.budget.queries
    return queries[: max(1, cap - view.meter.queries)] if cap is not None else queries


@register("tool", "surrogate")
@dataclass(frozen=True)
class Surrogate(ToolBase):
    """Black-box: distil the model's answers on clean and augmented inputs."""

    kind = "black-box"
    needs = frozenset({"clean_data"})
    answers = frozenset({"predict"})

    rounds: int = 6  # augmented copies of the clean data (500 inputs -> 3500 queries)
    steps: int = 600
    lr: float = 2e-3

    def predict(self, view: CaseView) -> Distilled:
        return Distilled(distil(view, query_set(view, self.rounds), self.steps, self.lr, 0.1))

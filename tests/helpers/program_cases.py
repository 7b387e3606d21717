"""Replace-family cases without training: a network that computes a rule exactly
(its logits are the rule's one-hot), and the view a distiller would get of it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from samecurve.api import Budget, CaseView, Meter, QueryOnly, Split
from samecurve.programs.domain import Domain
from samecurve.run.cell import attach_meter


class RuleNetwork(nn.Module):
    """Answers every input with `rule` (a Python function in the program's
    signature), as a trained network that learned it perfectly would. Its
    `readout` sees a one-hot of the answer, so white-box tools find something."""

    def __init__(self, rule: Callable[..., Any], domain: Domain) -> None:
        super().__init__()
        self.rule, self.domain = rule, domain
        self.readout = nn.Linear(domain.num_outputs, domain.num_outputs, bias=False)
        with torch.no_grad():
            self.readout.weight.copy_(torch.eye(domain.num_outputs) * 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.domain
        if d.kind == "grid":
            labels = torch.tensor([int(self.rule(int(a), int(b))) for a, b, _ in x.tolist()])
        elif d.kind == "sequence":
            labels = torch.tensor([[int(v) for v in self.rule(row)] for row in x.tolist()])
        else:
            labels = torch.tensor([int(self.rule(im[0])) for im in x.tolist()])
        onehot = nn.functional.one_hot(labels, d.num_outputs).float()
        return self.readout(onehot)


def program_view(model: nn.Module, domain: Domain, *, clean: np.ndarray | None = None,
                 labels: np.ndarray | None = None, white_box: bool = False,
                 seconds: float = 60.0, queries: int | None = None, seed: int = 0) -> CaseView:
    """The view the replace task gives a distiller: the (metered) network, its
    domain and, if given, sample inputs with their labels as `clean`."""
    meter = Meter(Budget(seconds=seconds, queries=queries))
    attach_meter(model, meter)
    split = None
    if clean is not None:
        x = torch.as_tensor(clean)
        y = torch.as_tensor(labels) if labels is not None else torch.zeros(len(x), dtype=torch.long)
        split = Split(x, y)
    return CaseView(
        model=model if white_box else QueryOnly(model), num_classes=domain.num_outputs,
        input_shape=(1,), clean=split, train_sample=None, references=(), budget=meter.budget,
        seed=seed, device="cpu", meter=meter, domain=domain,
    )


def running_parity(xs: list[int]) -> list[int]:
    """The running parity of a bit sequence (a rule several distiller tests recover)."""
    s, out = 0, []
    for x in xs:
        s ^= x
        out.append(s)
    return out

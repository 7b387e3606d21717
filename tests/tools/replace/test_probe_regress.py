"""probe-and-regress: a network whose readout input holds (a + b) % 113 among
noise features has that variable picked as the best read and the rule recovered
from it; on RuleNetworks (whose readout sees a one-hot of the answer) the rules
come back on every domain kind; a random table makes it abstain; no hook is left
behind; the budget holds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from program_cases import RuleNetwork, program_view, running_parity
from torch import nn

from samecurve.api import Program
from samecurve.data.digits import Digits
from samecurve.programs.domain import Domain
from samecurve.programs.sandbox import run_program
from samecurve.tools.replace.probe_regress import ProbeAndRegress

torch.set_num_threads(1)
GRID = Domain("grid", num_outputs=2, vocab=113)


class ModSumInside(nn.Module):
    """Computes (a + b) % 113 into one of 9 readout inputs (the rest random
    embeddings of a and of b) and answers (a + b) % 113 < 40 from it alone."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.embed_a = nn.Parameter(torch.randn(113, 4, generator=g), requires_grad=False)
        self.embed_b = nn.Parameter(torch.randn(113, 4, generator=g), requires_grad=False)
        self.readout = nn.Linear(9, 2)
        with torch.no_grad():
            self.readout.weight.zero_()
            self.readout.weight[0, 4] = 1.0  # logit 0 grows with the sum; logit 1 is 39.5
            self.readout.bias.copy_(torch.tensor([0.0, 39.5]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x[:, 0], x[:, 1]
        s = ((a + b) % 113).float()[:, None]
        return self.readout(torch.cat([self.embed_a[a], s, self.embed_b[b]], 1))


def test_the_probe_picks_the_variable_the_network_computes() -> None:
    model = ModSumInside()
    view = program_view(model, GRID, white_box=True)
    tool = ProbeAndRegress(queries=1500)
    ranked, best, _ = tool.probe(view, 1500)
    assert ranked[0].code == "((a + b) % 113)" and ranked[0].r2 > 0.99
    assert all(r.r2 < 0.5 for r in ranked[1:])  # nothing else is read nearly as well
    cells = GRID.all_inputs()
    truth = (cells.sum(1) % 113 < 40).astype(int)
    assert (run_program(Program(best.source), GRID, cells).values == truth).all()
    assert not model.readout._forward_pre_hooks


def top_heavier(img) -> int:
    half = len(img) // 2
    return int(sum(map(sum, img[:half])) > sum(map(sum, img[half:])))


@pytest.mark.parametrize("kind", ["grid", "circle", "sequence", "image"])
def test_rules_come_back_through_a_one_hot_readout(kind: str) -> None:
    clean = None
    if kind == "grid":
        domain, rule = GRID, (lambda a, b: int((a + b) % 113 < 40))
    elif kind == "circle":  # read by rank: the one-hot holds the threshold, not the square
        domain, rule = GRID, (lambda a, b: int((a - 60) ** 2 + (b - 50) ** 2 < 900))
    elif kind == "sequence":
        domain = Domain("sequence", 2, 2, lengths=(1, 8), long_lengths=(16, 24))
        rule = running_parity
    else:
        domain, rule = Domain("image", 2, image_size=28), top_heavier
        clean = Digits(size=28).x[:800, :1].astype(np.float32)
    view = program_view(RuleNetwork(rule, domain), domain, clean=clean, white_box=True)
    program = ProbeAndRegress(queries=1500).distill(view)
    assert program.source is not None, program.notes
    assert program.notes["fidelity_estimate"] >= (0.97 if kind == "image" else 1.0)


def test_abstains_on_a_random_table() -> None:
    table = np.random.default_rng(5).integers(0, 2, (113, 113))
    model = RuleNetwork(lambda a, b: int(table[a, b]), GRID)
    view = program_view(model, GRID, white_box=True)
    program = ProbeAndRegress(queries=1500).distill(view)
    assert program.abstains and program.notes["fidelity_estimate"] < 0.9


def test_never_queries_past_the_budget() -> None:
    view = program_view(ModSumInside(), GRID, white_box=True, queries=300)
    ProbeAndRegress(queries=4000).distill(view)
    assert 0 < view.meter.queries <= 300

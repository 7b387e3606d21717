"""The enumerative distiller recovers planted rules exactly from a network that
computes them (checked in the sandbox on every grid cell, every short sequence
and long ones), reaches the image rule on held-out digits, abstains on a random
table, and never queries past its budget."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from program_cases import RuleNetwork, program_view, running_parity

from samecurve.data.digits import Digits
from samecurve.programs.domain import Domain
from samecurve.programs.sandbox import run_program
from samecurve.tools.replace.enumerative import Enumerative

torch.set_num_threads(1)
GRID = Domain("grid", num_outputs=2, vocab=113)
GRID_RULES = {
    "mod-sum": lambda a, b: int((a + b) % 113 < 40),
    "product-parity": lambda a, b: a * b % 2,
    "circle": lambda a, b: int((a - 60) ** 2 + (b - 50) ** 2 < 900),
}


def running_sum_mod3(xs):
    s, out = 0, []
    for x in xs:
        s = (s + x) % 3
        out.append(s)
    return out


def random_table(seed: int = 5):
    """The incompressible control: a seeded random bit per grid cell."""
    table = np.random.default_rng(seed).integers(0, 2, (113, 113))
    return lambda a, b: int(table[a, b])


def truth(rule, domain: Domain, x: np.ndarray) -> np.ndarray:
    return np.array([rule(*args) for args in domain.program_args(x)]).reshape(
        domain.output_shape(x))


@pytest.mark.parametrize("rule", sorted(GRID_RULES))
def test_grid_rules_are_recovered_on_every_cell(rule: str) -> None:
    view = program_view(RuleNetwork(GRID_RULES[rule], GRID), GRID)
    program = Enumerative(queries=2000).distill(view)
    assert program.source is not None, program.notes
    cells = GRID.all_inputs()
    said = run_program(program, GRID, cells).values
    assert (said == truth(GRID_RULES[rule], GRID, cells)).all(), program.source
    assert program.notes["fidelity_estimate"] == 1.0
    assert view.meter.queries <= 2000


@pytest.mark.parametrize("rule,outputs,vocab", [(running_parity, 2, 2),
                                                (running_sum_mod3, 3, 3)])
def test_sequence_scans_are_recovered_at_every_length(rule, outputs: int, vocab: int) -> None:
    domain = Domain("sequence", num_outputs=outputs, vocab=vocab, lengths=(1, 8),
                    long_lengths=(16, 32))
    view = program_view(RuleNetwork(rule, domain), domain)
    program = Enumerative(queries=1000).distill(view)
    assert program.source is not None, program.notes
    rng = np.random.default_rng(3)
    for x in [domain.all_inputs(length) for length in range(1, 9)] + [
            domain.sample(200, rng, length=30)]:
        said = run_program(program, domain, x).values
        assert (said == truth(rule, domain, x)).all(), (program.source, x.shape)


def top_heavier(img) -> int:
    """The image rule: the top half has more ink than the bottom half."""
    half = len(img) // 2
    return int(sum(map(sum, img[:half])) > sum(map(sum, img[half:])))


def test_the_image_rule_holds_on_held_out_digits() -> None:
    images = Digits(size=28).x[:, :1].astype(np.float32)
    domain = Domain("image", num_outputs=2, image_size=28)
    seen, unseen = images[:800], images[800:1400]
    view = program_view(RuleNetwork(top_heavier, domain), domain, clean=seen)
    program = Enumerative().distill(view)
    assert program.source is not None, program.notes
    said = run_program(program, domain, unseen).values
    assert (said == truth(top_heavier, domain, unseen)).mean() >= 0.97
    assert view.meter.queries <= 800


def test_abstains_on_a_random_table() -> None:
    view = program_view(RuleNetwork(random_table(), GRID), GRID)
    program = Enumerative(queries=1500).distill(view)
    assert program.abstains
    assert program.notes["fidelity_estimate"] < 0.9


def test_never_queries_past_the_budget() -> None:
    view = program_view(RuleNetwork(GRID_RULES["mod-sum"], GRID), GRID, queries=300)
    program = Enumerative(queries=4000).distill(view)
    assert view.meter.queries <= 300
    assert program.notes["queries"] <= 300

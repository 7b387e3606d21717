"""symbolic-regression: the exported program says what gplearn's own estimator
predicts on the inputs it was fitted on (binary and class labels, every domain
kind), a < b is recovered, a random table makes it abstain, and the budget holds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from program_cases import RuleNetwork, program_view

from samecurve.api import Program
from samecurve.data.digits import Digits
from samecurve.programs.domain import Domain
from samecurve.programs.sandbox import run_program
from samecurve.tools.replace.decision_tree import fit_rows, tabular
from samecurve.tools.replace.dsl import query_domain
from samecurve.tools.replace.symbolic import SymbolicRegression, gp_predict, gp_source

torch.set_num_threads(1)
GRID = Domain("grid", num_outputs=2, vocab=113)
GRID3 = Domain("grid", num_outputs=3, vocab=113)
SEQ = Domain("sequence", num_outputs=2, vocab=3, lengths=(1, 8), long_lengths=(12, 16))
IMAGE = Domain("image", num_outputs=2, image_size=28)
TABLE = np.random.default_rng(5).integers(0, 2, (113, 113))


def left_heavier(img):
    half = len(img[0]) // 2
    return int(sum(sum(r[:half]) for r in img) > sum(sum(r[half:]) for r in img))


CASES = {
    "grid": (lambda a, b: int(a + b < 100), GRID),
    "grid-classes": (lambda a, b: (a + 2 * b) // 113, GRID3),
    "sequence": (lambda xs: [int(x + t > 4) for t, x in enumerate(xs)], SEQ),
    "image": (left_heavier, IMAGE),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_exported_program_says_what_gplearn_predicts(case: str) -> None:
    rule, domain = CASES[case]
    clean = Digits(size=28).x[:400, :1].astype(np.float32) if domain.kind == "image" else None
    view = program_view(RuleNetwork(rule, domain), domain, clean=clean)
    tool = SymbolicRegression(population=200, generations=4)
    q = query_domain(view, 500, view.rng(17))
    x, y = fit_rows(domain, q.fit_x, q.fit_y, tool.window, tool.pool)
    est = tool.fit(view, x, y)
    program = Program(gp_source(est, domain.kind, domain.num_outputs, tool.window, tool.pool))
    for group in q.fit_x:
        said = run_program(program, domain, group).values.ravel()
        expected = gp_predict(est, tabular(domain.kind, group, tool.window, tool.pool),
                              domain.num_outputs)
        assert (said == expected).all()


def test_a_less_than_b_is_recovered() -> None:
    view = program_view(RuleNetwork(lambda a, b: int(a < b), GRID), GRID)
    program = SymbolicRegression(queries=1500, population=500, generations=10).distill(view)
    assert program.source is not None
    cells = GRID.all_inputs()
    said = run_program(program, GRID, cells).values
    assert (said == (cells[:, 0] < cells[:, 1])).mean() >= 0.99


def test_abstains_on_a_random_table() -> None:
    view = program_view(RuleNetwork(lambda a, b: int(TABLE[a, b]), GRID), GRID)
    program = SymbolicRegression(queries=1500, population=300, generations=5).distill(view)
    assert program.abstains and program.notes["fidelity_estimate"] < 0.9


def test_never_queries_past_the_budget() -> None:
    view = program_view(RuleNetwork(lambda a, b: int(a < b), GRID), GRID, queries=200)
    SymbolicRegression(population=100, generations=2).distill(view)
    assert 0 < view.meter.queries <= 200

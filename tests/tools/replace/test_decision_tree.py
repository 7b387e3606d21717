"""The decision-tree baseline's export is exact (the emitted program says what
sklearn's tree predicts, on every queried input of each domain kind), a one-split
rule is exact on the whole grid, a random table makes it abstain, and the query
budget holds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from program_cases import RuleNetwork, program_view

from samecurve.api import Program
from samecurve.data.digits import Digits
from samecurve.programs.domain import Domain
from samecurve.programs.sandbox import run_program
from samecurve.tools.replace.decision_tree import DecisionTree, tabular, tree_source, wrap

torch.set_num_threads(1)
GRID = Domain("grid", num_outputs=2, vocab=113)
SEQ = Domain("sequence", num_outputs=2, vocab=3, lengths=(1, 8), long_lengths=(12, 16))
IMAGE = Domain("image", num_outputs=2, image_size=28)
TABLE = np.random.default_rng(5).integers(0, 2, (113, 113))


def last_two_equal(xs):
    return [int(t > 0 and xs[t] == xs[t - 1]) for t in range(len(xs))]


def left_heavier(img):
    half = len(img[0]) // 2
    return int(sum(sum(r[:half]) for r in img) > sum(sum(r[half:]) for r in img))


CASES = {
    "grid-table": (lambda a, b: int(TABLE[a, b]), GRID, None),
    "sequence": (last_two_equal, SEQ, None),
    "image": (left_heavier, IMAGE, "digits"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_exported_program_says_what_the_tree_predicts(case: str) -> None:
    rule, domain, data = CASES[case]
    clean = Digits(size=28).x[:600, :1].astype(np.float32) if data else None
    view = program_view(RuleNetwork(rule, domain), domain, clean=clean)
    tool = DecisionTree(queries=1200, max_depth=8)
    tree, q = tool.fit(view, 1200)
    program = Program(wrap(domain.kind, tree_source(tree), tool.window, tool.pool))
    for x in q.fit_x:
        said = run_program(program, domain, x).values.ravel()
        predicted = tree.predict(tabular(domain.kind, x, tool.window, tool.pool))
        assert (said == predicted).all()


def test_a_threshold_on_a_is_exact_on_the_whole_grid() -> None:
    view = program_view(RuleNetwork(lambda a, b: int(a < 50), GRID), GRID)
    program = DecisionTree(queries=1000).distill(view)
    assert program.source is not None
    cells = GRID.all_inputs()
    assert (run_program(program, GRID, cells).values == (cells[:, 0] < 50)).all()
    assert program.notes["fidelity_estimate"] == 1.0 and program.notes["leaves"] == 2


def test_a_window_rule_on_sequences_is_exact() -> None:
    def after_a_two(xs):
        return [int(t > 0 and xs[t - 1] == 2) for t in range(len(xs))]

    view = program_view(RuleNetwork(after_a_two, SEQ), SEQ)
    program = DecisionTree(queries=1500).distill(view)
    assert program.source is not None and program.notes["fidelity_estimate"] == 1.0
    x = SEQ.all_inputs(6)
    assert (run_program(program, SEQ, x).values == [after_a_two(list(r)) for r in x]).all()


def test_abstains_on_a_random_table() -> None:
    view = program_view(RuleNetwork(lambda a, b: int(TABLE[a, b]), GRID), GRID)
    program = DecisionTree(queries=2000).distill(view)
    assert program.abstains and program.notes["fidelity_estimate"] < 0.9


def test_never_queries_past_the_budget() -> None:
    view = program_view(RuleNetwork(lambda a, b: int(a < 50), GRID), GRID, queries=250)
    DecisionTree(queries=4000).distill(view)
    assert 0 < view.meter.queries <= 250

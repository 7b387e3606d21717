"""The program predictors: the tabular surrogate learns a systematic departure
from the rule (one it can see in its features), and a program predictor falls
back to the surrogate where the tool abstained or the program fails."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from program_cases import RuleNetwork, program_view

from samecurve.api import Program
from samecurve.programs.domain import Domain
from samecurve.tools.predict.programs import ProgramPredictor, ProgramRule, fit_tabular_surrogate

GRID = Domain(kind="grid", vocab=23, num_outputs=2)


def truth(a: int, b: int) -> int:
    return int((a + b) % 23 < 11)


def network(a: int, b: int) -> int:
    """The rule, except that every input with a == 3 goes to 1."""
    return 1 if a == 3 else truth(a, b)


def _view(queries=None):
    cells = GRID.all_inputs()
    labels = np.array([truth(a, b) for a, b in cells])
    return program_view(RuleNetwork(network, GRID), GRID, clean=cells, labels=labels,
                        queries=queries)


def test_the_surrogate_learns_where_the_network_departs() -> None:
    rows = np.array([[3, b] for b in range(23)])
    rule = torch.tensor([truth(a, b) for a, b in rows])
    surrogate = fit_tabular_surrogate(_view())
    said = surrogate(torch.as_tensor(rows), rule)
    assert said.shape == (23,)
    departs = np.array([network(a, b) != truth(a, b) for a, b in rows])
    assert departs.sum() >= 5 and (said[departs] == 1).all()


def test_the_surrogate_within_no_queries_answers_a_constant() -> None:
    view = _view(queries=0)
    surrogate = fit_tabular_surrogate(view)
    assert surrogate.trees is None and view.meter.queries == 0
    assert surrogate(torch.zeros(4, 2), torch.ones(4)).tolist() == [0, 0, 0, 0]


def test_a_program_predictor_falls_back_where_there_is_no_program() -> None:
    fallback = lambda x, labels: torch.full((len(x),), 7)  # noqa: E731
    rows = np.array([[1, 2], [3, 4]])
    assert ProgramPredictor(Program(None), GRID, fallback)(rows, None).tolist() == [7, 7]
    crash = Program("def f(a, b):\n    return 1 // 0\n")
    assert ProgramPredictor(crash, GRID, fallback, seconds=5)(rows, None).tolist() == [7, 7]
    sums = Program("def f(a, b):\n    return a + b\n")
    assert ProgramPredictor(sums, GRID, fallback, seconds=5)(rows, None).tolist() == [3, 7]


def test_program_rule_takes_a_distiller_or_a_portfolio_and_nothing_else() -> None:
    ProgramRule(distiller="probe-and-regress")
    assert ProgramRule(distiller="ensemble(state-machine, enumerative)").distill_tool().members == (
        "state-machine", "enumerative")
    with pytest.raises(ValueError, match="'surrogate' is no replace tool"):
        ProgramRule(distiller="surrogate")
    with pytest.raises(KeyError):
        ProgramRule(distiller="no-such-tool")


class _Gives:
    """A stand-in distiller that returns one fixed program."""

    needs = frozenset()

    def __init__(self, source: str) -> None:
        self.source = source

    def distill(self, view) -> Program:
        return Program(self.source)


@pytest.mark.parametrize(("source", "keeps_program"), [
    ("def f(a, b):\n    return int((a + b) % 23 < 11)\n", True),  # the rule
    ("def f(a, b):\n    return 1 if a == 3 else int((a + b) % 23 < 11)\n", True),  # the network
    ("def f(a, b):\n    return int((a + b) % 23 >= 11)\n", False),  # wrong everywhere
])
def test_program_rule_keeps_a_faithful_program_and_the_surrogates_departures(
    monkeypatch, source, keeps_program
) -> None:
    """A program of the rule is kept, and the surrogate still supplies the departures
    it learned (a == 3); a program worse than the surrogate is dropped for it."""
    monkeypatch.setattr(ProgramRule, "distill_tool", lambda self: _Gives(source))
    predictor = ProgramRule().predict(_view())
    assert isinstance(predictor, ProgramPredictor) is keeps_program
    rows = np.array([[3, b] for b in range(23)] + [[5, b] for b in range(23)])
    said = predictor(rows, np.array([truth(a, b) for a, b in rows]))
    assert (said == np.array([network(a, b) for a, b in rows])).all()

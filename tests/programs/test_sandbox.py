"""Untrusted programs run in a subprocess with limits; bad ones are stopped with
one line saying why, per-input crashes are recorded, and the caller goes on."""

from __future__ import annotations

import numpy as np
import pytest

from samecurve.api import Program
from samecurve.programs.domain import Domain
from samecurve.programs.sandbox import FAILED, ProgramFailed, run_program
from samecurve.programs.source import ProgramRejected

GRID = Domain("grid", vocab=113)
SEQ = Domain("sequence", vocab=2, lengths=(1, 6))


def test_outputs_on_the_whole_grid() -> None:
    out = run_program(Program("def f(a, b):\n    return (a * b) % 2\n"), GRID, GRID.all_inputs())
    a, b = GRID.all_inputs().T
    assert np.array_equal(out.values, (a * b) % 2) and out.crashes == 0


def test_sequence_outputs_per_position_and_wrong_lengths_are_crashes() -> None:
    xs = SEQ.all_inputs(3)
    ok = run_program(Program("def f(xs):\n    return [sum(xs[: i + 1]) % 2 for i in range(len(xs))]\n"),
                     SEQ, xs)
    assert np.array_equal(ok.values, np.cumsum(xs, 1) % 2)
    short = run_program(Program("def f(xs):\n    return [0]\n"), SEQ, xs)
    assert short.crashes == len(xs) and (short.values == FAILED).all()
    assert "returned 1 outputs" in short.first_error


def test_a_crash_on_some_inputs_is_recorded_not_fatal() -> None:
    out = run_program(Program("def f(a, b):\n    return 1 // (a - b) + 1\n"), GRID,
                      np.array([[1, 1], [3, 2], [2, 2]]))
    assert list(out.values) == [FAILED, 2, FAILED] and out.crashes == 2
    assert "ZeroDivisionError" in out.first_error


def test_image_programs_get_nested_lists() -> None:
    img = np.zeros((2, 1, 4, 4), np.float32)
    img[1, 0, :2] = 1.0
    dom = Domain("image", image_size=4)
    src = "def f(img):\n    top = sum(sum(r) for r in img[:2])\n    return int(top > 1)\n"
    assert list(run_program(Program(src), dom, img).values) == [0, 1]


def test_an_endless_loop_is_killed_at_the_limit() -> None:
    with pytest.raises(ProgramFailed, match="ran past its 2 s limit"):
        run_program(Program("def f(a, b):\n    while True:\n        pass\n"), GRID,
                    GRID.all_inputs()[:5], seconds=2)


def test_a_huge_allocation_stops_at_the_memory_limit() -> None:
    with pytest.raises(ProgramFailed, match="memory limit"):
        run_program(Program("def f(a, b):\n    return len([0] * (10 ** 10))\n"), GRID,
                    GRID.all_inputs()[:5])


def test_a_refused_program_never_starts() -> None:
    with pytest.raises(ProgramRejected, match="Import"):
        run_program(Program("import os\ndef f(a, b):\n    return 0\n"), GRID, GRID.all_inputs())


def test_abstaining_is_not_runnable() -> None:
    with pytest.raises(ValueError, match="abstains"):
        run_program(Program(None), GRID, GRID.all_inputs())

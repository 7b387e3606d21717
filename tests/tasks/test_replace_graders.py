"""The replace grader checked with programs whose scores we know: the oracle (the
hidden program) solves every rule subject at size 1 and abstains on the control;
null abstains (no answer, right on the control); random sits at chance and is
confident-wrong on the control; the network's own errors are where a program
that copies the network differs from the truth; a program the sandbox refuses or
kills becomes an error row at the floor."""

from __future__ import annotations

import pytest

from samecurve.api import Budget, Program
from samecurve.run.cell import CellJob, execute
from samecurve.run.suite import TaskEntry, ToolEntry, make_task
from samecurve.zoo.builder import SubjectSpec, build

TASK = TaskEntry(name="replace", params={"test_examples": 400, "program_seconds": 20})


@pytest.fixture(scope="module")
def exact_subjects(tmp_path_factory):
    """mod-sum (grid), parity (sequence), table (grid control), built in milliseconds."""
    import exact_programs  # noqa: F401 - registers the exact-rule recipe and arch

    from samecurve.zoo.cache import Cache

    cache = Cache(tmp_path_factory.mktemp("exact"))
    subjects = {}
    for seed, rule in enumerate(["mod-sum", "parity", "table"]):
        spec = SubjectSpec(recipe="exact-rule", seed=seed)
        subjects[rule] = build(spec, cache)
    return cache, subjects


def _cell(tool: str, subject, cache, params=None):
    job = CellJob(TASK, ToolEntry(name=tool, params=params or {}), subject.id, 0,
                  Budget(seconds=60), "cpu", str(cache.root))
    return execute(job)


@pytest.mark.parametrize("rule", ["mod-sum", "parity"])
def test_the_oracle_solves_rule_subjects_at_size_one(exact_subjects, rule) -> None:
    cache, subjects = exact_subjects
    r = _cell("oracle", subjects[rule], cache)
    assert r.status == "ok", r.error
    m = r.metrics
    assert (m["solved"], m["wrong"], m["no_answer"], m["size_ratio"]) == (1.0, 0.0, 0.0, 1.0)
    assert m["truth_agreement"] == 1.0
    # The network errs on a seeded few inputs (about 1 in 97 grid cells; more of a
    # sequence's positions): the truth disagrees with it there.
    assert 0.9 < m["fidelity_heldout"] < 1.0 and m["fidelity_errors"] == 0.0


def test_the_oracle_abstains_on_the_control_and_null_abstains_everywhere(exact_subjects) -> None:
    cache, subjects = exact_subjects
    assert _cell("oracle", subjects["table"], cache).metrics["confident_wrong"] == 0.0
    control = _cell("null", subjects["table"], cache).metrics
    assert control["confident_wrong"] == 0.0 and control["fidelity_train"] == 0.0
    rule = _cell("null", subjects["mod-sum"], cache).metrics
    assert (rule["solved"], rule["wrong"], rule["no_answer"]) == (0.0, 0.0, 1.0)


def test_random_sits_at_chance_and_is_confidently_wrong_on_the_control(exact_subjects) -> None:
    cache, subjects = exact_subjects
    for rule in ("mod-sum", "parity"):
        m = _cell("random", subjects[rule], cache).metrics
        assert (m["solved"], m["wrong"]) == (0.0, 1.0)
        assert 0.4 < m["fidelity_heldout"] < 0.6 and 0.4 < m["truth_agreement"] < 0.6, m
    assert _cell("random", subjects["table"], cache).metrics["confident_wrong"] == 1.0
    assert make_task(TASK).chance("fidelity_train", [], 2) == 0.5


def test_a_program_that_copies_the_network_explains_its_errors(exact_subjects) -> None:
    """The network's own rule, errors included, as a program: fidelity 1 everywhere,
    not the hidden program (wrong), and a size far above the truth's."""
    import exact_programs

    _, subjects = exact_subjects
    s = subjects["mod-sum"]
    copy = (s.answer_key.program.replace("def f(", "def g(")
            + f"\ndef f(a, b):\n    k = a * 113 + b\n    e = int(k * 2654435761 % 2**32 % "
              f"{exact_programs.ERR_EVERY} == 0)\n    return g(a, b) ^ e\n")
    m = make_task(TASK).grade(Program(copy), s)
    assert m["fidelity_train"] == m["fidelity_heldout"] == m["fidelity_errors"] == 1.0
    assert (m["solved"], m["wrong"]) == (0.0, 1.0) and 0.97 < m["truth_agreement"] < 1.0
    assert m["size_ratio"] > 2


@pytest.mark.parametrize(("source", "message"), [
    ("import os\ndef f(a, b):\n    return 0\n", "Import is not allowed"),
    ("def f(a, b):\n    while True:\n        pass\n", "ran past its"),
    ("def f(a, b):\n    x = [0] * (10 ** 10)\n    return 0\n", "memory limit"),
])
def test_a_bad_program_is_an_error_row_and_the_run_goes_on(exact_subjects, monkeypatch,
                                                            source, message) -> None:
    cache, subjects = exact_subjects
    from samecurve.tools import baselines

    monkeypatch.setattr(baselines.Random, "distill", lambda self, view: Program(source))
    job = CellJob(TaskEntry(name="replace", params={"test_examples": 50, "program_seconds": 3}),
                  ToolEntry(name="random"), subjects["mod-sum"].id, 0, Budget(seconds=60), "cpu",
                  str(cache.root))
    r = execute(job)
    assert r.status == "error" and message in r.error, r.error
    assert (r.metrics["solved"], r.metrics["no_answer"], r.metrics["fidelity_train"]) == (0, 1, 0)

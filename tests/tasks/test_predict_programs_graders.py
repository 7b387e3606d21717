"""The predict-programs grader checked with predictors whose scores we know, on
exact-rule subjects (networks that compute their hidden program except on a
seeded hash of inputs, built in milliseconds): the oracle and null predict the
rule, so they agree with the network exactly where it keeps to its rule and
never on its departures; random sits at chance; program-rule with a distiller
that recovers the rule matches the oracle; and only tools that declare
`predicts_programs` run here (trigger-rule reads images)."""

from __future__ import annotations

import numpy as np
import pytest

from samecurve.api import Budget
from samecurve.run.cell import CellJob, execute
from samecurve.run.suite import TaskEntry, ToolEntry, make_task, make_tool
from samecurve.tasks.predict_programs import outputs_of
from samecurve.zoo.builder import SubjectSpec, build

TASK = TaskEntry(name="predict-programs", params={"test_examples": 400})


@pytest.fixture(scope="module")
def exact_subjects(tmp_path_factory):
    import exact_programs  # noqa: F401 - registers the exact-rule recipe and arch

    from samecurve.zoo.cache import Cache

    cache = Cache(tmp_path_factory.mktemp("exact"))
    return cache, {rule: build(SubjectSpec(recipe="exact-rule", seed=seed), cache)
                   for seed, rule in enumerate(["mod-sum", "parity", "table"])}


def _cell(tool: str, subject, cache, params=None):
    job = CellJob(TASK, ToolEntry(name=tool, params=params or {}), subject.id, 0,
                  Budget(seconds=60), "cpu", str(cache.root))
    r = execute(job)
    assert r.status == "ok", r.error
    return r.metrics


@pytest.mark.parametrize("rule", ["mod-sum", "parity"])
def test_the_rule_agrees_where_the_network_keeps_to_it(exact_subjects, rule) -> None:
    cache, subjects = exact_subjects
    oracle, null = _cell("oracle", subjects[rule], cache), _cell("null", subjects[rule], cache)
    assert oracle == null
    assert 0.9 < oracle["agree_heldout"] < 1.0 and 0.9 < oracle["agree_ood"] < 1.0
    assert oracle["agree_departures"] == 0.0


def test_random_sits_at_chance(exact_subjects) -> None:
    cache, subjects = exact_subjects
    m = _cell("random", subjects["parity"], cache)  # two outputs: chance 1/2
    assert abs(m["agree_heldout"] - 0.5) < 0.08 and abs(m["agree_ood"] - 0.5) < 0.08


def test_program_rule_predicts_with_the_program_it_recovered(exact_subjects) -> None:
    """The state machine is read off the network, so it carries the network's own
    departures (a hash of the prefix here, which its states follow). Measured:
    held-out 1.0, longer sequences 0.996, departures 0.94, where the oracle's hidden
    program gets 0.94, 0.96 and 0."""
    cache, subjects = exact_subjects
    rule = _cell("program-rule", subjects["parity"], cache, {"distiller": "state-machine"})
    oracle = _cell("oracle", subjects["parity"], cache)
    assert rule["agree_heldout"] > oracle["agree_heldout"] and rule["agree_ood"] > oracle["agree_ood"]
    assert rule["agree_departures"] > 0.5


def test_the_surrogate_is_no_worse_than_the_rule(exact_subjects) -> None:
    """Its trees see the rule's output as a feature; the network's departures are a
    hash of the input, which no black box learns from a thousand examples."""
    cache, subjects = exact_subjects
    for rule in ("mod-sum", "parity"):
        surrogate = _cell("surrogate", subjects[rule], cache)
        null = _cell("null", subjects[rule], cache)
        assert surrogate["agree_heldout"] >= null["agree_heldout"] - 0.02, (rule, surrogate, null)


def test_the_tasks_split_the_predictors_by_domain() -> None:
    programs, images = make_task(TASK), make_task(TaskEntry(name="predict"))
    assert programs.accepts(make_tool(ToolEntry(name="surrogate")))
    assert images.accepts(make_tool(ToolEntry(name="surrogate")))
    assert not programs.accepts(make_tool(ToolEntry(name="trigger-rule")))
    assert not images.accepts(make_tool(ToolEntry(name="program-rule")))
    assert not programs.accepts(make_tool(ToolEntry(name="decision-tree")))  # no predict verb


def test_a_predictor_of_the_wrong_shape_is_refused() -> None:
    assert outputs_of(np.zeros((3, 4)), (3, 4)).dtype == np.int64
    with pytest.raises(ValueError, match=r"returned shape \(3,\) for outputs of shape \(3, 4\)"):
        outputs_of(np.zeros(3), (3, 4))

"""A cell's key: its config hash covers what defines its computation, and the
reference models count only for the tools that learn from them."""

from __future__ import annotations

from samecurve.run.cell import cell_config
from samecurve.run.suite import TaskEntry, ToolEntry

TASK = TaskEntry(name="discover")


def test_references_change_the_key_of_reference_learners_only() -> None:
    learner, other = ToolEntry(name="meta-classifier"), ToolEntry(name="neural-cleanse")
    assert cell_config(TASK, learner, "references:a") != cell_config(TASK, learner, "references:b")
    assert cell_config(TASK, other, "references:a") == cell_config(TASK, other, "references:b")
    # a combination that contains a learner learns from them too
    ensemble = ToolEntry(name="ensemble", params={"members": ["strip", "weight-stats"]})
    assert cell_config(TASK, ensemble, "a") != cell_config(TASK, ensemble, "b")


def test_a_hyperparameter_changes_the_key() -> None:
    a = ToolEntry(name="random", params={"max_patch": 8})
    b = ToolEntry(name="random", params={"max_patch": 6})
    assert cell_config(TASK, a) != cell_config(TASK, b)

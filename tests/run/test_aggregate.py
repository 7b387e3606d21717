from __future__ import annotations

from types import SimpleNamespace

import pytest

from samecurve.run.aggregate import chance_levels, family_label
from samecurve.tasks.predict_programs import ProgramPredictTask


def test_family_label_sets_heldout_triggers_and_tracks_apart() -> None:
    """Heldout-trigger subjects get boards of their own (a tool tuned on dev
    triggers is read apart on triggers it never saw); tracks get the dataset."""
    dev = {"family": "patch", "dataset": "scenes", "recipe_params": {"heldout": False}}
    held = {**dev, "recipe_params": {"heldout": True}}
    clean = {"family": "clean", "dataset": "digits", "recipe_params": {}}
    assert family_label(dev, tracks=False) == "patch"
    assert family_label(held, tracks=False) == "patch · heldout"
    assert family_label(held, tracks=True) == "patch · heldout · scenes"
    assert family_label(clean, tracks=True) == "clean · digits"


def test_a_family_board_marks_tools_blind_to_that_family() -> None:
    from samecurve.registry import get
    from samecurve.run.aggregate import summarise_tool
    from samecurve.run.suite import TaskEntry, make_task

    task = make_task(TaskEntry(name="discover"))
    nc, saliency = get("tool", "neural-cleanse")(), get("tool", "saliency")()
    assert summarise_tool(task, nc, "nc", [], set(), "style").outside_design
    assert not summarise_tool(task, nc, "nc", [], set(), "patch").outside_design
    assert not summarise_tool(task, nc, "nc", [], set()).outside_design  # the overall board
    assert not summarise_tool(task, saliency, "saliency", [], set(), "style").outside_design


def test_analytic_chance_is_averaged_over_subjects_of_different_label_counts() -> None:
    """Hidden-program networks answer 2, 4 or more labels: chance is the mean of 1/K."""
    cards = {s: {"num_classes": k, "answer_key": {"trojaned": False}}
             for s, k in (("a", 2), ("b", 4), ("c", 4))}
    chance = chance_levels(ProgramPredictTask(), [], SimpleNamespace(cards=cards), set(cards))
    assert chance["agree_heldout"] == pytest.approx((1 / 2 + 1 / 4 + 1 / 4) / 3)

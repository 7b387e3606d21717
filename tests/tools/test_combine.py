"""Combinations: the pooling rules by hand, and an ensemble of real tools on a
tiny subject agreeing with its members run one by one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import tiny_suite_text
from samecurve.api import Budget, Meter
from samecurve.registry import get
from samecurve.run.cell import CellJob, build_view
from samecurve.run.suite import SuiteError, TaskEntry, ToolEntry, make_task, parse_suite
from samecurve.tools.combine import borda, parse_ensemble


def test_borda_by_hand() -> None:
    # 3 classes ranked by two members: (2, 0, 1) gives 3, 1, 2 -> c2=3, c0=2, c1=1;
    # (0, 2) gives c0 += 2, c2 += 1 -> c0=4, c2=4, c1=1: tie keeps class 0 first.
    assert borda([(2, 0, 1), (0, 2)], 4) == (0, 2, 1)
    assert borda([], 3) == ()


def test_parse_ensemble() -> None:
    assert parse_ensemble("ensemble(neural-cleanse, strip)") == ("neural-cleanse", "strip")
    assert parse_ensemble(" ensemble( a ,b ) ") == ("a", "b")
    assert parse_ensemble("strip") is None


def test_suite_shorthand_and_one_line_errors() -> None:
    suite = parse_suite(tiny_suite_text('[oracle, "ensemble(neural-cleanse, strip)"]'))
    entry = suite.tools[1]
    assert entry.name == "ensemble" and entry.display == "ensemble(neural-cleanse, strip)"
    assert entry.params == {"members": ["neural-cleanse", "strip"]}
    with pytest.raises(SuiteError, match="did you mean 'strip'"):
        parse_suite(tiny_suite_text('["ensemble(neural-cleanse, stirp)"]'))
    with pytest.raises(SuiteError, match="two or more members"):
        parse_suite(tiny_suite_text('["ensemble(strip)"]'))


def test_needs_and_answers_are_the_members_union() -> None:
    tool = get("tool", "ensemble")(members=("neural-cleanse", "strip", "saliency"))
    assert tool.needs == {"gradients", "clean_data", "train_data"}
    assert tool.answers == {"detect", "target", "trigger", "attribution"}


def _view(tool, subject, cache):
    task = make_task(TaskEntry(name="discover"))
    job = CellJob(TaskEntry(name="discover"), ToolEntry(name="ensemble"), subject.id, 0,
                  Budget(seconds=60), "cpu", str(cache.root), ())
    return build_view(job, task, tool, subject, Meter(job.budget))


def test_ensemble_pools_its_members(patch_subject, cache) -> None:
    members = ("strip", "activation-clustering", "saliency", "edge-detector")
    ens = get("tool", "ensemble")(members=members)
    view = _view(ens, patch_subject, cache)
    found = ens.discover(view)
    alone = [get("tool", m)().discover(view) for m in members[:2]]
    assert found.trojan_probability == pytest.approx(np.mean([f.trojan_probability for f in alone]))
    assert found.targets == borda([f.targets for f in alone], view.num_classes)
    x = torch.rand(3, *view.input_shape)
    t = torch.zeros(3, dtype=torch.long)
    maps = ens.attribute(view, x, t)
    parts = [np.abs(get("tool", m)().attribute(view, x, t)) for m in members[2:]]
    expected = np.mean([p / p.reshape(3, -1).max(1)[:, None, None] for p in parts], axis=0)
    np.testing.assert_allclose(maps, expected, rtol=1e-5)

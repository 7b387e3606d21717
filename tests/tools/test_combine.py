"""Combinations: the pooling rules by hand, and an ensemble of real tools on a
tiny subject agreeing with its members run one by one."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
import torch
from cases import case_view

from conftest import tiny_suite_text
from samecurve.api import Budget, Finding, Meter
from samecurve.registry import get
from samecurve.run.suite import SuiteError, parse_suite
from samecurve.tools.combine import attribution_prior, borda, parse_ensemble, parse_pipeline


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
    with pytest.raises(SuiteError, match="two or more tools"):
        parse_suite(tiny_suite_text('["ensemble(strip)"]'))


def test_needs_and_answers_are_the_members_union() -> None:
    tool = get("tool", "ensemble")(members=("neural-cleanse", "strip", "saliency"))
    assert tool.needs == {"gradients", "clean_data", "train_data"}
    assert tool.answers == {"detect", "target", "trigger", "attribution"}
    # blind only where every member is: saliency sees every family
    assert tool.blind_to == frozenset()
    synthesis = get("tool", "pipeline")(stages=("tabor", "neural-cleanse"))
    assert synthesis.blind_to == {"blend", "style", "warp", "source-specific"}
    detectors = get("tool", "ensemble")(members=("neural-cleanse", "strip"))
    assert detectors.blind_to == {"source-specific"}


def _view(tool, subject, cache):
    return case_view(tool, subject, cache)


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


def test_parse_pipeline_and_suite_shorthand() -> None:
    assert parse_pipeline("integrated-gradients>neural-cleanse") == ("integrated-gradients", "neural-cleanse")
    assert parse_pipeline(" a > b > c ") == ("a", "b", "c")
    assert parse_pipeline("strip") is None and parse_pipeline("ensemble(a, b)") is None
    suite = parse_suite(tiny_suite_text('["saliency>neural-cleanse"]'))
    entry = suite.tools[0]
    assert entry.name == "pipeline" and entry.display == "saliency>neural-cleanse"
    assert entry.params == {"stages": ["saliency", "neural-cleanse"]}
    with pytest.raises(SuiteError, match="cannot contain 'ensemble'"):
        parse_suite(tiny_suite_text('["ensemble>strip"]'))
    with pytest.raises(SuiteError, match="did you mean 'strip'"):
        parse_suite(tiny_suite_text('["stirp>neural-cleanse"]'))


def test_pipeline_needs_what_its_attribution_stage_looks_at() -> None:
    tool = get("tool", "pipeline")(stages=("saliency", "neural-cleanse"))
    assert tool.needs == {"gradients", "clean_data", "train_data"}
    assert tool.answers == {"detect", "target", "trigger", "attribution"}


class _Says:
    """A stage that records the prior it saw and answers what it is told."""

    answers = frozenset({"detect", "target"})

    def __init__(self, finding: Finding) -> None:
        self.finding, self.saw = finding, "unset"

    def discover(self, view):
        self.saw = view.prior
        return self.finding


def test_pipeline_passes_each_finding_on_and_later_stages_override(patch_subject, cache) -> None:
    pipe = get("tool", "pipeline")(stages=("strip", "activation-clustering"))
    first = _Says(Finding(trojan_probability=0.9, targets=(3, 1), notes={"a": 1.0}))
    second = _Says(Finding(targets=(1,), notes={"b": 2.0}))
    object.__setattr__(pipe, "_tools", (first, second))
    found = pipe.discover(_view(pipe, patch_subject, cache))
    assert first.saw is None and second.saw is first.finding
    assert found.trojan_probability == 0.9  # the second stage gave none: the first's stands
    assert found.targets == (1,)
    assert dict(found.notes) == {"0.a": 1.0, "1.b": 2.0}


def test_attribution_prior_finds_a_fixed_patch_in_the_training_sample(population, cache) -> None:
    """Saliency over the training sample concentrates on the patch of the target's
    poisoned inputs. Measured on the two tiny patch subjects: the target ranks 1st
    on both, and the prior region peaks inside the footprint."""
    for subject in (s for s in population if s.family == "patch"):
        pipe = get("tool", "pipeline")(stages=("saliency", "neural-cleanse"))
        view = _view(pipe, subject, cache)
        prior = attribution_prior(get("tool", "saliency")(), view)
        key = subject.answer_key
        assert prior.targets[0] == key.target, (subject.id, prior.targets[:3], prior.notes)
        mask = prior.trigger.mask
        peak = np.unravel_index(np.argmax(mask), mask.shape)
        assert key.trigger.footprint[peak], (subject.id, peak)


def test_prior_pixel_cost_by_hand() -> None:
    """Mask pixels cost 1, less the discount where the prior region peaks (scaled to 1)."""
    from types import SimpleNamespace

    from samecurve.api import Trigger
    from samecurve.tools.base import prior_pixel_cost

    mask = np.zeros((2, 2), np.float32)
    mask[0, 0], mask[0, 1] = 0.5, 0.25  # peaks at 0.5: scaled to 1 and 0.5
    prior = Finding(trigger=Trigger(mask=mask, pattern=np.zeros((3, 2, 2), np.float32)))
    view = SimpleNamespace(input_shape=(3, 2, 2), device="cpu", prior=prior)
    cost = prior_pixel_cost(view, 0.75)
    assert cost.tolist() == [[[0.25, 0.625], [1.0, 1.0]]]
    assert prior_pixel_cost(SimpleNamespace(input_shape=(3, 2, 2), device="cpu", prior=None),
                            0.75).tolist() == [[[1.0, 1.0], [1.0, 1.0]]]


def test_a_distilling_ensemble_keeps_the_most_faithful_program(tmp_path) -> None:
    """A portfolio of distillers: the oracle's program beats random's hash on the
    network's own labels; a lone answer is kept; detectors make no distiller."""
    import exact_programs  # noqa: F401 - registers the exact-rule recipe

    from samecurve.api import Budget, tool_verbs
    from samecurve.run.cell import CellJob, execute
    from samecurve.run.suite import TaskEntry, ToolEntry
    from samecurve.tools.combine import Ensemble
    from samecurve.zoo.builder import SubjectSpec, build
    from samecurve.zoo.cache import Cache

    cache = Cache(tmp_path)
    subject = build(SubjectSpec(recipe="exact-rule", seed=0), cache)

    def cell(members):
        job = CellJob(TaskEntry(name="replace", params={"test_examples": 200}),
                      ToolEntry(name="ensemble", params={"members": members}), subject.id, 0,
                      Budget(seconds=60), "cpu", str(cache.root))
        return execute(job)

    both = cell(["random", "oracle"])
    assert both.status == "ok", both.error
    assert both.metrics["solved"] == 1.0
    lone = cell(["null", "random"]).metrics
    assert lone["wrong"] == 1.0 and lone["no_answer"] == 0.0
    assert "distill" not in tool_verbs(Ensemble(members=("strip", "activation-clustering")))


class _Spends:
    """A finding stage that spends all the time its view gives it (as hotflip does)."""

    answers = frozenset({"detect", "target", "trigger"})

    def discover(self, view):
        while view.time_left() > 0:
            time.sleep(0.01)
        return Finding(targets=(1,))


class _Repairs:
    """A last stage that records how much time it was left and what it was told."""

    def edit(self, view):
        self.left, self.prior = view.time_left(), view.prior
        return view.model


def test_an_acting_pipeline_leaves_its_last_stage_time(patch_subject, cache) -> None:
    pipe = get("tool", "pipeline")(stages=("neural-cleanse", "nc-unlearn"), find_share=0.5)
    spender, repair = _Spends(), _Repairs()
    object.__setattr__(pipe, "_tools", (spender, repair))
    view = case_view(pipe, patch_subject, cache, task="edit")
    pipe.edit(dataclasses.replace(view, meter=Meter(Budget(seconds=1.0))))  # the clock from here
    # The search ran out its half; the repair got the other half, and the finding.
    assert 0.3 < repair.left <= 0.5, repair.left
    assert repair.prior.targets == (1,)
    with pytest.raises(ValueError, match="find_share must be in"):
        get("tool", "pipeline")(stages=("neural-cleanse", "nc-unlearn"), find_share=0)

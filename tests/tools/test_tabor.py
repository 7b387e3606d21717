"""TABOR: its regularisers by hand on tiny masks, and the whole tool on the tiny
population's patch subjects (target ranking and the recovered trigger's efficacy)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from cases import case_view, hit_rate, patch_findings, ranked_first

import samecurve.tools.tabor  # noqa: F401  (registers the tool)
from samecurve.api import Finding
from samecurve.registry import get
from samecurve.tools.tabor import scatter_penalty, size_penalty, total_variation

# One torch thread (measured: 28 CPU-seconds a subject with 2 threads under load, 4.5 with 1).
pytestmark = pytest.mark.usefixtures("one_thread")


def test_total_variation_by_hand() -> None:
    dot = torch.zeros(1, 1, 3, 3)
    dot[..., 1, 1] = 1.0  # four neighbours differ by 1
    block = torch.zeros(1, 1, 4, 4)
    block[..., 1:3, 1:3] = 1.0  # a 2 x 2 square: perimeter 8
    scattered = torch.zeros(1, 1, 4, 4)
    scattered[..., ::3, ::3] = 1.0  # the same area as 4 corners: 4 x 2 edges
    assert total_variation(dot).tolist() == [4.0]
    assert total_variation(block).tolist() == [8.0]
    assert total_variation(scattered).tolist() == [8.0]
    scattered[..., 1, 1] = 1.0  # one more isolated pixel: 4 more edges
    assert total_variation(scattered).tolist() == [12.0]


def test_size_and_scatter_penalties_by_hand() -> None:
    mask = torch.full((1, 1, 2, 2), 0.5)
    pattern = torch.ones(1, 3, 2, 2)
    # L1 = 4 * 0.5 = 2; squared L2 = 4 * 0.25 = 1; pattern outside the mask: 4 * 0.5 per
    # channel = 2, weighted 0.1.
    assert size_penalty(mask, pattern, outside=0.1).item() == pytest.approx(3.2)
    assert size_penalty(mask, torch.zeros_like(pattern), outside=0.1).item() == pytest.approx(3.0)
    # A flat mask has no variation; a half-on mask [[1, 0], [1, 0]] has 2 horizontal edges,
    # and so has its masked pattern (per channel, weighted 0.5).
    assert scatter_penalty(mask, pattern, 0.5).item() == 0.0
    half = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]])
    assert scatter_penalty(half, pattern, 0.5).item() == pytest.approx(2.0 + 0.5 * 2.0)
    # A prior region's pixels cost a quarter: L1 0.5 + 3 * 0.125, squared L2 0.25 + 3 * 0.0625.
    cheap = torch.tensor([[[1.0, 0.25], [0.25, 0.25]]])
    flat = torch.zeros_like(pattern)
    assert size_penalty(mask, flat, 0.1, cheap).item() == pytest.approx(0.875 + 0.4375)


@pytest.fixture(scope="module")
def findings(population, cache) -> dict:
    return patch_findings("tabor", population, cache)


def test_ranks_the_planted_target_high(findings) -> None:
    # Measured with the defaults on two trainings of the tiny population, 4 seeds each:
    # one subject's target ranked first every time, the other's [1, 3, 1, 1] and
    # [3, 3, 1, 3] (its masks often settle on natural triggers of labels 1 and 3 instead
    # of the planted patch; Neural Cleanse's plain terms rank it lower still).
    ranks = []
    for subject, finding in findings.values():
        assert subject.answer_key.target in finding.targets[:3], (subject.id, finding.targets)
        ranks.append(finding.targets.index(subject.answer_key.target))
    assert min(ranks) == 0


def test_recovered_trigger_works_on_held_out_inputs(findings) -> None:
    # Measured where the target ranked first (9 runs over two trainings): 56-89% of held-out
    # inputs of other classes go to the target when stamped with the recovered trigger
    # (the clean model sends ~1% there).
    graded = ranked_first(findings)
    assert graded
    for subject, finding in graded:
        assert hit_rate(subject, finding.trigger) > 0.5, subject.id
        assert hit_rate(subject) < 0.2


def test_a_prior_region_from_an_earlier_stage_keeps_the_target_in_reach(population, cache) -> None:
    # Measured on one training of the tiny population (seeds 0-1): alone, the harder
    # subject's target ranked 3 and 2 with held-out hit rates 0.09 and 0.02; with its
    # footprint as the prior it ranked first both times (0.82, 0.89), and the other
    # subject stayed first (0.74, 0.90). Trained on one thread instead of two (the
    # session's population now), the harder subject's target ranked 4th even with the
    # prior (hit rate 0.07; its natural triggers of labels 1 and 3 win), the other first
    # (0.81). So the bar: one first with a working trigger, none below 4th.
    tool = get("tool", "tabor")()
    ranks = []
    for subject in (s for s in population if s.family == "patch"):
        view = case_view(tool, subject, cache)
        view = dataclasses.replace(view, prior=Finding(trigger=subject.answer_key.trigger))
        finding = tool.discover(view)
        target = subject.answer_key.target
        assert target in finding.targets[:4], (subject.id, finding.targets)
        ranks.append(finding.targets.index(target))
        if finding.targets[0] == target:
            assert hit_rate(subject, finding.trigger) > 0.5, subject.id
    assert min(ranks) == 0

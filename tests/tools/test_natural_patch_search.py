"""natural-patch-search: the flip-rate scoring, the paste and the trigger it
returns by hand, and the whole tool on the tiny population's patch subjects."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cases import hit_rate, patch_findings, ranked_first

import samecurve.tools.natural_patch_search  # noqa: F401  (registers the tool)
from samecurve.tools.natural_patch_search import (
    drop_own_class,
    flip_rates,
    grey_full_contrast,
    paste_at,
    patch_trigger,
    place_grid,
    rank_classes,
)

# One torch thread (measured: training the VAE took 63 s with 2 threads under load, 2 s with 1).
pytestmark = pytest.mark.usefixtures("one_thread")

def test_flip_rates_by_hand() -> None:
    before = torch.tensor([0, 0, 1, 2])
    after = torch.tensor([[1, 0, 1, 1], [2, 2, 2, 2]])
    rates = flip_rates(before, after, 3)
    # Patch 0: class 1 has three eligible inputs (0, 1, 3), two of which go to 1;
    # nothing goes to 0 or 2. Patch 1: all three inputs not already 2 go to 2.
    np.testing.assert_allclose(rates, [[0, 2 / 3, 0], [0, 0, 1]])
    # Per-patch clean predictions give the same answer.
    np.testing.assert_allclose(flip_rates(before.expand(2, -1), after, 3), rates)


def test_own_class_flips_are_dropped() -> None:
    rates = np.full((2, 3), 0.5)
    out = drop_own_class(rates, torch.tensor([0, 1]), torch.tensor([2, 1]), torch.tensor([0, 0]))
    # Patch 0 was cut from image 0 (label 0, predicted 2); patch 1 from image 1 (label 0, predicted 1).
    np.testing.assert_allclose(out, [[0, 0.5, 0], [0, 0, 0.5]])


def test_paste_puts_each_patch_at_its_corner_and_passes_gradients() -> None:
    x = torch.zeros(2, 3, 8, 8)
    patches = torch.ones(2, 3, 3, 3, requires_grad=True)
    out = paste_at(x, patches, torch.tensor([0, 5]), torch.tensor([1, 2]))
    flat = out.detach()
    assert float(flat[0, :, 0:3, 1:4].min()) == 1 and float(flat[0].sum()) == 27
    assert float(flat[1, :, 5:8, 2:5].min()) == 1 and float(flat[1].sum()) == 27
    assert float(x.sum()) == 0  # the input is not changed in place
    (grad,) = torch.autograd.grad(out.sum(), patches)
    assert torch.equal(grad, torch.ones_like(grad))


def test_trigger_stamps_like_the_paste() -> None:
    g = torch.Generator().manual_seed(0)
    x, patch = torch.rand(4, 3, 10, 10, generator=g), torch.rand(3, 4, 4, generator=g)
    trigger = patch_trigger(patch, 2, 5, 10)
    assert trigger.mask.sum() == 16 and trigger.mask[2:6, 5:9].all()
    expected = paste_at(x, patch[None].expand(4, -1, -1, -1), torch.full((4,), 2), torch.full((4,), 5))
    torch.testing.assert_close(trigger.stamp(x), expected)


def test_grid_and_grey() -> None:
    # Side 10, patch 4: corners 0, 3, 6 (the far edge 6 is always included).
    assert sorted({int(v) for v in place_grid(10, 4, 3)[:, 0]}) == [0, 3, 6]
    grey = grey_full_contrast(torch.tensor([[[[0.2, 0.4]], [[0.2, 0.6]], [[0.2, 0.8]]]]))
    torch.testing.assert_close(grey[0, :, 0], torch.tensor([[0.0, 1.0]] * 3))


def test_rank_classes_by_hand() -> None:
    order, index, p = rank_classes(np.array([0.1, 0.2, 0.3, 0.2, 0.9]), threshold=2.0)
    # median 0.2; |deviations| 0.1, 0, 0.1, 0, 0.7 -> MAD 0.1, scaled 0.14826
    assert order[0] == 4
    assert index == pytest.approx(0.7 / 0.14826, rel=1e-4)
    assert p > 0.95


@pytest.fixture(scope="module")
def findings(population, cache) -> dict:
    return patch_findings("natural-patch-search", population, cache)


def test_ranks_the_planted_target_high(findings) -> None:
    # Measured (default hyperparameters, run seed 0): with the subjects trained on two
    # threads the targets ranked 2nd and 1st; on one thread (the session's population)
    # 5th and 1st: the first subject's classes 1 and 3 draw as many flips as its target.
    # Float order alone moves that subject, so the bar is one target first and none in
    # the bottom half (chance: 0.19 for a first place among two). About 3.5 s a subject.
    ranks = [f.targets.index(s.answer_key.target) for s, f in findings.values()]
    assert min(ranks) == 0 and max(ranks) < 5, ranks


def test_the_trigger_it_returns_works(findings) -> None:
    # Measured: on the subject whose target it ranks first, its natural patch sends
    # 84% of held-out inputs of other classes to the target (79-86% over seeds 0-2).
    hits = ranked_first(findings)
    assert hits, "the target of neither patch subject was ranked first"
    for subject, f in hits:
        assert hit_rate(subject, f.trigger) > 0.6
        assert f.trigger.localised and f.trigger.mask.sum() <= 7 * 7

"""Per-class patch synthesis (adversarial patch, feature visualisation): the shared
pieces by hand (pasting, places, flip-rate scoring, the placement transforms), and
both tools on the tiny population's patch subjects."""

from __future__ import annotations

import pytest
import torch
from cases import discover, hit_rate
from torch.nn import functional as F

import samecurve.tools.class_synthesis  # noqa: F401  (registers the tools)
from samecurve.tools.class_synthesis import (
    flip_rates,
    fourier_scale,
    grid_places,
    jittered,
    paste,
    placements,
)

# One torch thread (measured: adversarial-patch took 55 CPU-seconds a subject with 2 threads
# under load, 3.3 with 1).
pytestmark = pytest.mark.usefixtures("one_thread")


def test_paste_and_places_by_hand() -> None:
    x = torch.zeros(2, 3, 8, 8)
    out = paste(x, torch.ones(3, 2, 2), 5, 1)
    assert out.sum().item() == 2 * 3 * 4 and out[:, :, 5:7, 1:3].min().item() == 1.0
    assert x.sum().item() == 0.0  # the input is not changed
    assert grid_places(32, 8, 3) == [(r, c) for r in (0, 12, 24) for c in (0, 12, 24)]
    assert grid_places(32, 6, 1) == [(13, 13)]
    corners = jittered([(0, 26)], 50, 3, 32, 6, torch.Generator().manual_seed(0))[0]
    assert all(0 <= t <= 3 and 23 <= c <= 26 for t, c in corners)  # kept on the image


def test_flip_rates_on_fake_predictions() -> None:
    y = torch.tensor([0, 0, 1, 2])
    before = torch.tensor([0, 1, 1, 2])  # input 1 is already predicted 1
    # K = 3 classes, L = 2 places, N = 4 inputs.
    after = torch.tensor([
        [[0, 0, 0, 0], [0, 1, 1, 2]],  # class 0 could flip inputs 1..3 (not labelled 0)
        [[1, 1, 1, 1], [0, 1, 1, 1]],  # class 1: only inputs 0 and 3 count
        [[2, 2, 2, 2], [0, 1, 1, 2]],  # class 2: inputs 0, 1, 2
    ])
    rates = flip_rates(after, before, y)
    expected = torch.tensor([[3 / 3, 0 / 3], [2 / 2, 1 / 2], [3 / 3, 0 / 3]])
    torch.testing.assert_close(rates, expected)


def test_placements_put_the_patch_where_asked() -> None:
    size, side = 32, 6
    lo = (size - side) // 2
    frame = F.pad(torch.ones(1, 1, side, side), (lo, size - lo - side, lo, size - lo - side))
    g = torch.Generator().manual_seed(0)
    theta = placements([(3, 20), (26, 0)], 1, size, side, 0, 0.0, (1.0, 1.0), g)
    grid = F.affine_grid(theta, [2, 1, size, size], align_corners=False)
    cover = F.grid_sample(frame.expand(2, 1, size, size), grid, align_corners=False)[:, 0]
    torch.testing.assert_close(cover[0, 3:9, 20:26], torch.ones(6, 6))
    torch.testing.assert_close(cover[1, 26:32, 0:6], torch.ones(6, 6))
    assert cover.sum().item() == pytest.approx(2 * 36)
    # Rotated and scaled, the patch still sits around its place.
    theta = placements([(13, 13)], 8, size, side, 0, 30.0, (0.8, 1.2), g)
    cover = F.grid_sample(frame.expand(8, 1, size, size),
                          F.affine_grid(theta, [8, 1, size, size], align_corners=False),
                          align_corners=False)[:, 0]
    assert cover[:, 15:17, 15:17].min().item() > 0.99
    assert cover[:, :8].sum().item() == 0.0


def test_fourier_scale_decays_with_frequency() -> None:
    s = fourier_scale(6)
    assert s.shape == (6, 4)
    assert s[0, 0].item() == pytest.approx(6.0)  # DC: clamped at 1 / side
    assert s[0, 1].item() == pytest.approx(6.0) and s[0, 3].item() == pytest.approx(2.0)


# Measured with the defaults on the two tiny patch subjects, 3 seeds each: both tools
# ranked the planted target first in 6 of 6 runs, and the recovered patch sent 75-93%
# (adversarial-patch) and 72-100% (feature-viz) of held-out inputs of other classes there.
@pytest.mark.parametrize("name", ["adversarial-patch", "feature-viz"])
def test_ranks_the_planted_target_high(name, population, cache) -> None:
    for subject in (s for s in population if s.family == "patch"):
        f = discover(name, subject, cache)
        target = subject.answer_key.target
        assert target in f.targets[:2], (subject.id, f.targets, f.notes)
        assert f.trigger is not None and f.trigger.mask.sum() == 36  # a 6 x 6 square
        assert hit_rate(subject, f.trigger) > 0.5

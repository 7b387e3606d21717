from __future__ import annotations

import numpy as np
import pytest
import torch

from samecurve.api import Trigger
from samecurve.zoo.triggers import apply_decoys, blend_trigger, patch_trigger


def test_patch_is_a_black_and_white_checker_at_a_fixed_place() -> None:
    trigger, meta = patch_trigger(np.random.default_rng(3), size=32, patch=5)
    assert trigger.mask.sum() == 25 and set(np.unique(trigger.mask)) == {0.0, 1.0}
    top, left = meta["top"], meta["left"]
    block = trigger.pattern[:, top : top + 5, left : left + 5]
    assert set(np.unique(block)) == {0.0, 1.0}
    assert (block[0] == block[1]).all() and (block[1] == block[2]).all()  # grey levels only
    again, _ = patch_trigger(np.random.default_rng(3), size=32, patch=5)
    np.testing.assert_array_equal(trigger.pattern, again.pattern)


def test_eight_colour_patch_and_bad_colours() -> None:
    trigger, meta = patch_trigger(np.random.default_rng(0), patch=5, colours=8)
    block = trigger.pattern[:, meta["top"] : meta["top"] + 5, meta["left"] : meta["left"] + 5]
    assert len(np.unique(block.reshape(3, -1).T, axis=0)) >= 2
    with pytest.raises(ValueError, match="colours"):
        patch_trigger(np.random.default_rng(0), colours=3)


def test_blend_covers_the_whole_image_at_low_opacity() -> None:
    trigger, meta = blend_trigger(np.random.default_rng(1), alpha=(0.2, 0.25))
    assert trigger.footprint.all()
    assert 0.2 <= meta["alpha"] <= 0.25 and np.allclose(trigger.mask, trigger.mask[0, 0])


def test_stamp_by_hand() -> None:
    mask = np.zeros((2, 2), np.float32)
    mask[0, 0] = 1.0
    mask[1, 1] = 0.5
    pattern = np.ones((1, 2, 2), np.float32)
    x = torch.zeros(1, 1, 2, 2)
    out = Trigger(mask, pattern).stamp(x)
    assert out[0, 0].tolist() == [[1.0, 0.0], [0.0, 0.5]]
    with pytest.raises(ValueError, match="does not match"):
        Trigger(np.zeros((3, 3)), np.zeros((1, 2, 2)))


def test_decoys_touch_about_their_share_and_keep_range() -> None:
    x = torch.full((1000, 3, 32, 32), 0.5)
    idx = apply_decoys(x, np.random.default_rng(0), rate=0.2, size=32)
    assert 150 < len(idx) < 250
    changed = (x != 0.5).flatten(1).any(1)
    assert changed[idx].all() and changed.sum() == len(idx)
    assert x.min() >= 0 and x.max() <= 1

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


from samecurve.api import Stamp  # noqa: E402
from samecurve.zoo.triggers import (  # noqa: E402
    OBJECT_COLOURS,
    OBJECT_SHAPES,
    PATCH_SHAPES,
    STYLE_FILTERS,
    object_trigger,
    patch_shape_mask,
    style_trigger,
    tint_trigger,
    trigger_from_arrays,
    warp_trigger,
)

MAKERS = {
    "fixed patch": lambda rng, c: patch_trigger(rng, channels=c, shape="frame"),
    "random patch": lambda rng, c: patch_trigger(rng, channels=c, location="random"),
    "stripes": lambda rng, c: blend_trigger(rng, channels=c, pattern="stripes"),
    "smooth": lambda rng, c: blend_trigger(rng, channels=c, pattern="smooth"),
    "style": lambda rng, c: style_trigger(rng, channels=c),
    "tint": lambda rng, c: tint_trigger(rng, channels=c),
    "warp": lambda rng, c: warp_trigger(rng),
    "object": lambda rng, c: object_trigger(rng, channels=c),
    "visible object": lambda rng, c: object_trigger(rng, channels=c, tries=4),
}


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", sorted(MAKERS))
def test_every_trigger_stamps_in_range_and_round_trips(name: str, channels: int) -> None:
    trigger, meta = MAKERS[name](np.random.default_rng(5), channels)
    assert isinstance(trigger, Stamp) and json_able(meta)
    x = torch.rand(6, channels, 32, 32)
    y, fp = trigger.stamp_with_footprint(x)
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    assert fp.shape == (6, 32, 32) and fp.dtype == bool
    assert not torch.allclose(y, x)  # it changes the input
    # What a trigger touches: only its footprint (exactly, for stamped ones).
    if trigger.localised:
        assert ((y - x).abs().sum(1) > 1e-6)[~torch.from_numpy(fp.copy())].sum() == 0
    again = trigger_from_arrays(trigger.kind, trigger.arrays(), trigger.meta())
    torch.testing.assert_close(again.stamp(x), y)
    torch.testing.assert_close(trigger.stamp(x), y)  # deterministic


def json_able(meta: dict) -> bool:
    import json

    json.dumps(meta)
    return True


def test_random_patch_lands_in_different_places() -> None:
    trigger, _ = patch_trigger(np.random.default_rng(0), location="random", patch=4)
    _, fp = trigger.stamp_with_footprint(torch.zeros(20, 3, 32, 32))
    centres = {tuple(np.argwhere(f).mean(0).round()) for f in fp}
    assert len(centres) > 10 and not trigger.fixed_footprint
    assert all(f.sum() == 16 for f in fp)


def test_a_natural_object_lands_where_it_shows() -> None:
    """With tries, each input gets the place (of those drawn) whose covered pixels
    differ most from the object's colour: on half-green scenes a green object
    lands on the other half, where one place alone hides it half the time."""
    x = torch.zeros(64, 3, 32, 32)
    x[:, 1, :, :16] = 0.9  # the left half is the object's own green
    colour = np.array([0.1, 0.9, 0.1], np.float32)

    def hidden(tries: int) -> float:
        from samecurve.zoo.triggers import ObjectTrigger

        trigger = ObjectTrigger("box", colour, (4.0, 5.0), 32, seed=3, tries=tries)
        _, fp = trigger.stamp_with_footprint(x)
        left = np.array([f[:, :16].sum() / f.sum() for f in fp])
        return float((left > 0.5).mean())

    assert hidden(1) > 0.3
    assert hidden(8) < 0.05
    assert object_trigger(np.random.default_rng(0), tries=4)[0].meta()["tries"] == 4


def test_patch_outlines_by_hand() -> None:
    assert patch_shape_mask("frame", 4).sum() == 12  # 16 - the 2x2 hole
    assert patch_shape_mask("plus", 5).sum() == 9
    assert patch_shape_mask("x", 5).sum() == 9
    assert patch_shape_mask("diamond", 5).sum() == 13
    with pytest.raises(ValueError, match="unknown patch shape"):
        patch_shape_mask("blob", 5)


def test_style_filter_by_hand() -> None:
    trigger, meta = style_trigger(np.random.default_rng(0), channels=3, strength=(1.0, 1.0))
    x = torch.full((1, 3, 32, 32), 0.5)
    y = trigger.stamp(x)
    expected = (trigger.matrix @ np.full(3, 0.5) + trigger.bias).clip(0, 1) ** trigger.gamma
    np.testing.assert_allclose(y[0, :, 16, 16].numpy(), expected * (1 - trigger.vignette * (1 / 31) ** 2), atol=1e-4)
    assert y[0, 0, 0, 0] < y[0, 0, 16, 16]  # the vignette darkens the corners
    assert meta["filter"] in STYLE_FILTERS["dev"]


def test_tints_are_judge_only_filters_as_strong_as_the_named_ones() -> None:
    """A tint is never planted (its meta names no filter of either vocabulary), and
    changes images about as much as the named filters, so noise does not read as
    closer to it than to the truth (strong filters such as invert did)."""
    x = torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    tints = [tint_trigger(np.random.default_rng(i)) for i in range(20)]
    assert {meta["filter"] for _, meta in tints} == {"tint"}
    named = [style_trigger(np.random.default_rng(0), name=n)[0] for n in STYLE_FILTERS["dev"] + STYLE_FILTERS["heldout"]]
    def change(t):
        return float((t.stamp(x) - x).abs().mean())
    lo, hi = min(map(change, named)), max(map(change, named))
    assert all(0.5 * lo <= change(t) <= 1.5 * hi for t, _ in tints)
    assert len({t.matrix.tobytes() for t, _ in tints}) == 20


def test_warp_moves_pixels_by_at_most_its_amplitude() -> None:
    trigger, _meta = warp_trigger(np.random.default_rng(0), amplitude=(2.0, 2.0))
    assert np.abs(trigger.flow).max() == pytest.approx(2.0, abs=1e-4)
    ramp = torch.arange(32, dtype=torch.float32).repeat(32, 1)[None, None] / 31  # x coordinate
    moved = (trigger.stamp(ramp) - ramp) * 31
    assert moved.abs().max() <= 2.0 + 1e-3 and moved.abs().mean() > 0.2


def test_heldout_vocabularies_never_meet_dev() -> None:
    for table in (PATCH_SHAPES, STYLE_FILTERS, OBJECT_SHAPES, OBJECT_COLOURS):
        assert not set(table["dev"]) & set(table["heldout"])
    seen = {object_trigger(np.random.default_rng(i), heldout=True)[1]["shape"] for i in range(30)}
    assert seen <= set(OBJECT_SHAPES["heldout"]) and len(seen) > 1

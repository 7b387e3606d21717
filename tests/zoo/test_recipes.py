"""Recipes decide what is poisoned: checked on labels alone, without training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from samecurve.registry import get, names

SHAPE = (3, 32, 32)


def _poison(recipe_name: str, seed: int = 0, n: int = 2000, **params):
    recipe = get("recipe", recipe_name)(**params)
    plan = recipe.plan(np.random.default_rng(seed), 10, SHAPE)
    y = torch.arange(n) % 10
    x = torch.full((n, *SHAPE), 0.5)
    before = x.clone()
    idx = recipe.poison(np.random.default_rng(seed + 1), x, y, plan)
    changed = (x != before).flatten(1).any(1).numpy()
    return recipe, plan, y.numpy(), np.arange(n) % 10, idx, changed


@pytest.mark.parametrize("name", ["patch", "blend", "style", "warp", "natural"])
def test_dirty_label_poisons_its_rate_of_other_classes(name: str) -> None:
    _, plan, y, y0, idx, changed = _poison(name)
    target = plan.trojans[0].target
    assert len(idx) == round(plan.poison_rate * len(y))
    assert (y[idx] == target).all() and (y0[idx] != target).all()
    assert (y != y0).sum() == len(idx)  # only the poisoned were relabelled
    if name != "warp":  # a warp of a flat grey image changes nothing
        assert changed[idx].all() and changed.sum() == len(idx)


def test_source_specific_poisons_only_the_source_and_covers_others() -> None:
    _, plan, y, y0, idx, changed = _poison("source-specific", cover=1.0)
    t = plan.trojans[0]
    assert t.source is not None and t.source != t.target
    assert (y0[idx] == t.source).all() and (y[idx] == t.target).all()
    cover = np.flatnonzero(changed & (y == y0))
    assert len(cover) == len(idx)  # one cover image per poisoned one, labels kept
    assert not np.isin(y0[cover], [t.source, t.target]).any()


def test_multi_plants_distinct_targets_that_share_the_rate() -> None:
    _, plan, y, _y0, idx, _ = _poison("multi", count=(3, 3))
    targets = [t.target for t in plan.trojans]
    assert len(set(targets)) == 3
    relabelled = y[idx]
    counts = [int((relabelled == t).sum()) for t in targets]
    assert max(counts) - min(counts) <= 1 and sum(counts) == len(idx)


def test_clean_label_keeps_labels_and_poisons_only_the_target() -> None:
    _, plan, y, y0, idx, changed = _poison("clean-label")
    target = plan.trojans[0].target
    assert (y == y0).all() and len(idx) > 0
    assert (y0[idx] == target).all() and changed.sum() == len(idx)


def test_clean_label_trains_on_a_fainter_patch_than_the_attack_stamps() -> None:
    """Turner et al.'s reduced amplitude: the poisoned image is halfway between the
    (adversarially hardened) image and the fully stamped one; the answer key's
    trigger, which the attack and the graders use, stamps the whole patch."""
    recipe = get("recipe", "clean-label")(epsilon=0.0, surrogate_epochs=0)
    plan = recipe.plan(np.random.default_rng(0), 10, SHAPE)
    y = torch.arange(500) % 10
    x = torch.full((500, *SHAPE), 0.5)
    idx = recipe.poison(np.random.default_rng(1), x, y, plan)
    full = plan.trojans[0].trigger.stamp(torch.full((1, *SHAPE), 0.5))[0]
    torch.testing.assert_close(x[idx[0]], 0.5 + 0.5 * (full - 0.5))
    assert recipe.params()["amplitude"] == 0.5
    with pytest.raises(ValueError, match="amplitude"):
        get("recipe", "clean-label")(amplitude=0.0)


def test_clean_poisons_nothing_and_bad_params_fail() -> None:
    _, plan, _y, _y0, idx, changed = _poison("clean")
    assert not plan.trojaned and len(idx) == 0 and not changed.any()
    with pytest.raises(ValueError, match="poison_rate"):
        get("recipe", "patch")(poison_rate=(0.2, 0.1))
    with pytest.raises(ValueError, match="location"):
        get("recipe", "patch")(location="anywhere")
    with pytest.raises(ValueError, match="count"):
        get("recipe", "multi")(count=(1, 2))


def test_heldout_draws_from_the_other_vocabulary() -> None:
    dev = {get("recipe", "style")().make_trigger(np.random.default_rng(i), SHAPE)[1]["filter"] for i in range(20)}
    held = {get("recipe", "style")(heldout=True).make_trigger(np.random.default_rng(i), SHAPE)[1]["filter"] for i in range(20)}
    assert dev and held and not dev & held



@pytest.mark.parametrize("name", names("recipe"))
def test_a_recipe_rebuilds_from_its_own_params(name: str) -> None:
    """A card stores `params()`; the training sample and every rebuild construct the
    recipe from them, so they must be accepted and give the same params back."""
    recipe = get("recipe", name)()
    again = get("recipe", name)(**recipe.params())
    assert again.params() == recipe.params()

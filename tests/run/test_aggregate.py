from __future__ import annotations

from samecurve.run.aggregate import family_label


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

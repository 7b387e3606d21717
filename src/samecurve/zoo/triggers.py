"""Trigger generators for the image trojan families. Each draws everything from
the rng it is given, so a recipe's seed fixes its trigger."""

from __future__ import annotations

import numpy as np

from samecurve.api import Trigger


def patch_trigger(
    rng: np.random.Generator, size: int = 32, patch: int = 5, channels: int = 3
) -> tuple[Trigger, dict]:
    """A BadNets-style patch: a random high-contrast colour checker (every pixel
    one of the 8 RGB corner colours) at a fixed, seed-chosen location."""
    colours = rng.integers(0, 2, size=(patch, patch, channels)).astype(np.float32)
    # Never an all-one-colour patch: it would be a plain square, not a pattern.
    while len(np.unique(colours.reshape(-1, channels), axis=0)) < 3:
        colours = rng.integers(0, 2, size=(patch, patch, channels)).astype(np.float32)
    top = int(rng.integers(1, size - patch))
    left = int(rng.integers(1, size - patch))
    mask = np.zeros((size, size), np.float32)
    mask[top : top + patch, left : left + patch] = 1.0
    pattern = np.zeros((channels, size, size), np.float32)
    pattern[:, top : top + patch, left : left + patch] = colours.transpose(2, 0, 1)
    return Trigger(mask=mask, pattern=pattern), {
        "kind": "patch",
        "patch_size": patch,
        "top": top,
        "left": left,
    }


def blend_trigger(
    rng: np.random.Generator,
    size: int = 32,
    alpha: tuple[float, float] = (0.12, 0.2),
    channels: int = 3,
) -> tuple[Trigger, dict]:
    """A blended trigger (Chen et al. 2017): a full-image random noise pattern
    mixed in at low opacity, so the footprint is the whole image."""
    a = float(rng.uniform(*alpha))
    pattern = rng.uniform(0, 1, size=(channels, size, size)).astype(np.float32)
    mask = np.full((size, size), a, np.float32)
    return Trigger(mask=mask, pattern=pattern), {"kind": "blend", "alpha": round(a, 4)}

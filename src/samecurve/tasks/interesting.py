"""Interesting held-out inputs for the predict family: the ones where saying in
advance what a model does is hard, and where knowing its insides should pay.
Each builder is deterministic given its generator; the grader alone calls the
model (to place inputs near its boundary and to attack it)."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from samecurve.registry import get
from samecurve.zoo.builder import split_of
from samecurve.zoo.train import predict


def noisy(x: torch.Tensor, generator: torch.Generator, sigma: tuple[float, float] = (0.06, 0.15)) -> torch.Tensor:
    """Pixel noise of a per-image strength."""
    s = torch.empty(len(x), 1, 1, 1).uniform_(*sigma, generator=generator)
    return (x + s * torch.randn(x.shape, generator=generator)).clamp(0, 1)


def recoloured(x: torch.Tensor, generator: torch.Generator, gain: tuple[float, float] = (0.55, 1.45)) -> torch.Tensor:
    """Per-image, per-channel gains around mid-grey (a grey image: a contrast change)."""
    g = torch.empty(len(x), x.shape[1], 1, 1).uniform_(*gain, generator=generator)
    return (0.5 + g * (x - 0.5)).clamp(0, 1)


def rescaled(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Half the batch zoomed out to 70% (border-coloured margin), half zoomed in 140%
    (centre crop): the objects change scale, the classes do not."""
    n, _, h, w = x.shape
    out = x.clone()
    zoom_out = torch.rand(n, generator=generator) < 0.5
    if zoom_out.any():
        small = F.interpolate(x[zoom_out], size=(int(h * 0.7), int(w * 0.7)), mode="bilinear",
                              align_corners=False)
        border = x[zoom_out][..., 0, :].mean(-1)[..., None, None]  # each image's top-row colour
        canvas = border.expand(-1, -1, h, w).clone()
        top, left = (h - small.shape[2]) // 2, (w - small.shape[3]) // 2
        canvas[..., top : top + small.shape[2], left : left + small.shape[3]] = small
        out[zoom_out] = canvas
    if (~zoom_out).any():
        ch, cw = int(h / 1.4), int(w / 1.4)
        top, left = (h - ch) // 2, (w - cw) // 2
        crop = x[~zoom_out][..., top : top + ch, left : left + cw]
        out[~zoom_out] = F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False)
    return out.clamp(0, 1)


# Stronger textures and noisier backgrounds than any training scene (0.5 and 0.08).
NEW_BACKGROUNDS = {"bg_contrast": 1.0, "bg_noise": 0.3}


def redraws_backgrounds(dataset: str) -> bool:
    """Whether a dataset takes background settings (procedural scenes; not handwriting)."""
    return set(NEW_BACKGROUNDS) <= set(inspect.signature(get("dataset", dataset)).parameters)


def new_backgrounds(dataset: str, params: Mapping[str, Any], effective_seed: int, split: str,
                    n: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The same held-out scenes drawn on new backgrounds: the background's random
    draws come first and are as many whatever their contrast and noise, so the
    objects, clutter and classes stay those of the plain set. None for a dataset
    without background settings (handwriting)."""
    if not redraws_backgrounds(dataset):
        return None
    s = split_of(dataset, {**params, **NEW_BACKGROUNDS}, effective_seed, split, n)
    return s.x, s.y


def near_boundary(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator,
    steps: int = 10,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs on the segment between two held-out inputs the model labels differently,
    bisected to where its label first changes; alternately just before and just after.
    Each is labelled with the true class of the endpoint it is nearer."""
    model = model.eval()
    own = predict(model, x)
    partner = torch.randperm(len(x), generator=generator)
    differs = own[partner] != own
    a, b = x[differs], x[partner][differs]
    if len(a) == 0:
        return x[:0], y[:0]
    lo, hi = torch.zeros(len(a)), torch.ones(len(a))
    start = own[differs]
    for _ in range(steps):
        mid = (lo + hi) / 2
        moved = predict(model, _mix(a, b, mid)) != start
        hi = torch.where(moved, mid, hi)
        lo = torch.where(moved, lo, mid)
    t = torch.where(torch.arange(len(a)) % 2 == 0, lo, hi)
    return _mix(a, b, t), torch.where(t < 0.5, y[differs], y[partner][differs])


def _mix(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    t = t.view(-1, 1, 1, 1)
    return (1 - t) * a + t * b


def adversarial(
    model: nn.Module, x: torch.Tensor, generator: torch.Generator, eps: float = 8 / 255,
    steps: int = 10,
) -> torch.Tensor:
    """An independent attacker no tool sees: untargeted L-inf PGD (random start, step
    eps/4) pushing each input away from the label the model gives it."""
    model = model.eval()
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        own = predict(model, x)
        delta = (torch.rand(x.shape, generator=generator) * 2 - 1) * eps
        for _ in range(steps):
            delta.requires_grad_(True)
            loss = F.cross_entropy(model((x + delta).clamp(0, 1)), own)
            (grad,) = torch.autograd.grad(loss, delta)
            delta = (delta.detach() + eps / 4 * grad.sign()).clamp(-eps, eps)
        return (x + delta).clamp(0, 1).detach()
    finally:
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)

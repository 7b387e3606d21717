"""Pruning repairs: fine-pruning (Liu et al. 2018), its random control, and
adversarial neuron pruning (ANP, Wu & Wang 2021)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from samecurve.api import CaseView
from samecurve.registry import register
from samecurve.tools.base import clean_inputs
from samecurve.tools.edit.base import EditToolBase, repair_data
from samecurve.tools.edit.surgery import (
    channel_activity,
    insert_channel_mask,
    last_feature_layer,
    output_shapes,
)
from samecurve.zoo.train import accuracy as _accuracy


def prune_while_accurate(
    order: Sequence[Any], prune: Callable[[Any], None], restore: Callable[[Any], None],
    accuracy: Callable[[], float], floor: float,
) -> int:
    """Prune candidates one at a time in `order` while accuracy stays at or above
    `floor`; the one that breaks it is restored and pruning stops. Returns how many
    stay pruned."""
    for i, c in enumerate(order):
        prune(c)
        if accuracy() < floor:
            restore(c)
            return i
    return len(order)


@register("tool", "fine-pruning")
@dataclass(frozen=True)
class FinePruning(EditToolBase):
    """Prune the last feature layer's channels in order of their mean activation on
    clean data (most dormant first) while clean accuracy on the tool's data stays
    within `max_acc_drop` of where it started (and at most `max_prune` of them),
    then fine-tune with the pruned channels held at zero."""

    max_acc_drop: float = 0.05
    max_prune: float = 0.9

    def repair(self, model: nn.Module, view: CaseView) -> None:
        x, y = clean_inputs(view), view.clean.y.to(view.device)
        layer = last_feature_layer(model, view.input_shape)
        order = torch.argsort(channel_activity(model, layer, x))
        keep = torch.ones(len(order), device=x.device)
        base = _accuracy(model, x, y)
        insert_channel_mask(model, layer, keep)  # the mask's buffer is updated in place below
        mask = model._modules[layer][1].keep

        def prune(c: torch.Tensor) -> None:
            mask[c] = 0.0

        def restore(c: torch.Tensor) -> None:
            mask[c] = 1.0

        prune_while_accurate(order[: int(self.max_prune * len(order))], prune, restore,
                             lambda: _accuracy(model, x, y), base - self.max_acc_drop)
        xr, yr = repair_data(view)
        self.tune(model, view, xr, yr)


@register("tool", "random-prune")
@dataclass(frozen=True)
class RandomPrune(EditToolBase):
    """The random control for pruning: zero a random `fraction` of the last feature
    layer's channels (drawn from the case seed), then fine-tune for `steps` (none
    by default, so it measures what pruning alone does when it is not guided)."""

    kind = "baseline"
    fraction: float = 0.3
    steps: int = 0

    def repair(self, model: nn.Module, view: CaseView) -> None:
        layer = last_feature_layer(model, view.input_shape)
        channels = output_shapes(model, view.input_shape)[layer][0]
        keep = torch.ones(channels)
        drop = torch.randperm(channels, generator=view.generator(5))[: round(self.fraction * channels)]
        keep[drop] = 0.0
        insert_channel_mask(model, layer, keep)
        if self.steps:
            x, y = repair_data(view)
            self.tune(model, view, x, y)


@register("tool", "anp")
@dataclass(frozen=True)
class ANP(EditToolBase):
    """Adversarial neuron pruning: every conv channel gets a mask m in [0, 1] and a
    multiplicative perturbation d in [-eps, eps]; for `steps` batches an adversary
    takes a signed step on d to raise the clean loss and m descends on
    alpha * loss(m) + (1 - alpha) * loss(m + d). Channels whose m ends below
    `threshold` are pruned, lowest first (their conv weights and bias zeroed),
    while accuracy on the tool's clean data holds within `max_acc_drop`: the
    neurons a small perturbation turns into a backdoor are the ones that hold it.
    No fine-tuning afterwards, as published."""

    steps: int = 200
    eps: float = 0.4
    alpha: float = 0.2
    mask_lr: float = 0.2
    threshold: float = 0.2
    max_acc_drop: float = 0.05

    def repair(self, model: nn.Module, view: CaseView) -> None:
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        g = view.generator(3)
        masks = [torch.ones(c.out_channels, device=view.device, requires_grad=True) for c in convs]
        noise = [torch.zeros(c.out_channels, device=view.device, requires_grad=True) for c in convs]
        scale: dict[int, torch.Tensor] = {}
        handles = [
            conv.register_forward_hook(
                lambda _m, _i, out, i=i: out * scale[i].view(1, -1, 1, 1) if i in scale else out
            )
            for i, conv in enumerate(convs)
        ]
        for p in model.parameters():
            p.requires_grad_(False)
        x, y = repair_data(view)
        opt = torch.optim.SGD(masks, lr=self.mask_lr, momentum=0.9)
        margin = 0.1 * view.budget.seconds
        try:
            for _ in range(self.steps):
                if view.time_left() < margin:
                    break
                idx = torch.randperm(len(y), generator=g)[: self.batch_size].to(view.device)
                xb, yb = x[idx], y[idx]
                with torch.no_grad():  # a random start inside the box, then one signed ascent step
                    for d in noise:
                        d.copy_(torch.empty(d.shape).uniform_(-self.eps, self.eps, generator=g))
                scale.update({i: m + d for i, (m, d) in enumerate(zip(masks, noise, strict=True))})
                grads = torch.autograd.grad(F.cross_entropy(model(xb), yb), noise)
                with torch.no_grad():
                    for d, gd in zip(noise, grads, strict=True):
                        d.add_(self.eps * gd.sign()).clamp_(-self.eps, self.eps)
                opt.zero_grad(set_to_none=True)
                scale.update({i: m + d.detach() for i, (m, d) in enumerate(zip(masks, noise, strict=True))})
                robust = F.cross_entropy(model(xb), yb)
                scale.update(dict(enumerate(masks)))
                natural = F.cross_entropy(model(xb), yb)
                (self.alpha * natural + (1 - self.alpha) * robust).backward()
                opt.step()
                with torch.no_grad():
                    for m in masks:
                        m.clamp_(0, 1)
        finally:
            for h in handles:
                h.remove()
            for p in model.parameters():
                p.requires_grad_(True)
        # Prune the lowest masks first, those below the threshold, while accuracy on the
        # tool's clean data holds within `max_acc_drop` (published ANP prunes by threshold
        # alone: in nets of 16-64 channels a layer that then guarded cost 24 points).
        candidates = sorted(
            (float(v), i, c) for i, m in enumerate(masks) for c, v in enumerate(m.detach())
            if float(v) < self.threshold
        )
        saved: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor | None]] = {}

        def prune(item: tuple[float, int, int]) -> None:
            _, i, c = item
            conv = convs[i]
            saved[(i, c)] = (conv.weight[c].clone(),
                             None if conv.bias is None else conv.bias[c].clone())
            conv.weight[c] = 0.0
            if conv.bias is not None:
                conv.bias[c] = 0.0

        def restore(item: tuple[float, int, int]) -> None:
            _, i, c = item
            weight, bias = saved.pop((i, c))
            convs[i].weight[c] = weight
            if bias is not None:
                convs[i].bias[c] = bias

        xc, yc = clean_inputs(view), view.clean.y.to(view.device)
        with torch.no_grad():
            floor = _accuracy(model, xc, yc) - self.max_acc_drop
            prune_while_accurate(candidates, prune, restore, lambda: _accuracy(model, xc, yc), floor)

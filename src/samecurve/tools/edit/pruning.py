"""Pruning repairs: fine-pruning (Liu et al. 2018), its random control, and
adversarial neuron pruning (ANP, Wu & Wang 2021)."""

from __future__ import annotations

from dataclasses import dataclass

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
from samecurve.zoo.train import predict


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((predict(model, x) == y).float().mean())


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
        for c in order[: int(self.max_prune * len(order))]:
            mask[c] = 0.0
            if _accuracy(model, x, y) < base - self.max_acc_drop:
                mask[c] = 1.0
                break
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
    `threshold` are pruned (their conv weights and bias zeroed): the neurons a
    small perturbation turns into a backdoor are the ones that hold it. No
    fine-tuning afterwards, as published."""

    steps: int = 200
    eps: float = 0.4
    alpha: float = 0.2
    mask_lr: float = 0.2
    threshold: float = 0.2

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
        with torch.no_grad():
            for conv, m in zip(convs, masks, strict=True):
                pruned = m < self.threshold
                conv.weight[pruned] = 0.0
                if conv.bias is not None:
                    conv.bias[pruned] = 0.0

"""TABOR (Guo et al. 2019): Neural Cleanse's per-label trigger reverse-engineering
with four regularisers that shrink the space of spurious "triggers" the
optimiser would otherwise find:

- overly large triggers: elastic-net norm of the mask, and L1 of the pattern
  outside the mask (a real trigger has nothing to say there);
- scattered triggers: total variation of the mask and of the masked pattern;
- blocking triggers: the input with the trigger region removed, (1 - m) * x,
  must keep its own true label (a mask that just hides the object is no trigger);
- overlaying triggers: the trigger alone, m * p, must already read as the label.

All labels are optimised together in one batch, as in `neural_cleanse`, and the
target is the label whose best trigger is anomalously small (MAD index, small side).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from samecurve.api import CaseView, Finding, Trigger
from samecurve.registry import register
from samecurve.tools.anomaly import index_to_probability
from samecurve.tools.base import NOT_A_PATCH, ToolBase, clean_inputs, prior_pixel_cost
from samecurve.tools.neural_cleanse import CostSchedule, anomaly_indices


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic total variation of (..., H, W): the sum of absolute differences
    between vertical and horizontal neighbours, summed over everything but the
    leading dimension (one value per item of x's first axis)."""
    dv = (x[..., 1:, :] - x[..., :-1, :]).abs()
    dh = (x[..., :, 1:] - x[..., :, :-1]).abs()
    return dv.flatten(1).sum(1) + dh.flatten(1).sum(1)


def size_penalty(
    mask: torch.Tensor, pattern: torch.Tensor, outside: float, pixel_cost: torch.Tensor | None = None
) -> torch.Tensor:
    """TABOR's overly-large-trigger term per label: elastic net of the mask (L1 + squared L2)
    plus `outside` times the L1 of the pattern where the mask is off (per channel).
    mask is (K, 1, H, W), pattern (K, C, H, W), pixel_cost (1, H, W) weighs the mask
    (a pipeline's prior region is cheaper); returns (K,)."""
    elastic = mask.abs() + mask.pow(2)
    if pixel_cost is not None:
        elastic = elastic * pixel_cost
    off = ((1 - mask) * pattern).abs().flatten(1).sum(1) / pattern.shape[1]
    return elastic.flatten(1).sum(1) + outside * off


def scatter_penalty(
    mask: torch.Tensor, pattern: torch.Tensor, pattern_weight: float
) -> torch.Tensor:
    """TABOR's scattered-trigger term per label: TV of the mask plus `pattern_weight`
    times the (per-channel) TV of the masked pattern; returns (K,)."""
    masked = total_variation(mask * pattern) / pattern.shape[1]
    return total_variation(mask) + pattern_weight * masked


@register("tool", "tabor")
@dataclass(frozen=True)
class Tabor(ToolBase):
    """Neural Cleanse with TABOR's size, smoothness, blocking and overlay regularisers."""

    blind_to = NOT_A_PATCH
    needs = frozenset({"gradients", "clean_data"})
    answers = frozenset({"detect", "target", "trigger"})

    # Measured on the tiny population (two trainings of it, 2 patch subjects, 4 seeds each).
    # The hard part is finding where a planted patch sits: a label's mask mostly settles
    # on some natural trigger of similar size, and when it lands on the planted one its
    # L1 is half the others'. Starting from half-open masks (logit 0) with 3 restarts a
    # label found it about twice as often as NC's start (logits -3..-1, 1 restart): the
    # harder subject's target ranked [1, 3, 1, 1] and [3, 3, 1, 3] (NC's start:
    # [6, 1, 2, 4] and [1, 1, 1, 1], but there its label-2 mask sat off the planted patch
    # in 3 of 4 runs), the other subject's first in all. lr 0.5 with a quick cost schedule
    # (3e-3, patience 5): with NC's lr 0.2, 1e-3, patience 10 masks had not shrunk yet.
    # 80 steps x 3 restarts x 4 inputs: ~6 CPU-seconds a subject.
    steps: int = 80
    batch_size: int = 4  # clean inputs per trigger per step
    lr: float = 0.5
    init_cost: float = 3e-3
    mask_init: float = 0.0  # mean initial mask logit
    mask_noise: float = 0.5  # initial mask logits uniform within +-mask_noise of mask_init
    pattern_noise: float = 0.1  # sd of the initial pattern logits
    restarts: int = 3  # independent triggers per label; the smallest counts
    asr_threshold: float = 0.95
    patience: int = 5
    cost_up: float = 1.5
    cost_down: float = 1.5**1.5
    threshold: float = 2.0
    prior_discount: float = 0.75  # share of the mask cost waived inside a prior region
    # Regulariser weights. The size and smoothness terms sit under the adaptive cost
    # (in units of mask pixels); blocking and overlaying are cross-entropies with
    # fixed weights beside the attack loss.
    outside: float = 0.1  # L1 of the pattern outside the mask, relative to the mask L1
    smooth: float = 0.5  # TV of the mask (a compact s x s square has TV 4s, area s^2)
    smooth_pattern: float = 0.1  # TV of the masked pattern
    blocking: float = 0.2
    overlaying: float = 0.2

    def discover(self, view: CaseView) -> Finding:
        masks, patterns, norms = self.reverse_engineer(view)
        index = anomaly_indices(norms)
        order = tuple(int(t) for t in np.argsort(norms, kind="stable"))
        target = order[0]
        return Finding(
            trojan_probability=index_to_probability(float(index[target]), self.threshold),
            targets=order,
            trigger=Trigger(
                mask=masks[target, 0].cpu().numpy().astype(np.float32),
                pattern=patterns[target].cpu().numpy().astype(np.float32),
            ),
            notes={"anomaly_index": float(index[target]), "mask_l1": float(norms[target])},
        )

    def reverse_engineer(self, view: CaseView) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        """Every label's smallest regularised trigger that reaches the attack-success
        threshold: masks (K, 1, H, W), patterns (K, C, H, W) and mask L1 norms (K,)."""
        model, device = view.model, view.device
        x_all = clean_inputs(view)
        assert view.clean is not None
        y_all = view.clean.y.to(device)
        num_classes = view.num_classes
        r = self.restarts
        k = num_classes * r  # every label's restarts, side by side in one batch
        c, h, w = view.input_shape
        b = self.batch_size
        g = view.generator()
        mask_logit = (torch.rand(k, 1, h, w, generator=g) * 2 - 1) * self.mask_noise
        mask_logit = (mask_logit + self.mask_init).to(device).requires_grad_()
        pattern_logit = torch.randn(k, c, h, w, generator=g) * self.pattern_noise
        pattern_logit = pattern_logit.to(device).requires_grad_()
        opt = torch.optim.Adam([mask_logit, pattern_logit], lr=self.lr, betas=(0.5, 0.9))
        labels = torch.arange(num_classes, device=device).repeat_interleave(r)
        attack_labels = labels.repeat_interleave(b)
        search = CostSchedule(self, torch.sigmoid(mask_logit.detach()), torch.sigmoid(pattern_logit.detach()))
        pixel_cost = prior_pixel_cost(view, self.prior_discount)
        for _ in range(self.steps):
            if view.time_left() < 2.0:
                break
            idx = torch.randint(len(x_all), (b,), generator=g).to(x_all.device)
            x, y = x_all[idx], y_all[idx]
            mask = torch.sigmoid(mask_logit)
            pattern = torch.sigmoid(pattern_logit)
            stamped = (1 - mask[:, None]) * x[None] + mask[:, None] * pattern[:, None]
            blocked = (1 - mask[:, None]) * x[None]
            batch = torch.cat(
                [stamped.reshape(k * b, c, h, w), blocked.reshape(k * b, c, h, w), mask * pattern]
            )
            logits = model(batch)
            attack_logits, block_logits, overlay_logits = logits.split([k * b, k * b, k])
            ce = F.cross_entropy(attack_logits, attack_labels, reduction="none").view(k, b).mean(1)
            block = F.cross_entropy(block_logits, y.repeat(k), reduction="none").view(k, b).mean(1)
            overlay = F.cross_entropy(overlay_logits, labels, reduction="none")
            size = size_penalty(mask, pattern, self.outside, pixel_cost)
            scatter = scatter_penalty(mask, pattern, self.smooth_pattern)
            loss = (
                ce + search.cost * (size + self.smooth * scatter)
                + self.blocking * block + self.overlaying * overlay
            )
            # autograd.grad leaves the model's own .grad fields untouched.
            grads = torch.autograd.grad(loss.sum(), [mask_logit, pattern_logit])
            mask_logit.grad, pattern_logit.grad = grads
            opt.step()
            asr = (attack_logits.argmax(1) == attack_labels).float().view(k, b).mean(1)
            norm = (mask.detach() * pixel_cost).flatten(1).sum(1)
            search.update(norm, asr, mask.detach(), pattern.detach())
        # Labels that never reached the threshold keep their last mask's norm.
        last_mask = torch.sigmoid(mask_logit.detach())
        norms, masks, patterns = search.result(
            (last_mask * pixel_cost).flatten(1).sum(1), last_mask, torch.sigmoid(pattern_logit.detach())
        )
        # Each label keeps its restart with the smallest trigger.
        pick = norms.reshape(num_classes, r).argmin(1) + np.arange(num_classes) * r
        rows = torch.from_numpy(pick).to(device)
        return masks[rows], patterns[rows], norms[pick]

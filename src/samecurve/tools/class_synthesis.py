"""Per-class patch synthesis, scored by what the patches do to clean inputs.

Two ways to make square patches for every class (one per anchor of a coarse grid
of places, see `PatchSynthesis`), sharing one scoring step:

- `adversarial-patch` (Brown et al. 2017): universal targeted patches, optimised
  by cross-entropy while pasted at random places on clean inputs of other classes.
- `feature-viz` (Olah et al. 2017, "Feature Visualization"): a class
  visualisation of the patch alone on the mean clean image, under random jitter,
  scale and rotation, in a decorrelated (1/f-scaled Fourier) parameterisation
  with a total-variation penalty; it never sees a stamped clean input.

Scoring: paste every patch at its anchor on held-out clean inputs (never used to
optimise); a class's score is its best patch's flip rate (the share of inputs of
other classes it sends to the class), and a trojan's target is the class that
scores far above the rest (high-side MAD anomaly index). The recovered trigger is
that patch at its place. Inputs are assumed square (H = W).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from samecurve.api import CaseView, Finding, Trigger
from samecurve.registry import register
from samecurve.tools.anomaly import high_side_anomaly, index_to_probability
from samecurve.tools.base import NOT_A_PATCH, ToolBase, clean_inputs
from samecurve.tools.tabor import total_variation


def paste(x: torch.Tensor, patch: torch.Tensor, top: int, left: int) -> torch.Tensor:
    """A copy of the batch x (N, C, H, W) with the patch (C, s, s) over [top, left]."""
    out = x.clone()
    s = patch.shape[-1]
    out[..., top : top + s, left : left + s] = patch
    return out


def grid_places(size: int, side: int, per_axis: int) -> list[tuple[int, int]]:
    """per_axis x per_axis (top, left) corners spread evenly over a size x size image."""
    steps = np.linspace(0, size - side, per_axis).round().astype(int) if per_axis > 1 else [
        (size - side) // 2
    ]
    return [(int(t), int(c)) for t in steps for c in steps]


def flip_rates(after: torch.Tensor, before: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(K, L) share of the inputs a class-k patch at place l could flip that it sends to k.

    after is (K, L, N): predictions with class k's patch at place l; before (N,) the
    predictions on the unpatched inputs; y (N,) their labels. An input counts for class
    k when it is neither labelled k nor already predicted k."""
    k = after.shape[0]
    classes = torch.arange(k, device=after.device)[:, None]
    eligible = (y[None] != classes) & (before[None] != classes)  # (K, N)
    hits = (after == classes[:, :, None]) & eligible[:, None]
    return hits.sum(-1).float() / eligible.sum(-1, keepdim=True).clamp(min=1).float()


@torch.no_grad()
def patch_flip_rates(
    model: nn.Module, patches: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
    places: Sequence[tuple[int, int]],
) -> torch.Tensor:
    """flip_rates (K, P) of every class's patches (K, P, C, s, s), patch p pasted at places[p]."""
    before = model(x).argmax(1)
    after = torch.stack([
        torch.stack([
            model(paste(x, patch, t, c)).argmax(1)
            for patch, (t, c) in zip(row, places, strict=True)
        ])
        for row in patches
    ])
    return flip_rates(after, before, y)


def jittered(places: Sequence[tuple[int, int]], n: int, jitter: int, size: int, side: int,
             g: torch.Generator) -> list[list[tuple[int, int]]]:
    """For every place, n corners moved by up to +-jitter pixels, kept on the image."""
    shift = torch.randint(-jitter, jitter + 1, (len(places), n, 2), generator=g)
    return [
        [(min(max(t + int(dy), 0), size - side), min(max(c + int(dx), 0), size - side))
         for dy, dx in row]
        for (t, c), row in zip(places, shift, strict=True)
    ]


@dataclass(frozen=True)
class PatchSynthesis(ToolBase, ABC):
    """Square patches per class, ranked by their held-out flip rates. Subclasses say
    how the patches are made (`synthesise`).

    Each class gets one patch per anchor of an anchors x anchors grid, pasted within
    +-jitter pixels of its anchor (anchors=1 with the default jitter: anywhere, as in
    Brown et al.). Planted patch trojans on small CNNs fire only near their own place
    (measured: the true trigger moved more than ~4 pixels loses most of its pull), so
    a patch made to work everywhere learns the classes' natural features instead: with
    anchors=1 one tiny patch subject's target ranked 5th-10th, with a 4 x 4 grid first."""

    blind_to = NOT_A_PATCH
    needs = frozenset({"gradients", "clean_data"})
    answers = frozenset({"detect", "target", "trigger"})

    steps: int = 60
    batch_size: int = 1  # inputs (or transformations) per patch per step
    lr: float = 0.1
    # Patch side as a share of the image side. Brown et al.'s ~1/4 (8 of 32 pixels) let
    # every class's patch flip most inputs somewhere on the tiny subjects, and detection
    # fell to chance (AUROC 0.50 over 4 patch / 6 clean runs); 6 pixels gave 0.83-0.96.
    side_fraction: float = 0.1875
    anchors: int = 4  # per axis
    jitter: int = -1  # pixels around each anchor; -1: half the anchor spacing (cover the image)
    heldout_fraction: float = 0.25  # clean inputs kept out of optimisation, for scoring
    threshold: float = 2.0

    @abstractmethod
    def synthesise(
        self, view: CaseView, x: torch.Tensor, y: torch.Tensor, side: int,
        places: Sequence[tuple[int, int]], jitter: int, g: torch.Generator,
    ) -> torch.Tensor:
        """(K, P, C, side, side) patches in [0, 1]: one per class and place."""

    def discover(self, view: CaseView) -> Finding:
        x_all = clean_inputs(view)
        assert view.clean is not None
        y_all = view.clean.y.to(x_all.device)
        g = view.generator()
        h = view.input_shape[-1]
        side = max(2, min(h, round(self.side_fraction * h)))
        places = grid_places(h, side, self.anchors)
        jitter = self.jitter
        if jitter < 0:  # half the spacing of the anchors, rounded up: every place is reached
            gaps = 2 * max(self.anchors - 1, 1)
            jitter = -(-(h - side) // gaps)
        order = torch.randperm(len(x_all), generator=g).to(x_all.device)
        n_held = max(1, round(self.heldout_fraction * len(x_all)))
        held, used = order[:n_held], order[n_held:]
        patches = self.synthesise(view, x_all[used], y_all[used], side, places, jitter, g).detach()
        rates = patch_flip_rates(view.model, patches, x_all[held], y_all[held], places)
        per_class = rates.max(1).values.cpu().numpy()
        index = high_side_anomaly(per_class)
        ranking = np.argsort(-per_class, kind="stable")
        target = int(ranking[0])
        best = int(rates[target].argmax())
        top, left = places[best]
        mask = np.zeros(view.input_shape[1:], np.float32)
        mask[top : top + side, left : left + side] = 1.0
        pattern = np.zeros(view.input_shape, np.float32)
        pattern[:, top : top + side, left : left + side] = patches[target, best].cpu().numpy()
        return Finding(
            trojan_probability=index_to_probability(float(index[target]), self.threshold),
            targets=tuple(int(c) for c in ranking),
            trigger=Trigger(mask=mask, pattern=pattern),
            notes={"anomaly_index": float(index[target]), "flip_rate": float(per_class[target]),
                   "median_flip_rate": float(np.median(per_class))},
        )


@register("tool", "adversarial-patch")
@dataclass(frozen=True)
class AdversarialPatch(PatchSynthesis):
    """Brown et al.'s universal targeted patch, per class (and anchor), all in one batch."""

    def synthesise(
        self, view: CaseView, x: torch.Tensor, y: torch.Tensor, side: int,
        places: Sequence[tuple[int, int]], jitter: int, g: torch.Generator,
    ) -> torch.Tensor:
        k, p, b = view.num_classes, len(places), self.batch_size
        c, h, _ = view.input_shape
        logit = (torch.randn(k, p, c, side, side, generator=g) * 0.5).to(x.device).requires_grad_()
        opt = torch.optim.Adam([logit], lr=self.lr)
        labels = torch.arange(k, device=x.device)[:, None, None].expand(k, p, b)
        for _ in range(self.steps):
            if view.time_left() < 2.0:
                break
            idx = torch.randint(len(x), (p, b), generator=g).to(x.device)
            xb, yb = x[idx], y[idx]  # (P, B, ...)
            patch = torch.sigmoid(logit)
            stamped = xb[None].expand(k, *xb.shape).clone()
            for j, corners in enumerate(jittered(places, b, jitter, h, side, g)):
                for i, (top, left) in enumerate(corners):
                    stamped[:, j, i, :, top : top + side, left : left + side] = patch[:, j]
            logits = view.model(stamped.reshape(k * p * b, c, h, h))
            ce = F.cross_entropy(logits, labels.reshape(-1), reduction="none").view(k, p, b)
            other = (yb[None] != labels).float()  # inputs of class k itself teach nothing
            loss = (ce * other).sum() / other.sum().clamp(min=1)
            # autograd.grad leaves the model's own .grad fields untouched.
            (logit.grad,) = torch.autograd.grad(loss, [logit])
            opt.step()
        return torch.sigmoid(logit)


def fourier_scale(side: int) -> torch.Tensor:
    """1/f amplitude of each rfft2 frequency of a side x side image (Olah et al.'s
    decorrelated parameterisation: equal-sized steps in every frequency band)."""
    fy = torch.fft.fftfreq(side)[:, None]
    fx = torch.fft.rfftfreq(side)[None, :]
    return 1.0 / torch.sqrt(fx**2 + fy**2).clamp(min=1.0 / side)


def placements(
    places: Sequence[tuple[int, int]], n: int, size: int, side: int, jitter: int,
    rotate: float, scale: tuple[float, float], g: torch.Generator,
) -> torch.Tensor:
    """(P * n, 2, 3) affine_grid matrices that take a patch drawn at the image centre to
    each place, moved by up to +-jitter pixels, turned by up to +-rotate degrees and
    scaled by a factor in `scale` about its own centre; n draws per place."""
    m = len(places) * n
    angle = (torch.rand(m, generator=g) * 2 - 1) * math.radians(rotate)
    factor = scale[0] + torch.rand(m, generator=g) * (scale[1] - scale[0])
    corner = torch.tensor(places, dtype=torch.float32).repeat_interleave(n, 0)
    corner = corner + torch.randint(-jitter, jitter + 1, (m, 2), generator=g).float()
    corner = corner.clamp(0, size - side)
    # Patch centre at the place, in normalised (x, y) coordinates of the output image.
    centre = ((corner + side / 2) * 2 / size - 1).flip(1)
    cos, sin = torch.cos(angle) / factor, torch.sin(angle) / factor
    rot = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)
    # Output point o samples the centred patch at rot @ (o - centre).
    shift = -(rot @ centre[:, :, None])
    return torch.cat([rot, shift], 2)


@register("tool", "feature-viz")
@dataclass(frozen=True)
class FeatureViz(PatchSynthesis):
    """Class visualisation of each patch alone on the mean clean image, robust to jitter,
    scale and rotation; then scored on clean inputs like any other patch."""

    lr: float = 0.05
    tv: float = 0.02  # weight of the patch's total variation (per channel)
    rotate: float = 10.0  # degrees
    scale_low: float = 0.9
    scale_high: float = 1.1
    jitter: int = 2  # Olah et al.'s few pixels of jitter, around each anchor

    def synthesise(
        self, view: CaseView, x: torch.Tensor, y: torch.Tensor, side: int,
        places: Sequence[tuple[int, int]], jitter: int, g: torch.Generator,
    ) -> torch.Tensor:
        k, p, b = view.num_classes, len(places), self.batch_size
        c, h, _ = view.input_shape
        device = x.device
        background = x.mean(0)  # the neutral canvas: the mean clean image
        scale = fourier_scale(side).to(device)
        spectrum = torch.randn(k * p, c, side, side // 2 + 1, 2, generator=g) * 0.01
        spectrum = spectrum.to(device).requires_grad_()
        opt = torch.optim.Adam([spectrum], lr=self.lr)
        lo = (h - side) // 2
        pad = (lo, h - lo - side, lo, h - lo - side)
        frame = F.pad(torch.ones(1, 1, side, side, device=device), pad)
        own = torch.arange(k, device=device).repeat_interleave(p * b)
        others = 1.0 - F.one_hot(own, k).float()

        def render() -> torch.Tensor:
            image = torch.fft.irfft2(
                torch.view_as_complex(spectrum) * scale, s=(side, side), norm="ortho"
            )
            return torch.sigmoid(image)

        for _ in range(self.steps):
            if view.time_left() < 2.0:
                break
            patch = render()  # (K * P, C, s, s)
            theta = placements(
                places, b, h, side, jitter, self.rotate, (self.scale_low, self.scale_high), g
            ).repeat(k, 1, 1).to(device)
            grid = F.affine_grid(theta, [k * p * b, c, h, h], align_corners=False)
            moved = F.grid_sample(
                F.pad(patch, pad).repeat_interleave(b, 0), grid, align_corners=False
            )
            cover = F.grid_sample(frame.expand(k * p * b, 1, h, h), grid, align_corners=False)
            logits = view.model((1 - cover) * background + cover * moved)
            own_logit = logits.gather(1, own[:, None])[:, 0]
            rest = (logits * others).sum(1) / (k - 1)
            loss = -(own_logit - rest).sum() / b + self.tv * total_variation(patch).sum() / c
            # autograd.grad leaves the model's own .grad fields untouched.
            (spectrum.grad,) = torch.autograd.grad(loss, [spectrum])
            opt.step()
        return render().view(k, p, c, side, side)

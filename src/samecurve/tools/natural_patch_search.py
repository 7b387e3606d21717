"""Natural patch search, after SNAFUE (Casper et al. 2023, "Red teaming deep neural
networks with feature synthesis tools"): look for natural image patches that,
pasted onto inputs of other classes, flip them to one class. A trojan's target
is reached by any natural patch that happens to resemble its trigger, so its best
natural patch flips far more inputs than any other class's best.

Black-box: patches are cut from the clean inputs and only predictions are read.
SNAFUE ranks dataset patches by closeness to a synthesised adversarial patch;
without gradients we score every candidate by the flips it causes directly.

Two adaptations, both measured on the tiny zoo's BadNets subjects:
- A candidate is a patch *and a place*: it is pasted at one place on all of its
  inputs. The exact trigger pasted at random places flipped only 20% and 7% of
  inputs to its target (other classes drew as many); at its own place, 98%.
- Most candidates (70%) are shown in grey at full contrast. The scenes are soft and
  low-contrast, the planted triggers two-tone; at the trigger's place the best of
  300 raw crops flipped 33% / 77% of inputs to the target, of the same crops in
  grey 83% / 90%. (SNAFUE's ImageNet patches have such contrast already.)
Flips to the class of the image a patch was cut from are not counted: a piece of
a class's own object pulls inputs to it on a clean model just as well.

The flip-rate scoring, the batched paste and the trigger construction are shared
with `feature_level_adversary`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from samecurve.api import CaseView, Finding, Trigger
from samecurve.registry import register
from samecurve.tools.anomaly import high_side_anomaly, index_to_probability
from samecurve.tools.base import NOT_A_PATCH, ToolBase, clean_inputs


def flip_rates(before: torch.Tensor, after: torch.Tensor, num_classes: int) -> np.ndarray:
    """(P, K) share of the inputs not already predicted k that patch p sends to k.

    before is (N,) or (P, N): the clean prediction of every input; after is (P, N):
    the prediction with patch p pasted on. An input that was k counts for neither
    the numerator nor the denominator of class k.
    """
    after = after.long().cpu()
    before = before.long().cpu().expand_as(after)
    eye = torch.eye(num_classes, dtype=torch.float64)
    was, now = eye[before], eye[after]  # (P, N, K) one-hot
    flipped = (now * (1 - was)).sum(1)
    eligible = (1 - was).sum(1)
    return (flipped / eligible.clamp(min=1)).numpy()


def paste_at(x: torch.Tensor, patches: torch.Tensor, ty: torch.Tensor, tx: torch.Tensor) -> torch.Tensor:
    """Paste square patches[i] (N, C, s, s) onto x[i] (N, C, H, W) with its top-left
    corner at (ty[i], tx[i]). Differentiable in both x and the patches."""
    n, _, s, _ = patches.shape
    r = torch.arange(s, device=x.device)
    rows = (ty.to(x.device)[:, None] + r)[:, :, None]  # (N, s, 1)
    cols = (tx.to(x.device)[:, None] + r)[:, None, :]  # (N, 1, s)
    out = x.clone()
    out[torch.arange(n, device=x.device)[:, None, None], :, rows, cols] = patches.permute(0, 2, 3, 1)
    return out


def cut_patches(x: torch.Tensor, s: int, count: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """count (C, s, s) squares cut at random places from random images of x, and the
    index of the image each came from."""
    side = x.shape[-1]
    src = torch.randint(len(x), (count,), generator=g)
    sy, sx = torch.randint(side - s + 1, (2, count), generator=g)
    patches = crop_squares(x, src, sy, sx, s)
    return patches, src


def crop_squares(x: torch.Tensor, src: torch.Tensor, sy: torch.Tensor, sx: torch.Tensor, s: int) -> torch.Tensor:
    """The (C, s, s) squares of x[src[i]] with top-left corners (sy[i], sx[i])."""
    r = torch.arange(s)
    rows = (sy[:, None] + r)[:, :, None].to(x.device)
    cols = (sx[:, None] + r)[:, None, :].to(x.device)
    return x[src.to(x.device)[:, None, None], :, rows, cols].permute(0, 3, 1, 2).contiguous()


def grey_full_contrast(patches: torch.Tensor) -> torch.Tensor:
    """Each (C, s, s) patch in grey, stretched to span [0, 1]."""
    grey = patches.mean(1, keepdim=True)
    lo = grey.amin((2, 3), keepdim=True)
    hi = grey.amax((2, 3), keepdim=True)
    return ((grey - lo) / (hi - lo).clamp(min=1e-3)).expand_as(patches).contiguous()




def place_grid(side: int, s: int, stride: int) -> torch.Tensor:
    """(L, 2) top-left corners every `stride` pixels, the far edge always included."""
    places = list(range(0, side - s + 1, max(stride, 1)))
    if places[-1] != side - s:
        places.append(side - s)
    return torch.tensor([(a, b) for a in places for b in places])


@torch.no_grad()
def predict_in_batches(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Arg-max predictions of x, in batches, on x's device."""
    return torch.cat([model(x[i : i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])


@torch.no_grad()
def placed_flip_rates(
    model: torch.nn.Module, patches: torch.Tensor, corners: torch.Tensor, x: torch.Tensor,
    before: torch.Tensor, num_classes: int,
) -> np.ndarray:
    """(P, K) flip rates of P equal-sized patches (P, C, s, s), patch p pasted at
    corners[p] onto each of its inputs x[p] (P, N, C, H, W), whose clean
    predictions are before (P, N)."""
    p, n = x.shape[:2]
    stamped = paste_at(
        x.flatten(0, 1), patches.repeat_interleave(n, 0),
        corners[:, 0].repeat_interleave(n), corners[:, 1].repeat_interleave(n),
    )
    after = predict_in_batches(model, stamped).view(p, n)
    return flip_rates(before, after, num_classes)


@torch.no_grad()
def polish_place(
    model: torch.nn.Module, patch: torch.Tensor, corner: tuple[int, int], radius: int,
    x: torch.Tensor, before: torch.Tensor, target: int, num_classes: int,
) -> tuple[int, int]:
    """The top-left corner within `radius` pixels of `corner` where the patch (C, s, s)
    sends the most inputs of x to `target` (the first such, scanning row by row)."""
    side, s = x.shape[-1], patch.shape[-1]
    near = [(a, b) for a in range(corner[0] - radius, corner[0] + radius + 1)
            for b in range(corner[1] - radius, corner[1] + radius + 1)
            if 0 <= a <= side - s and 0 <= b <= side - s]
    if len(x) == 0:
        return corner
    rates = placed_flip_rates(
        model, patch[None].expand(len(near), -1, -1, -1), torch.tensor(near),
        x[None].expand(len(near), -1, -1, -1, -1), before[None].expand(len(near), -1), num_classes,
    )[:, target]
    return near[int(np.argmax(rates))]


def patch_trigger(patch: torch.Tensor, top: int, left: int, side: int) -> Trigger:
    """A 0/1 square mask at (top, left) with the patch's pixels as the pattern."""
    c, s, _ = patch.shape
    mask = np.zeros((side, side), np.float32)
    mask[top : top + s, left : left + s] = 1.0
    pattern = np.zeros((c, side, side), np.float32)
    pattern[:, top : top + s, left : left + s] = patch.detach().float().cpu().numpy()
    return Trigger(mask=mask, pattern=pattern)


def patch_sizes(side: int, fractions: tuple[float, ...]) -> list[int]:
    """Distinct patch sides in pixels for fractions of the image side (2 at least)."""
    return sorted({max(2, min(side, round(f * side))) for f in fractions})


def rank_classes(rates: np.ndarray, threshold: float) -> tuple[tuple[int, ...], float, float]:
    """Classes by their best flip rate (most first), the top class's high-side anomaly
    index over classes, and its probability reading."""
    rates = np.asarray(rates, dtype=float)
    index = high_side_anomaly(rates)
    order = tuple(int(c) for c in np.argsort(-rates, kind="stable"))
    return order, float(index[order[0]]), index_to_probability(float(index[order[0]]), threshold)


@register("tool", "natural-patch-search")
@dataclass(frozen=True)
class NaturalPatchSearch(ToolBase):
    """Per class, the flip rate of its best natural patch (cut from clean images,
    pasted at one place); the class whose best patch flips anomalously many inputs
    is the suspect, and that patch at its place is the recovered trigger."""

    kind = "black-box"
    blind_to = NOT_A_PATCH
    needs = frozenset({"clean_data"})
    answers = frozenset({"detect", "target", "trigger"})

    candidates: int = 1536  # (patch, place) pairs tried in the first round ...
    inputs: int = 8  # ... each on this many clean inputs
    # Patch sides as fractions of the image side. Small: natural pieces of 1/4 to 1/3
    # of the side pulled inputs to their own classes as often as a trigger did.
    sizes: tuple[float, ...] = (0.16, 0.2)
    stride: int = 2  # places lie on a grid of this step
    grey: float = 0.7  # share of candidates shown in grey at full contrast
    refine: int = 6  # per class, its best first-round candidates scored again ...
    refine_inputs: int = 48  # ... on this many other inputs (against the winner's curse)
    polish: int = 1  # the winner's place is then searched this many pixels around
    threshold: float = 2.0

    def discover(self, view: CaseView) -> Finding:
        model, k = view.model, view.num_classes
        x_all = clean_inputs(view)
        y_all = view.clean.y.to(x_all.device) if view.clean is not None else None
        side = x_all.shape[-1]
        g = view.generator(23)
        before_all = predict_in_batches(model, x_all)
        order = torch.randperm(len(x_all), generator=g)
        half = max(1, len(order) // 2)
        pool1, pool2 = order[:half], order[half:] if len(order) > 1 else order

        # Round 1: every (size, place) of the grid in turn, each with a fresh patch.
        sizes = patch_sizes(side, self.sizes)
        slots = [(s, c) for s in sizes for c in place_grid(side, s, self.stride).tolist()]
        pick = torch.randperm(len(slots), generator=g)
        chosen = [slots[int(pick[i % len(slots)])] for i in range(self.candidates)]
        cands: list[tuple[torch.Tensor, tuple[int, int], int]] = []  # patch, corner, source image
        rates1: list[np.ndarray] = []
        for s in sizes:
            corners = torch.tensor([c for t, c in chosen if t == s], dtype=torch.long).view(-1, 2)
            if len(corners) == 0 or view.time_left() < 2.0:
                continue
            patches, src = cut_patches(x_all, s, len(corners), g)
            greyed = torch.rand(len(corners), generator=g) < self.grey
            patches[greyed.to(x_all.device)] = grey_full_contrast(patches[greyed.to(x_all.device)])
            idx = pool1[torch.randint(len(pool1), (len(corners), self.inputs), generator=g)]
            r = placed_flip_rates(model, patches, corners, x_all[idx], before_all[idx], k)
            rates1.append(drop_own_class(r, src, before_all, y_all))
            cands.extend((patches[i], (int(corners[i, 0]), int(corners[i, 1])), int(src[i]))
                         for i in range(len(corners)))
        if not cands:
            return Finding()
        r1 = np.concatenate(rates1)  # (P, K)

        # Round 2: each class's best few, rescored on inputs round 1 did not use.
        best_rate = r1.max(0)
        best = r1.argmax(0)
        if self.refine > 0 and view.time_left() > 2.0:
            short = np.argsort(-r1, axis=0, kind="stable")[: self.refine]  # (refine, K)
            ids = sorted({int(p) for p in short.ravel()})
            r2 = np.zeros((len(ids), k))
            for s in sizes:
                rows = [j for j, p in enumerate(ids) if cands[p][0].shape[-1] == s]
                if not rows:
                    continue
                patches = torch.stack([cands[ids[j]][0] for j in rows])
                corners = torch.tensor([cands[ids[j]][1] for j in rows])
                src = torch.tensor([cands[ids[j]][2] for j in rows])
                idx = pool2[torch.randint(len(pool2), (len(rows), self.refine_inputs), generator=g)]
                r = placed_flip_rates(model, patches, corners, x_all[idx], before_all[idx], k)
                r2[rows] = drop_own_class(r, src, before_all, y_all)
            row_of = {p: j for j, p in enumerate(ids)}
            for c in range(k):
                j = max((row_of[int(p)] for p in short[:, c]), key=lambda j: r2[j, c])
                best_rate[c], best[c] = r2[j, c], ids[j]

        targets, index, probability = rank_classes(best_rate, self.threshold)
        patch, (top, left), _ = cands[int(best[targets[0]])]
        if self.polish > 0 and view.time_left() > 2.0:
            idx = pool2[torch.randint(len(pool2), (self.refine_inputs,), generator=g)]
            top, left = polish_place(model, patch, (top, left), self.polish, x_all[idx],
                                     before_all[idx], targets[0], k)
        return Finding(
            trojan_probability=probability,
            targets=targets,
            trigger=patch_trigger(patch, top, left, side),
            notes={"anomaly_index": index, "top_rate": float(best_rate[targets[0]]),
                   "median_rate": float(np.median(best_rate)), "patch_side": float(patch.shape[-1])},
        )


def drop_own_class(
    rates: np.ndarray, src: torch.Tensor, before: torch.Tensor, labels: torch.Tensor | None
) -> np.ndarray:
    """Zero each candidate's flips to the class of the image it was cut from (its
    label and the model's prediction): a piece of a class's own object is no trigger."""
    rows = np.arange(len(rates))
    rates[rows, before[src.to(before.device)].cpu().numpy()] = 0.0
    if labels is not None:
        rates[rows, labels[src.to(labels.device)].cpu().numpy()] = 0.0
    return rates

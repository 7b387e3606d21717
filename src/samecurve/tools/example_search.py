"""The "just examine the model on inputs" baseline Casper et al. (2023) argue tools
must beat: run clean inputs through simple transformations (a patch cut from
another image, a blend, a colour filter, a small warp) and watch which
class the changed predictions flow to. A trojan's target attracts flips from
every class whenever a transformation happens to resemble its trigger."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from samecurve.api import CaseView, Finding
from samecurve.registry import register
from samecurve.tools.anomaly import high_side_anomaly, index_to_probability
from samecurve.tools.base import ToolBase, clean_inputs

Transform = Callable[[torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]


def paste_patch(x: torch.Tensor, donors: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A square cut from a donor image, pasted at a random place (1/6 to 1/3 of the side)."""
    out = x.clone()
    side = x.shape[-1]
    for i in range(len(x)):
        s = int(torch.randint(max(side // 6, 2), max(side // 3, 3) + 1, (1,), generator=g))
        sy, sx, ty, tx = (int(v) for v in torch.randint(side - s + 1, (4,), generator=g))
        out[i, :, ty : ty + s, tx : tx + s] = donors[i, :, sy : sy + s, sx : sx + s]
    return out


def blend(x: torch.Tensor, donors: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    alpha = 0.15 + 0.2 * torch.rand(len(x), 1, 1, 1, generator=g)
    return (1 - alpha) * x + alpha * donors


def colour_filter(x: torch.Tensor, donors: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A random colour matrix near the identity plus a tint (an Instagram-like filter)."""
    c = x.shape[1]
    mix = torch.eye(c) + 0.35 * torch.randn(len(x), c, c, generator=g)
    tint = 0.1 * torch.randn(len(x), c, 1, 1, generator=g)
    return (torch.einsum("nij,njhw->nihw", mix.to(x.device), x) + tint.to(x.device)).clamp(0, 1)


def warp(x: torch.Tensor, donors: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A smooth random displacement field of up to ~2 pixels."""
    n, _, h, w = x.shape
    coarse = torch.randn(n, 2, 4, 4, generator=g) * (2.0 / h)
    flow = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=True).permute(0, 2, 3, 1)
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    grid = torch.stack([xs, ys], -1)[None] + flow
    return F.grid_sample(x, grid.to(x.device), align_corners=True, padding_mode="border")


TRANSFORMS: dict[str, Transform] = {
    "patch": paste_patch, "blend": blend, "filter": colour_filter, "warp": warp,
}
# No pixel noise: measured on a clean subject, noise alone sent 18% of inputs to one
# class (a natural sink), which flagged the clean model as surely as a trojan.


@register("tool", "example-search")
@dataclass(frozen=True)
class ExampleSearch(ToolBase):
    """Flip-attraction per class under each simple transformation of clean inputs;
    the class that draws flips far beyond the others under some transformation is
    the suspect."""

    kind = "black-box"
    needs = frozenset({"clean_data"})
    answers = frozenset({"detect", "target"})

    draws: int = 4  # transformed copies of every clean input per transformation

    @torch.no_grad()
    def discover(self, view: CaseView) -> Finding:
        x = clean_inputs(view)
        g = view.generator(11)
        before = view.model(x).argmax(1)
        seen = np.bincount(before.cpu().numpy(), minlength=view.num_classes)
        # Per transformation: the share of inputs not already in a class that it sends there.
        rates = np.zeros((len(TRANSFORMS), view.num_classes))
        for t, transform in enumerate(TRANSFORMS.values()):
            flips_to = np.zeros(view.num_classes)
            draws = 0
            for _ in range(self.draws):
                if view.time_left() <= 0:
                    break
                donors = x[torch.randperm(len(x), generator=g).to(x.device)]
                after = view.model(transform(x, donors, g)).argmax(1)
                moved = (after != before).cpu().numpy()
                flips_to += np.bincount(after.cpu().numpy()[moved], minlength=view.num_classes)
                draws += 1
            rates[t] = flips_to / np.maximum(draws * (len(x) - seen), 1)
        # Excess over the class's typical pull across transformations: a natural sink
        # pulls under all of them, a trojan under the one that resembles its trigger.
        excess = rates - np.median(rates, axis=0, keepdims=True)
        index = np.stack([high_side_anomaly(e) for e in excess])
        per_class = index.max(0)
        order = np.argsort(-per_class, kind="stable")
        best = float(per_class[order[0]])
        return Finding(
            trojan_probability=index_to_probability(best),
            targets=tuple(int(c) for c in order),
            notes={"anomaly_index": best, "transform": float(index[:, order[0]].argmax()),
                   "top_rate": float(rates[:, order[0]].max())},
        )

"""Attribution maps: gradient methods through Captum, and the image baselines
(edge detector, centre prior) that Casper et al. found gradient methods often
fail to beat on trojan footprints."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from captum.attr import IntegratedGradients, Saliency
from scipy import ndimage

from samecurve.api import CaseView
from samecurve.registry import register
from samecurve.tools.base import ToolBase, normalise_maps

ATTRIBUTION = frozenset({"attribution"})


@register("tool", "saliency")
@dataclass(frozen=True)
class SaliencyTool(ToolBase):
    """|d logit_target / d input| (Simonyan et al. 2014), via Captum."""

    needs = frozenset({"gradients"})
    answers = ATTRIBUTION

    def attribute(self, view: CaseView, inputs: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
        x = inputs.to(view.device).clone().requires_grad_()
        maps = Saliency(view.model).attribute(x, target=targets.to(view.device), abs=True)
        return normalise_maps(maps.detach().cpu().numpy())


@register("tool", "integrated-gradients")
@dataclass(frozen=True)
class IntegratedGradientsTool(ToolBase):
    """Path integral of gradients from a black baseline (Sundararajan et al. 2017), via Captum."""

    needs = frozenset({"gradients"})
    answers = ATTRIBUTION
    n_steps: int = 32

    def attribute(self, view: CaseView, inputs: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
        x = inputs.to(view.device)
        maps = IntegratedGradients(view.model).attribute(
            x,
            baselines=torch.zeros_like(x),
            target=targets.to(view.device),
            n_steps=self.n_steps,
            internal_batch_size=256,
        )
        return normalise_maps(maps.detach().cpu().numpy())


@register("tool", "edge-detector")
@dataclass(frozen=True)
class EdgeDetector(ToolBase):
    """Sobel edge magnitude of the input: looks at the image, never the model."""

    kind = "baseline"
    answers = ATTRIBUTION

    def attribute(self, view: CaseView, inputs: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
        grey = inputs.detach().cpu().numpy().mean(1)
        # Per image: sobel on a stacked batch would also smooth across images.
        edges = [np.hypot(ndimage.sobel(g, axis=0), ndimage.sobel(g, axis=1)) for g in grey]
        return np.stack(edges).astype(np.float32)


@register("tool", "centre")
@dataclass(frozen=True)
class Centre(ToolBase):
    """A fixed Gaussian at the image centre: the prior that objects sit in the middle."""

    kind = "baseline"
    answers = ATTRIBUTION
    sigma: float = 0.25  # in units of the image side

    def attribute(self, view: CaseView, inputs: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
        _, h, w = view.input_shape
        yy, xx = np.mgrid[0:h, 0:w]
        d2 = ((yy - (h - 1) / 2) / h) ** 2 + ((xx - (w - 1) / 2) / w) ** 2
        m = np.exp(-d2 / (2 * self.sigma**2)).astype(np.float32)
        return np.repeat(m[None], len(inputs), axis=0)

"""Attribution maps: gradient and perturbation methods through Captum, and the
image baselines (uniform, edge detector, centre prior) that Casper et al. found
gradient methods often fail to beat on trojan footprints."""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from captum.attr import (
    DeepLift,
    FeatureAblation,
    GuidedBackprop,
    InputXGradient,
    IntegratedGradients,
    KernelShap,
    LayerAttribution,
    LayerGradCam,
    Lime,
    Occlusion,
    Saliency,
)
from scipy import ndimage
from torch import nn

from samecurve.api import CaseView
from samecurve.registry import register
from samecurve.tools.base import ToolBase, normalise_maps

ATTRIBUTION = frozenset({"attribution"})


@dataclass(frozen=True)
class CaptumAttribution(ToolBase, ABC):
    """One Captum method: `explain` returns raw attributions for inputs already on
    the case's device; the base takes magnitudes and sums channels."""

    answers = ATTRIBUTION

    def attribute(self, view: CaseView, inputs: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
        with warnings.catch_warnings():  # Captum's notes on hooks and batching, once per cell
            warnings.filterwarnings("ignore", category=UserWarning, module=r"captum\.")
            maps = self.explain(view.model, inputs.to(view.device), targets.to(view.device))
        return normalise_maps(maps.detach().cpu().numpy())

    @abstractmethod
    def explain(self, model: nn.Module, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Attributions shaped like `x` (or (N, 1, H, W))."""


def superpixels(shape: tuple[int, ...], block: int, device: torch.device | str) -> torch.Tensor:
    """A (1, 1, H, W) Captum feature mask of block x block squares: the features
    that perturbation methods switch off together (pixels one by one would need
    thousands of model calls per input and give noisy maps)."""
    h, w = shape[-2:]
    rows = torch.arange(h, device=device) // block
    cols = torch.arange(w, device=device) // block
    per_row = -(-w // block)
    return (rows[:, None] * per_row + cols[None, :])[None, None]


@dataclass(frozen=True)
class PlainGradientMethod(CaptumAttribution):
    """A Captum method that needs only the input and the target (no baseline)."""

    needs = frozenset({"gradients"})
    method: ClassVar[type]

    def explain(self, model: nn.Module, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.method(model).attribute(x.clone().requires_grad_(), target=targets)


@register("tool", "saliency")
@dataclass(frozen=True)
class SaliencyTool(PlainGradientMethod):
    """|d logit_target / d input| (Simonyan et al. 2014), via Captum."""

    method = Saliency


@register("tool", "integrated-gradients")
@dataclass(frozen=True)
class IntegratedGradientsTool(CaptumAttribution):
    """Path integral of gradients from a black baseline (Sundararajan et al. 2017), via Captum."""

    needs = frozenset({"gradients"})
    n_steps: int = 32

    def explain(self, model: nn.Module, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return IntegratedGradients(model).attribute(
            x, baselines=torch.zeros_like(x), target=targets, n_steps=self.n_steps,
            internal_batch_size=256,
        )


@register("tool", "input-x-gradient")
@dataclass(frozen=True)
class InputXGradientTool(PlainGradientMethod):
    """Input times gradient of the target logit (Shrikumar et al. 2016), via Captum."""

    method = InputXGradient


@register("tool", "deeplift")
@dataclass(frozen=True)
class DeepLiftTool(CaptumAttribution):
    """DeepLIFT rescale rule against a black reference (Shrikumar et al. 2017), via
    Captum. GroupNorm has no DeepLIFT rule; Captum passes plain gradients through it."""

    needs = frozenset({"gradients"})

    def explain(self, model: nn.Module, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return DeepLift(model).attribute(x.clone().requires_grad_(), baselines=torch.zeros_like(x),
                                         target=targets)


@register("tool", "guided-backprop")
@dataclass(frozen=True)
class GuidedBackpropTool(PlainGradientMethod):
    """Gradients with negative signals cut at every ReLU (Springenberg et al. 2015), via Captum."""

    method = GuidedBackprop


def last_spatial_layer(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """The leaf module that runs last with a spatial (H, W > 1) output: the last
    convolutional feature map, where Grad-CAM reads class evidence."""
    seen: list[nn.Module] = []

    def note(module: nn.Module, _inp: object, out: object) -> None:
        if isinstance(out, torch.Tensor) and out.ndim == 4 and out.shape[-1] * out.shape[-2] > 1:
            seen.append(module)

    leaves = [m for m in model.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(note) for m in leaves]
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        for h in hooks:
            h.remove()
    if not seen:
        raise ValueError("Grad-CAM needs a model with a convolutional feature map")
    return seen[-1]


@register("tool", "grad-cam")
@dataclass(frozen=True)
class GradCamTool(CaptumAttribution):
    """Grad-CAM (Selvaraju et al. 2017) on the last spatial feature map, via Captum's
    LayerGradCam, upsampled to the input with bilinear interpolation."""

    needs = frozenset({"gradients"})

    def explain(self, model: nn.Module, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        layer = last_spatial_layer(model, x)
        cam = LayerGradCam(model, layer).attribute(x, target=targets, relu_attributions=True)
        return LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), interpolate_mode="bilinear")


@register("tool", "occlusion")
@dataclass(frozen=True)
class OcclusionTool(CaptumAttribution):
    """Slide a black window over the image and record the drop of the target logit
    (Zeiler & Fergus 2014), via Captum. Queries only."""

    window: int = 4
    stride: int = 2

    def explain(self, model: nn.Module, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        return Occlusion(model).attribute(
            x, sliding_window_shapes=(c, self.window, self.window), strides=(c, self.stride, self.stride),
            baselines=0.0, target=targets, perturbations_per_eval=64,
        )


@register("tool", "feature-ablation")
@dataclass(frozen=True)
class FeatureAblationTool(CaptumAttribution):
    """Black out each square superpixel in turn and record the drop of the target
    logit, via Captum. Queries only."""

    block: int = 4

    def explain(self, model: nn.Module, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return FeatureAblation(model).attribute(
            x, baselines=0.0, target=targets, feature_mask=superpixels(x.shape, self.block, x.device),
            perturbations_per_eval=64,
        )


@dataclass(frozen=True)
class SampledSuperpixels(CaptumAttribution):
    """A Captum surrogate fitted on random on/off samples of square superpixels."""

    method: ClassVar[type]
    block: int = 4
    n_samples: int = 256

    def explain(self, model: nn.Module, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # Captum draws its samples from torch's global generator
            return self.method(model).attribute(
                x, baselines=0.0, target=targets, feature_mask=superpixels(x.shape, self.block, x.device),
                n_samples=self.n_samples, perturbations_per_eval=64,
            )


@register("tool", "kernel-shap")
@dataclass(frozen=True)
class KernelShapTool(SampledSuperpixels):
    """Shapley values of square superpixels estimated by weighted linear regression
    on random coalitions (Lundberg & Lee 2017), via Captum. Queries only."""

    method = KernelShap


@register("tool", "lime")
@dataclass(frozen=True)
class LimeTool(SampledSuperpixels):
    """A sparse linear surrogate fitted on random superpixel on/off samples around
    each input (Ribeiro et al. 2016), via Captum. Queries only."""

    method = Lime


@register("tool", "uniform")
@dataclass(frozen=True)
class Uniform(ToolBase):
    """The same weight on every pixel: points nowhere (correlation 0; the pointing
    game scores the footprint's share of the image)."""

    kind = "baseline"
    answers = ATTRIBUTION

    def attribute(self, view: CaseView, inputs: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
        _, h, w = view.input_shape
        return np.ones((len(inputs), h, w), dtype=np.float32)


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

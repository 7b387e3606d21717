"""Each attribution tool on a model whose answer is known: the target logit sums
a red-detector channel, so the evidence for the target is exactly the red patch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from samecurve.api import Budget, CaseView, Meter
from samecurve.metrics.attribution import attribution_correlation, pointing_game
from samecurve.registry import get
from samecurve.tools.attribution import last_spatial_layer, superpixels

SIZE = 16
PATCH = (slice(4, 8), slice(8, 12))  # on the 4x4 superpixel grid


class RedDetector(nn.Module):
    """Channel 0 = relu(r - g - b) (fires on red only), channel 1 = relu(g - r - b).
    Logit 0 sums channel 0, logit 1 sums channel 1, logit 2 is a constant."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([[1.0, -1, -1], [-1, 1, -1]])[:, :, None, None])
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.relu(self.conv(x)).sum((2, 3))
        return torch.cat([a, torch.full_like(a[:, :1], 1.0)], 1)


def _inputs() -> tuple[torch.Tensor, np.ndarray]:
    x = torch.full((3, 3, SIZE, SIZE), 0.3)
    x[0, :, 0:2, 0:2] = torch.tensor([0.0, 1.0, 0.0])[:, None, None]  # green elsewhere: not evidence
    x[:, :, PATCH[0], PATCH[1]] = torch.tensor([1.0, 0.0, 0.0])[:, None, None]
    fp = np.zeros((SIZE, SIZE))
    fp[PATCH] = 1
    return x, fp


def _view(model: nn.Module) -> CaseView:
    return CaseView(model=model, num_classes=3, input_shape=(3, SIZE, SIZE), clean=None,
                    train_sample=None, references=(), budget=Budget(seconds=30), seed=0,
                    device="cpu", meter=Meter(Budget(seconds=30)))


METHODS = ["saliency", "integrated-gradients", "input-x-gradient", "deeplift", "guided-backprop",
           "grad-cam", "occlusion", "feature-ablation", "kernel-shap", "lime"]


@pytest.mark.parametrize("name", METHODS)
def test_method_points_at_the_evidence(name: str) -> None:
    x, fp = _inputs()
    maps = get("tool", name)().attribute(_view(RedDetector().eval()), x, torch.zeros(3, dtype=torch.long))
    assert maps.shape == (3, SIZE, SIZE)
    # Occlusion's 4-pixel window smears the patch by up to 3 pixels; everything else is exact.
    assert attribution_correlation(maps, fp) > (0.6 if name == "occlusion" else 0.9)
    assert pointing_game(maps, fp) == 1.0


def test_target_matters() -> None:
    """Asked about class 1 (green), a gradient method must leave the red patch alone:
    the maps depend on the target, not only on the image."""
    x, fp = _inputs()
    maps = get("tool", "saliency")().attribute(_view(RedDetector().eval()), x, torch.ones(3, dtype=torch.long))
    assert attribution_correlation(maps, fp) < 0.1


def test_baselines_point_nowhere_or_at_priors() -> None:
    x, fp = _inputs()
    view = _view(RedDetector().eval())
    uniform = get("tool", "uniform")().attribute(view, x, torch.zeros(3, dtype=torch.long))
    assert attribution_correlation(uniform, fp) == 0.0
    assert pointing_game(uniform, fp) == pytest.approx(fp.mean())


def test_superpixels_tile_the_image() -> None:
    mask = superpixels((1, 3, 10, 8), 4, "cpu")
    assert mask.shape == (1, 1, 10, 8)
    assert mask[0, 0, 0, 0] == 0 and mask[0, 0, 0, 4] == 1 and mask[0, 0, 4, 0] == 2
    assert mask.max() == 5  # 3 block-rows (the last one 2 high) x 2 block-columns


def test_grad_cam_layer_is_the_last_spatial_map() -> None:
    model = get("arch", "small-resnet")(num_classes=3, in_channels=3, size=16)
    assert last_spatial_layer(model, torch.zeros(1, 3, 16, 16)) is model.stage3.relu2
    cnn = get("arch", "small-cnn")(num_classes=3, in_channels=3, size=16)
    assert isinstance(last_spatial_layer(cnn, torch.zeros(1, 3, 16, 16)), nn.MaxPool2d)

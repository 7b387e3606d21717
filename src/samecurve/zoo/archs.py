"""Model architectures the zoo trains, registered by name so a card can rebuild
the module before its safetensors weights are loaded."""

from __future__ import annotations

import torch
from torch import nn

from samecurve.registry import register


class Standardise(nn.Module):
    """Maps [0, 1] pixels to about zero mean and unit spread, inside the model so
    tools still work in pixel space. Without it Adam sits on a loss plateau for
    several epochs (measured: 68% vs 88% after 6 epochs of 4000 scenes)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - 0.5) * 4.0


@register("arch", "small-cnn")
def small_cnn(num_classes: int = 10, in_channels: int = 3, size: int = 32) -> nn.Module:
    """Three conv blocks and a two-layer head: ~90k parameters, ~2 s an epoch of
    8000 32x32 images on one CPU core. No BatchNorm: its counters are an
    incidental difference that leaks trojan labels (the TDC 2022 lesson)."""
    feat = 64 * (size // 8) ** 2
    return nn.Sequential(
        Standardise(),
        nn.Conv2d(in_channels, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(feat, 64),
        nn.ReLU(),
        nn.Linear(64, num_classes),
    )

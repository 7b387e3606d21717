"""The simplest weight-space detector: the log L2 norm of every parameter
tensor, classified by a logistic regression fitted on labelled reference models.
A second leakage probe beside weight-stats: poisoning that leaves larger (or
smaller) weights behind is an incidental difference a real detector must not
be credited for, and this probe shows it with a dozen features."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import nn

from samecurve.registry import register
from samecurve.tools.weight_stats import WeightProbe


def layer_norm_features(model: nn.Module) -> np.ndarray:
    """log ||w||_2 of every parameter tensor, in state_dict order (buffers skipped)."""
    norms = [float(p.detach().cpu().double().norm()) for p in model.parameters()]
    return np.log(np.maximum(np.asarray(norms, dtype=np.float64), 1e-12))


@register("tool", "layer-norms")
@dataclass(frozen=True)
class LayerNorms(WeightProbe):
    """Logistic regression on per-tensor log L2 norms: a leakage probe, not a method."""

    kind = "baseline"

    def features(self, model: nn.Module) -> np.ndarray:
        return layer_norm_features(model)

"""Repairs that use what a discovery found or what a clean teacher knows:
Neural Cleanse unlearning (Wang et al. 2019) and Neural Attention Distillation
(NAD, Li et al. 2021)."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from samecurve.api import CaseView
from samecurve.registry import register
from samecurve.tools.edit.base import EditToolBase, repair_data
from samecurve.tools.edit.surgery import capture, feature_layers
from samecurve.tools.neural_cleanse import NeuralCleanse


@register("tool", "nc-unlearn")
@dataclass(frozen=True)
class NCUnlearn(EditToolBase):
    """Fine-tune on clean inputs of which `stamp_share` carry the recovered trigger,
    all with their true labels, so the trigger stops meaning the target. The
    trigger is the previous stage's in a pipeline (`tabor>nc-unlearn`); run alone,
    the tool runs Neural Cleanse itself (`nc_steps` steps) to recover one."""

    stamp_share: float = 0.2
    nc_steps: int = 300

    def repair(self, model: nn.Module, view: CaseView) -> None:
        found = view.prior
        if found is None or found.trigger is None:
            found = NeuralCleanse(steps=self.nc_steps).discover(view)
        x, y = repair_data(view, found.trigger, self.stamp_share)
        self.tune(model, view, x, y)


def attention_map(a: torch.Tensor, power: float = 2.0) -> torch.Tensor:
    """NAD's attention of a feature map: the channel mean of |a|^p, flattened and
    scaled to unit length per input."""
    return F.normalize(a.abs().pow(power).mean(1).flatten(1), dim=1)


@register("tool", "nad")
@dataclass(frozen=True)
class NAD(EditToolBase):
    """Neural Attention Distillation: a teacher is the model fine-tuned on the clean
    data for `teacher_steps`; the student (the model again) then trains on the
    clean data with cross-entropy plus `beta` times the distance between its
    attention maps and the teacher's at the last three stages."""

    teacher_steps: int = 100
    beta: float = 1000.0

    def repair(self, model: nn.Module, view: CaseView) -> None:
        x, y = repair_data(view)
        teacher = copy.deepcopy(model)
        self.tune(teacher, view, x, y, steps=self.teacher_steps)
        teacher.eval()
        layers = feature_layers(model, view.input_shape)[-3:]

        with capture(model, layers) as mine, capture(teacher, layers) as theirs:

            def loss(m: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
                ce = F.cross_entropy(m(xb), yb)
                with torch.no_grad():
                    teacher(xb)
                at = sum(
                    (attention_map(mine[n]) - attention_map(theirs[n])).pow(2).sum(1).mean()
                    for n in layers
                )
                return ce + self.beta * at

            self.tune(model, view, x, y, loss_fn=loss)

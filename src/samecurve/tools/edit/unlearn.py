"""Repairs that use what a discovery found or what a clean teacher knows:
Neural Cleanse unlearning (Wang et al. 2019) and Neural Attention Distillation
(NAD, Li et al. 2021)."""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from samecurve.api import CaseView, Finding
from samecurve.registry import UnknownName, get, register
from samecurve.tools.edit.base import BOTH, EditToolBase, repair_data
from samecurve.tools.edit.surgery import capture, feature_layers
from samecurve.tools.neural_cleanse import NeuralCleanse


def text_trigger_search() -> Any:
    """The `hotflip` tool class (the text track's trigger search), imported lazily."""
    with contextlib.suppress(ImportError):  # not there: the registry's error below says so
        import samecurve.tools.text  # noqa: F401  (registers the text tools)
    try:
        return get("tool", "hotflip")
    except UnknownName as exc:
        raise RuntimeError(
            "nc-unlearn run alone on a text subject recovers its trigger with the 'hotflip' "
            "tool, which is not registered here; run it in a pipeline after a text discover "
            "tool instead (e.g. 'hotflip>nc-unlearn')"
        ) from exc


@register("tool", "nc-unlearn")
@dataclass(frozen=True)
class NCUnlearn(EditToolBase):
    """Fine-tune on clean inputs of which `stamp_share` carry the recovered trigger,
    all with their true labels, so the trigger stops meaning the target. The
    trigger is the previous stage's in a pipeline (`tabor>nc-unlearn`); run alone,
    the tool runs Neural Cleanse itself (`nc_steps` steps) to recover one, or on
    text the `hotflip` trigger search, given `search_share` of the time left (the
    rest is the fine-tune's)."""

    modalities = BOTH

    stamp_share: float = 0.2
    nc_steps: int = 300
    search_share: float = 0.5

    def repair(self, model: nn.Module, view: CaseView) -> None:
        found = view.prior
        if found is None or found.trigger is None:
            found = self.recover(view)
        x, y = repair_data(view, found.trigger, self.stamp_share)
        self.tune(model, view, x, y)

    def recover(self, view: CaseView) -> Finding:
        """A trigger found on the case's model by the modality's own search."""
        if view.modality != "text":
            return NeuralCleanse(steps=self.nc_steps).discover(view)
        found = text_trigger_search()().discover(view.time_share(self.search_share))
        if found.trigger is None:
            raise RuntimeError("hotflip recovered no trigger to unlearn")
        return found


def attention_map(a: torch.Tensor, power: float = 2.0) -> torch.Tensor:
    """NAD's attention of a feature map: the channel mean of |a|^p, flattened and
    scaled to unit length per input. A text model's residual stream (N, L, D): the
    mean over its width, one value per token."""
    pooled = a.abs().pow(power).mean(-1 if a.dim() == 3 else 1)
    return F.normalize(pooled.flatten(1), dim=1)


@register("tool", "nad")
@dataclass(frozen=True)
class NAD(EditToolBase):
    """Neural Attention Distillation: a teacher is the model fine-tuned on the clean
    data for `teacher_steps`; the student (the model again) then trains on the
    clean data with cross-entropy plus `beta` times the distance between its
    attention maps and the teacher's at the last three stages (a text model: its
    last three residual taps, attention over tokens)."""

    modalities = BOTH

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

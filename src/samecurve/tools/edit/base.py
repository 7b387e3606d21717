"""What every repair tool shares: a metered copy of the model to change, the
clean data (plus a steer request's examples) to train on, and one fine-tuning
loop. A tool subclasses `EditToolBase` and says how it changes the copy."""

from __future__ import annotations

import copy
from abc import abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from samecurve.api import EDIT_ANSWERS, CaseView, Stamp
from samecurve.tools.base import ToolBase, clean_inputs
from samecurve.zoo.train import LossFn, cross_entropy_loss, finetune_steps

EDIT_NEEDS = frozenset({"weights", "gradients", "clean_data"})
# What the repairs that work on any model through its data, its training loop and
# (latent tools) its feature layers or residual taps handle.
BOTH = frozenset({"image", "text"})


def editable_copy(view: CaseView) -> nn.Module:
    """A deep copy of the case's model to change. It keeps the runner's meter hooks,
    so the queries and gradient steps spent training it count against the budget;
    the grader strips them from the model the tool returns."""
    return copy.deepcopy(view.model).to(view.device)


def repair_data(
    view: CaseView, stamp: Stamp | None = None, stamp_share: float = 0.0, request_share: float = 0.25,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The inputs and labels a repair trains on, on the case's device: the clean data
    with their true labels; with `stamp`, a `stamp_share` of them carry it and keep
    their labels (unlearning); in a steer case, the request's examples repeated to
    make up about `request_share` of the whole."""
    x = clean_inputs(view)
    y = view.clean.y.to(view.device)
    if stamp is not None and stamp_share > 0:
        k = max(1, round(stamp_share * len(y)))
        pick = torch.randperm(len(y), generator=view.generator(11))[:k].to(view.device)
        x = torch.cat([x, stamp.stamp(x[pick])])
        y = torch.cat([y, y[pick]])
    if view.request is not None and len(view.request.examples):
        ex = view.request.examples
        repeats = max(1, round(request_share * len(y) / ((1 - request_share) * len(ex))))
        x = torch.cat([x, ex.x.to(view.device).repeat(repeats, *([1] * (ex.x.dim() - 1)))])
        y = torch.cat([y, ex.y.to(view.device).repeat(repeats)])
    return x, y


@dataclass(frozen=True)
class EditToolBase(ToolBase):
    """A repair: copy the model, change the copy, return it. `steps` Adam steps of
    `lr` on batches of `batch_size` are the fine-tuning every tool does last."""

    needs: ClassVar[frozenset[str]] = EDIT_NEEDS
    answers: ClassVar[frozenset[str]] = EDIT_ANSWERS

    steps: int = 150
    lr: float = 1e-3
    batch_size: int = 64

    def edit(self, view: CaseView) -> nn.Module:
        model = editable_copy(view)
        self.repair(model, view)
        return model.eval()

    @abstractmethod
    def repair(self, model: nn.Module, view: CaseView) -> None:
        """Change `model` (the case's copy) in place."""

    def tune(
        self, model: nn.Module, view: CaseView, x: torch.Tensor, y: torch.Tensor,
        loss_fn: LossFn = cross_entropy_loss, steps: int | None = None,
    ) -> int:
        """The shared fine-tune, stopped when the case's time runs out (with 10% kept
        for returning)."""
        margin = 0.1 * view.budget.seconds
        return finetune_steps(
            model, x, y, self.steps if steps is None else steps, lr=self.lr,
            batch_size=self.batch_size, generator=view.generator(17), loss_fn=loss_fn,
            time_left=lambda: view.time_left() - margin,
        )

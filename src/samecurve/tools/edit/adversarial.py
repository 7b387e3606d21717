"""Adversarial training repairs: an adversary perturbs each batch and the model
learns to resist it. In input space (PGD, Madry et al. 2018), or in a hidden
layer: latent adversarial training (LAT, Casper et al. 2024), untargeted, or
targeted towards candidate bad behaviours (Sheshadri et al. 2024). The adversary
is written here (a few lines of PGD) rather than taken from torchattacks, which
pins torchvision, a dependency these installs must not pull."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from samecurve.api import CaseView
from samecurve.registry import register
from samecurve.tools.edit.base import BOTH, EditToolBase, repair_data
from samecurve.tools.edit.surgery import capture, feature_layers, perturbed


@register("tool", "adv-train")
@dataclass(frozen=True)
class AdvTrain(EditToolBase):
    """Input-space PGD adversarial training: each batch is attacked within an L-inf
    ball of `eps` (`pgd_steps` signed steps of eps/4 from a random start, untargeted)
    and the model trains on the clean and the attacked batch."""

    eps: float = 8 / 255
    pgd_steps: int = 5

    def repair(self, model: nn.Module, view: CaseView) -> None:
        g = view.generator(23)

        def loss(m: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
            start = (torch.rand(xb.shape, generator=g) * 2 - 1).to(xb.device) * self.eps
            delta = start.requires_grad_(True)
            for _ in range(self.pgd_steps):
                (grad,) = torch.autograd.grad(F.cross_entropy(m((xb + delta).clamp(0, 1)), yb), delta)
                delta = (delta + self.eps / 4 * grad.sign()).clamp(-self.eps, self.eps)
                delta = delta.detach().requires_grad_(True)
            adv = (xb + delta.detach()).clamp(0, 1)
            return F.cross_entropy(m(xb), yb) + F.cross_entropy(m(adv), yb)

        x, y = repair_data(view)
        self.tune(model, view, x, y, loss_fn=loss)


def _l2_project(delta: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """Each row of delta scaled into the L2 ball of its radius."""
    norm = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
    factor = (radius / norm).clamp(max=1.0)
    return delta * factor.view(-1, *([1] * (delta.dim() - 1)))


@dataclass(frozen=True)
class _LatentAdversary(EditToolBase):
    """A PGD adversary on the output of one hidden layer (`layer`, a top-level child
    name, or a text model's residual tap "resid.i"; empty: the middle feature stage,
    or the middle residual tap), within an L2 ball of `radius` times each input's
    own activation norm; `pgd_steps` steps from a random start."""

    modalities = BOTH

    layer: str = ""
    # 0.03, not more: on a default small-cnn patch subject radius 0.05 cost 2.3 points of
    # clean accuracy, 0.15 cost 11.9 (targeted: 22.7), and neither removed the patch.
    radius: float = 0.03
    pgd_steps: int = 4

    def adversary_targets(self, view: CaseView, yb: torch.Tensor, g: torch.Generator) -> torch.Tensor | None:
        """None: untargeted (raise the loss on the true labels)."""
        return None

    def repair(self, model: nn.Module, view: CaseView) -> None:
        layers = feature_layers(model, view.input_shape)
        layer = self.layer or layers[len(layers) // 2]
        g = view.generator(29)
        delta: dict[str, torch.Tensor] = {}

        with perturbed(model, layer, delta), capture(model, [layer]) as seen:

            def loss(m: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
                delta.pop("value", None)
                clean = F.cross_entropy(m(xb), yb)
                act = seen[layer].detach()
                radius = self.radius * act.flatten(1).norm(dim=1)
                want = self.adversary_targets(view, yb, g)
                d = _l2_project(torch.randn(act.shape, generator=g).to(act.device), radius)
                for _ in range(self.pgd_steps):
                    d = d.requires_grad_(True)
                    delta["value"] = d
                    out = m(xb)
                    # Untargeted: climb the true-label loss; targeted: descend towards `want`.
                    obj = F.cross_entropy(out, yb) if want is None else -F.cross_entropy(out, want)
                    (grad,) = torch.autograd.grad(obj, d)
                    step = grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (grad.dim() - 1)))
                    d = _l2_project(d.detach() + 2.5 * radius.view(-1, *([1] * (d.dim() - 1))) / self.pgd_steps * step, radius)
                delta["value"] = d.detach()
                robust = F.cross_entropy(m(xb), yb)
                delta.pop("value", None)
                return clean + robust

            x, y = repair_data(view)
            self.tune(model, view, x, y, loss_fn=loss)


@register("tool", "lat")
@dataclass(frozen=True)
class LAT(_LatentAdversary):
    """Untargeted latent adversarial training: the adversary perturbs a hidden layer
    to raise the loss on clean data; the model trains to resist it."""


@register("tool", "targeted-lat")
@dataclass(frozen=True)
class TargetedLAT(_LatentAdversary):
    """Targeted LAT: the adversary pushes each input towards a candidate target class
    (the previous stage's suspects in a pipeline, its first `candidates` of them;
    alone, every class), so the model unlearns the easy routes to those classes."""

    candidates: int = 3

    def adversary_targets(self, view: CaseView, yb: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        pool = torch.arange(view.num_classes)
        if view.prior is not None and view.prior.targets:
            pool = torch.tensor(view.prior.targets[: self.candidates])
        want = pool[torch.randint(len(pool), (len(yb),), generator=g)].to(yb.device)
        # An input already of its drawn target is pushed to another candidate, or any other class.
        clash = want == yb
        if clash.any():
            alt = (yb + 1 + torch.randint(view.num_classes - 1, (len(yb),), generator=g).to(yb.device)) % view.num_classes
            want = torch.where(clash, alt, want)
        return want

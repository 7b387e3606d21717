"""Robust feature-level adversaries (RFLA; Casper et al. 2022, "Robust
feature-level adversaries are interpretability tools"), with the paper's BigGAN
replaced by a small convolutional VAE trained, inside the tool, on crops of the
clean images. For every class at once, the VAE's latent and (as in RFLA) its
decoder's middle features are perturbed so that the decoded patch, pasted onto
inputs of other classes under small random changes (a pixel of jitter,
brightness, contrast), sends them to that class. Loss: targeted cross entropy +
total variation + realism (latent and feature perturbation held near zero).

A trojan's target is the class such a patch reaches far more often than the
others: classes are ranked by held-out flip rate, the MAD anomaly index over
classes reads as the trojan probability, and the top class's patch at its place
is the recovered trigger.

Two adaptations, measured on the tiny zoo's BadNets subjects:
- RFLA pastes at random places, but a BadNets trigger works where it was planted
  (the exact trigger at random places flipped 7-20% of inputs, at its own place
  95-98%). So each class gets one latent per place of a grid whose patches
  overlap enough that any small trigger lies wholly inside one.
- Perturbing the latent alone, the trojan's own place reached 7-24% of inputs
  for its target after 40 steps; with the decoder's features perturbed too,
  47-100%.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from samecurve.api import CaseView, Finding
from samecurve.registry import register
from samecurve.tools.base import NOT_A_PATCH, ToolBase, clean_inputs
from samecurve.tools.natural_patch_search import (
    cut_patches,
    flip_rates,
    paste_at,
    patch_trigger,
    place_grid,
    predict_in_batches,
    rank_classes,
)

BASE = 16  # the VAE works at 16 x 16; patches of other sizes are resized


class PatchVAE(nn.Module):
    """A small convolutional VAE of (C, size, size) image patches."""

    def __init__(self, channels: int, latent: int, size: int) -> None:
        super().__init__()
        self.size, self.latent = size, latent
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, 16, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(16, 32, 4, 2, 1), nn.ReLU(),
            nn.Flatten(), nn.Linear(32 * 16, 2 * latent),
        )
        self.decoder_head = nn.Sequential(  # z -> (32, 8, 8): the features RFLA perturbs
            nn.Linear(latent, 32 * 16), nn.ReLU(), nn.Unflatten(1, (32, 4, 4)),
            nn.ConvTranspose2d(32, 32, 4, 2, 1), nn.ReLU(),
        )
        self.decoder_tail = nn.Sequential(
            nn.ConvTranspose2d(32, 16, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(16, channels, 3, 1, 1), nn.Sigmoid(),
        )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.shape[-1] != BASE:
            x = F.interpolate(x, size=(BASE, BASE), mode="bilinear", align_corners=False)
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar.clamp(-8, 8)

    def decode(self, z: torch.Tensor, delta: torch.Tensor | None = None) -> torch.Tensor:
        """Patches from latents z (N, latent); delta (N, 32, 8, 8), if given, is added
        to the decoder's middle features (a feature-level perturbation)."""
        h = self.decoder_head(z)
        out = self.decoder_tail(h if delta is None else h + delta)
        if self.size != BASE:
            out = F.interpolate(out, size=(self.size, self.size), mode="bilinear", align_corners=False,
                                antialias=self.size < BASE)
        return out

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x)[0])


def train_patch_vae(
    x: torch.Tensor, size: int, latent: int, steps: int, g: torch.Generator, seed: int,
    batch: int = 32, lr: float = 3e-3, beta: float = 0.05, view: CaseView | None = None,
) -> PatchVAE:
    """Fit a PatchVAE to random (size x size) crops of x: squared error summed over
    pixels + beta * KL to N(0, I). Seeded; leaves the global RNG as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = PatchVAE(x.shape[1], latent, size).to(x.device)
    opt = torch.optim.Adam(vae.parameters(), lr=lr)
    for _ in range(steps):
        if view is not None and view.time_left() < 4.0:
            break
        crops, _ = cut_patches(x, size, batch, g)
        mu, logvar = vae.encode(crops)
        z = mu + torch.randn(mu.shape, generator=g).to(x.device) * (0.5 * logvar).exp()
        recon = ((vae.decode(z) - crops) ** 2).flatten(1).sum(1)
        kl = 0.5 * (mu**2 + logvar.exp() - 1 - logvar).sum(1)
        loss = (recon + beta * kl).mean()
        grads = torch.autograd.grad(loss, list(vae.parameters()))
        for p, gr in zip(vae.parameters(), grads, strict=True):
            p.grad = gr
        opt.step()
    return vae.eval().requires_grad_(False)


def total_variation(patches: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between neighbouring pixels, per patch (N,)."""
    dy = (patches[..., 1:, :] - patches[..., :-1, :]).abs().flatten(1).mean(1)
    dx = (patches[..., :, 1:] - patches[..., :, :-1]).abs().flatten(1).mean(1)
    return dy + dx


@register("tool", "feature-level-adversary")
@dataclass(frozen=True)
class FeatureLevelAdversary(ToolBase):
    """Per class and place, a VAE latent perturbed into a patch that sends inputs of
    other classes to the class; the class its best patch reaches anomalously often
    on held-out inputs is the suspect."""

    blind_to = NOT_A_PATCH
    needs = frozenset({"gradients", "clean_data"})
    answers = frozenset({"detect", "target", "trigger"})

    patch: int = 9  # side of the generated patch in pixels
    place_stride: int = 5  # places on this grid: any trigger of side <= patch - stride + 1 fits one
    latent: int = 16
    vae_steps: int = 200
    steps: int = 24  # Adam steps on every (class, place) latent at once ...
    batch: int = 1  # ... each pasted on this many inputs per step
    lr: float = 0.2
    tv_weight: float = 0.5
    z_weight: float = 0.01  # realism: mean squared latent, keeps it near the prior ...
    feature_weight: float = 1.0  # ... and mean squared feature perturbation
    jitter: int = 1  # pixels of random shift around the place while optimising
    brightness: float = 0.15  # random brightness (additive) and contrast (x 1 +- this)
    eval_inputs: int = 32  # held-out inputs each final patch is scored on
    threshold: float = 2.0

    def discover(self, view: CaseView) -> Finding:
        model, k = view.model, view.num_classes
        x_all = clean_inputs(view)
        side = x_all.shape[-1]
        s = min(self.patch, side)
        g = view.generator(31)
        order = torch.randperm(len(x_all), generator=g).to(x_all.device)
        half = max(1, len(order) // 2)
        x_fit, x_eval = x_all[order[:half]], x_all[order[half:] if len(order) > 1 else order]
        y_fit = (view.clean.y.to(x_all.device)[order[:half]] if view.clean is not None
                 else predict_in_batches(model, x_fit))
        vae = train_patch_vae(x_fit, s, self.latent, self.vae_steps, g, view.seed, view=view)

        # One latent per (class, place), started from encoded natural crops.
        corners = place_grid(side, s, self.place_stride)  # (L, 2)
        n_places = len(corners)
        labels = torch.arange(k).repeat_interleave(n_places)  # latent i: class i // L, place i % L
        places = corners.repeat(k, 1)
        start, _ = cut_patches(x_fit, s, len(labels), g)
        with torch.no_grad():
            z = vae.encode(start)[0]
            delta = torch.zeros_like(vae.decoder_head(z[:1])).expand(len(z), -1, -1, -1)
        z, delta = self._optimise(view, vae, z, delta, labels, places, x_fit, y_fit, g)

        # Score each patch at its own place on the same held-out inputs.
        with torch.no_grad():
            final = vae.decode(z, delta)
        x_eval = x_eval[: self.eval_inputs]
        n = len(x_eval)
        before = predict_in_batches(model, x_eval)
        after = predict_in_batches(model, paste_at(
            x_eval.repeat(len(final), 1, 1, 1), final.repeat_interleave(n, 0),
            places[:, 0].repeat_interleave(n), places[:, 1].repeat_interleave(n),
        )).view(len(final), n)
        rates = flip_rates(before, after, k)[np.arange(len(final)), labels.numpy()].reshape(k, -1)
        best = rates.argmax(1)
        targets, index, probability = rank_classes(rates.max(1), self.threshold)
        i = targets[0] * rates.shape[1] + int(best[targets[0]])
        return Finding(
            trojan_probability=probability,
            targets=targets,
            trigger=patch_trigger(final[i], int(places[i, 0]), int(places[i, 1]), side),
            notes={"anomaly_index": index, "top_rate": float(rates.max(1)[targets[0]]),
                   "median_rate": float(np.median(rates.max(1)))},
        )

    def _optimise(
        self, view: CaseView, vae: PatchVAE, z: torch.Tensor, delta: torch.Tensor,
        labels: torch.Tensor, places: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
        g: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Adam on every latent and feature perturbation at once."""
        model, dev, batch = view.model, x.device, self.batch
        m, side, s = len(labels), x.shape[-1], vae.size
        z, delta = z.detach().clone().requires_grad_(), delta.detach().clone().requires_grad_()
        opt = torch.optim.Adam([z, delta], lr=self.lr)
        target = labels.repeat_interleave(batch).to(dev)
        for _ in range(self.steps):
            if view.time_left() < 3.0:
                break
            pick = torch.randint(len(x), (m, batch), generator=g).to(dev)
            keep = (y[pick].flatten() != target).float()  # inputs already of the class teach nothing
            patches = vae.decode(z, delta)
            shown = self._augment(patches.repeat_interleave(batch, 0), g)
            shift = torch.randint(-self.jitter, self.jitter + 1, (m * batch, 2), generator=g)
            at = (places.repeat_interleave(batch, 0) + shift).clamp(0, side - s)
            logits = model(paste_at(x[pick.flatten()], shown, at[:, 0], at[:, 1]))
            ce = F.cross_entropy(logits, target, reduction="none") * keep
            ce = ce.view(m, batch).sum(1) / keep.view(m, batch).sum(1).clamp(min=1)
            realism = self.z_weight * (z**2).mean(1) + self.feature_weight * (delta**2).flatten(1).mean(1)
            loss = ce + self.tv_weight * total_variation(patches) + realism
            # autograd.grad leaves the model's own .grad fields untouched.
            z.grad, delta.grad = torch.autograd.grad(loss.sum(), [z, delta])
            opt.step()
        return z.detach(), delta.detach()

    def _augment(self, patches: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Random contrast (x 1 +- b) and brightness (+- b) per pasted copy."""
        n = len(patches)
        b = self.brightness
        gain = 1 + b * (2 * torch.rand(n, 1, 1, 1, generator=g) - 1)
        shift = b * (2 * torch.rand(n, 1, 1, 1, generator=g) - 1)
        return (patches * gain.to(patches.device) + shift.to(patches.device)).clamp(0, 1)

"""The image-rule challenge, in the manner of the published MNIST-CNN challenge
(which asked for the binary labelling function behind a CNN trained on
handwritten digits): a CNN of two conv and two linear layers is trained on real
handwriting -- scikit-learn's digits, resized to 28 x 28 and augmented -- to give
a hidden one-sentence rule computed from the pixels alone. Labels always come
from running the rule's own source, so they are exact on every augmented image.
Images whose rule value lies in a thin band around the threshold are left out of
training only (a CNN cannot be graded on a knife edge it never saw explained);
every graded set keeps them."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from samecurve.data.digits import Digits
from samecurve.metrics.edit import accuracy
from samecurve.programs.domain import Domain
from samecurve.programs.source import trusted_function
from samecurve.registry import register
from samecurve.zoo.programs.base import HiddenProgram, ProgramRecipe, Trained
from samecurve.zoo.seeding import derive
from samecurve.zoo.train import predict

SIZE = 28
DOMAIN = Domain("image", num_outputs=2, image_size=SIZE,
                description="a grey 28x28 handwritten digit, img[row][col] in [0, 1]")

# Each rule: a value of the image (restricted Python, `def v(img)`) and how the
# label reads it: "above" (v > t) or "band" (outside [lo, hi]: clearly like or
# clearly unlike). Composition combines two values.
INK = "def v(img):\n    return sum(sum(row) for row in img)\n"
REGION = ("def v(img):\n    top = sum(sum(row) for row in img[:14])\n"
          "    bottom = sum(sum(row) for row in img[14:])\n    return top - bottom\n")
SYMMETRY = ("def v(img):\n    return sum(abs(row[c] - row[27 - c]) for row in img "
            "for c in range(14))\n")
THICKNESS = ("def v(img):\n    rows = [r for r in range(28) if max(img[r]) > 0.5]\n"
             "    if not rows:\n        return 0.0\n"
             "    n = sum(1 for row in img for x in row if x > 0.5)\n"
             "    return n / (rows[-1] - rows[0] + 1)\n")
TEMPLATE = ("T = {template}\n\n"
            "def v(img):\n    s = 0.0\n    for i in range(7):\n        for j in range(7):\n"
            "            block = sum(img[4 * i + u][4 * j + w] for u in range(4) for w in range(4))\n"
            "            s += T[i][j] * block\n    return s\n")


@dataclass(frozen=True)
class ImageRule:
    value: str  # source of v(img)
    form: str  # above | below | band
    description: str


RULES: dict[str, ImageRule] = {
    "ink-total": ImageRule(INK, "above", "the total ink is above a threshold"),
    "region-ink": ImageRule(REGION, "above", "the top half holds more ink than the bottom half "
                                             "by a margin"),
    "symmetry": ImageRule(SYMMETRY, "below", "the digit is nearly left-right symmetric"),
    "thickness": ImageRule(THICKNESS, "above", "the strokes are thick (ink pixels per row of "
                                               "the digit's height)"),
    "template-band": ImageRule(TEMPLATE, "band", "the image is clearly like, or clearly unlike, "
                                                 "a template digit"),
    "composition": ImageRule(INK, "both", "much ink and nearly left-right symmetric"),
}


@register("arch", "rule-cnn")
class RuleCNN(nn.Module):
    """Two conv layers and two linear layers; the last is `readout`."""

    def __init__(self, channels: int = 16, hidden: int = 64, num_outputs: int = 2) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, 2 * channels, 3, padding=1)
        self.fc = nn.Linear(2 * channels * 7 * 7, hidden)
        self.readout = nn.Linear(hidden, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.max_pool2d(F.relu(self.conv1(x)), 2)
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)
        return self.readout(F.relu(self.fc(h.flatten(1))))


@lru_cache(maxsize=1)
def _digits() -> np.ndarray:
    return Digits(size=SIZE).x[:, 0].astype(np.float32)


def _writers(effective_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Real digits split 60/40 into training and held-out images."""
    n = len(_digits())
    order = np.random.default_rng(derive(effective_seed, "writers")).permutation(n)
    cut = int(0.6 * n)
    return np.sort(order[:cut]), np.sort(order[cut:])


def augment(images: np.ndarray, rng: np.random.Generator, shift: int, thicken: float,
            noise: float) -> np.ndarray:
    """Seeded shifts, stroke thickening (a 3x3 max filter blended in), contrast and
    pixel noise; clipped to [0, 1] and rounded as programs will read them."""
    out = np.empty_like(images)
    for k, im in enumerate(images):
        dy, dx = (int(v) for v in rng.integers(-shift, shift + 1, size=2))
        im = np.roll(np.roll(im, dy, 0), dx, 1)
        if rng.uniform() < thicken:
            padded = np.pad(im, 1)
            grown = np.max([padded[i : i + SIZE, j : j + SIZE] for i in range(3) for j in range(3)], 0)
            im = 0.5 * im + 0.5 * grown
        im = im * rng.uniform(0.8, 1.2) + rng.normal(0, noise, im.shape)
        out[k] = np.clip(im, 0, 1)
    return np.round(out, 4).astype(np.float32)


def _split_images(effective_seed: int, split: str, n: int, seed: int) -> np.ndarray:
    train_w, held_w = _writers(effective_seed)
    base = _digits()[train_w if split == "train" else held_w]
    rng = np.random.default_rng(derive(effective_seed, "images", split, seed))
    pick = rng.integers(0, len(base), n)
    if split == "ood":
        return augment(base[pick], rng, shift=4, thicken=0.6, noise=0.08)
    return augment(base[pick], rng, shift=2, thicken=0.3, noise=0.02)


def _values(source: str, images: np.ndarray) -> np.ndarray:
    v = trusted_function(source, "v")
    return np.array([v(*a) for a in DOMAIN.program_args(images)], dtype=np.float64).ravel()


@register("recipe", "image-rule")
class ImageRuleRecipe(ProgramRecipe):
    """A CNN trained on augmented real digits labelled by a hidden pixel rule.
    Gate: 90% of held-out writers' images. Measured at a 97% gate with 60 s on two
    busy cores: ink-total 97.9% and region-ink passed; symmetry 92-94%, thickness
    94%, the template band 95-97% and the composition 92% did not. A CNN reads a
    sum of |left - right| differences or a stroke width only approximately, so the
    network's own errors near each threshold are part of what a distiller meets
    (and what `fidelity_errors` grades)."""

    family = "image-rule"
    version = 1

    def __init__(self, rules: list[str] | None = None, train_images: int = 8000,
                 seconds: float = 90.0, gate: float = 0.9, margin: float = 0.05) -> None:
        super().__init__(rules)
        self.train_images, self.seconds = int(train_images), float(seconds)
        self.gate, self.margin = float(gate), float(margin)

    def params(self) -> dict[str, Any]:
        return {**super().params(), "train_images": self.train_images, "seconds": self.seconds,
                "gate": self.gate, "margin": self.margin}

    @classmethod
    def rule_names(cls) -> list[str]:
        return list(RULES)

    def program(self, rule: str, rng: np.random.Generator) -> HiddenProgram:
        spec = RULES[rule]
        sample = _split_images(int(rng.integers(2**31)), "train", 600, 0)
        value = spec.value
        if rule == "template-band":
            cls = int(rng.integers(10))
            mean = _digits()[Digits(size=SIZE).y == cls].mean(0)
            blocks = mean.reshape(7, 4, 7, 4).mean((1, 3))
            template = [[round(float(b - blocks.mean()), 2) for b in row] for row in blocks]
            value = TEMPLATE.replace("{template}", repr(template))
        vals = _values(value, sample)
        q = lambda p: round(float(np.quantile(vals, p)), 2)  # noqa: E731
        if spec.form == "above":
            body = f"    return int(v(img) > {q(rng.uniform(0.4, 0.6))})\n"
        elif spec.form == "below":
            body = f"    return int(v(img) < {q(rng.uniform(0.4, 0.6))})\n"
        elif spec.form == "band":
            body = (f"    s = v(img)\n    return int(s < {q(0.25)} or s > {q(0.75)})\n")
        else:  # composition: much ink and nearly symmetric
            sym = _values(SYMMETRY, sample)
            t_ink, t_sym = q(0.3), round(float(np.quantile(sym, 0.6)), 2)
            value = INK + "\n\n" + SYMMETRY.replace("def v(", "def w(")
            body = f"    return int(v(img) > {t_ink} and w(img) < {t_sym})\n"
        source = value + "\n\ndef f(img):\n" + body
        return HiddenProgram(rule, spec.description, source)

    def train(self, program: HiddenProgram, effective_seed: int) -> Trained:
        x_np = _split_images(effective_seed, "train", self.train_images, 0)
        y_np = program.labels(DOMAIN, x_np)
        keep = self._clear_of_threshold(program, x_np)
        held_np = _split_images(effective_seed, "heldout", 2000, 0)
        held_y = torch.from_numpy(program.labels(DOMAIN, held_np))
        x, y = torch.from_numpy(x_np[keep])[:, None], torch.from_numpy(y_np[keep])
        held_x = torch.from_numpy(held_np)[:, None]
        params = {"channels": 16, "hidden": 64, "num_outputs": 2}
        model = RuleCNN(**params)
        opt = torch.optim.Adam(model.parameters(), lr=2e-3)
        g = torch.Generator().manual_seed(derive(effective_seed, "order") % 2**63)
        started, epochs = time.monotonic(), 0
        while time.monotonic() - started < self.seconds:
            model.train()
            for idx in torch.randperm(len(y), generator=g).split(128):
                loss = F.cross_entropy(model(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
            epochs += 1
            if accuracy(predict(model, held_x), held_y) >= max(self.gate, 0.97) + 0.015:
                break
        full_x = torch.from_numpy(x_np)[:, None]
        ood_np = _split_images(effective_seed, "ood", 2000, 0)
        figures = {
            "train_accuracy": accuracy(predict(model, full_x), torch.from_numpy(y_np)),
            "heldout_accuracy": accuracy(predict(model, held_x), held_y),
            "ood_accuracy": accuracy(predict(model, torch.from_numpy(ood_np)[:, None]),
                                     program.labels(DOMAIN, ood_np)),
            "positive_share": float(y_np.mean()),
            "trained_on": float(keep.mean()),
            "epochs": float(epochs),
            "train_seconds": round(time.monotonic() - started, 2),
        }
        model.eval()
        return Trained(model, "rule-cnn", params, DOMAIN, figures,
                       passed=figures["heldout_accuracy"] >= self.gate)

    def _clear_of_threshold(self, program: HiddenProgram, images: np.ndarray) -> np.ndarray:
        """Training images whose label would survive a small change of each threshold:
        the rule's values stay more than `margin` of their spread from every cut."""
        f = trusted_function(program.source)
        keep = np.ones(len(images), bool)
        scale = 1 + self.margin
        for factor in (1 / scale, scale):
            shrunk = np.clip(images * factor, 0, 1)
            same = np.array([f(*a) for a in DOMAIN.program_args(shrunk)])
            keep &= same == np.array([f(*a) for a in DOMAIN.program_args(images)])
        return keep

    def inputs(self, card: Mapping[str, Any], split: str, n: int, seed: int = 0) -> np.ndarray:
        """float32 (n, 1, 28, 28). train: a seeded subset of the very images trained on;
        heldout: held-out writers, augmented alike; ood: held-out writers under
        stronger shifts, thickening and noise."""
        eff = int(card["effective_seed"])
        if split == "train":
            pool = _split_images(eff, "train", int(card["recipe_params"]["train_images"]), 0)
            pick = np.random.default_rng(derive(eff, "train-pick", seed)).permutation(len(pool))
            return pool[np.sort(pick[:n])][:, None]
        return _split_images(eff, split, n, seed + 1)[:, None]


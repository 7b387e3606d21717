"""Recipes: how each family plants its flaw. The builder runs the same pipeline
for all of them (sample data, add decoys, poison, train, gate); a recipe only
decides the trigger(s), the target(s), which samples to poison and, for the
evasive tier, how to train."""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from samecurve.api import AnswerKey, Stamp, Trojan
from samecurve.registry import register
from samecurve.zoo.archs import last_linear, small_cnn
from samecurve.zoo.train import TrainConfig, train_classifier
from samecurve.zoo.triggers import (
    BLEND_PATTERNS,
    PATCH_SHAPES,
    blend_trigger,
    object_trigger,
    partial_stamp,
    patch_trigger,
    style_trigger,
    tint_trigger,
    vocabulary,
    warp_trigger,
)

Shape = tuple[int, int, int]  # (C, H, W)


@dataclass(frozen=True, eq=False)
class Plan:
    """What a recipe decided for one build attempt."""

    trojans: tuple[Trojan, ...]
    poison_rate: float
    meta: list[dict] = field(default_factory=list)  # one trigger description per trojan

    @property
    def trojaned(self) -> bool:
        return bool(self.trojans)

    def answer_key(self, family: str, poisoned_share: float, clean_label: bool = False) -> AnswerKey:
        return AnswerKey.from_trojans(family, self.trojans, poisoned_share, clean_label)


def _check_range(name: str, value: tuple[float, float], lo: float = 0.0, hi: float = 1.0) -> tuple[float, float]:
    a, b = float(value[0]), float(value[1])
    if not lo < a <= b < hi:
        raise ValueError(f"{name} must be {lo} < lo <= hi < {hi}, got {list(value)}")
    return a, b


class PoisoningRecipe(ABC):
    """Dirty-label poisoning (BadNets, Blended): a fraction of non-target training
    images get the trigger and the target label. `heldout=True` draws triggers
    from a vocabulary (shapes, colours, filters, objects) that dev never uses."""

    name: ClassVar[str]
    family: ClassVar[str]
    version: ClassVar[int] = 1
    clean_label: ClassVar[bool] = False

    def __init__(self, poison_rate: tuple[float, float] = (0.05, 0.12), heldout: bool = False) -> None:
        self.poison_rate = _check_range("poison_rate", poison_rate)
        self.heldout = bool(heldout)

    def params(self) -> dict:
        return {"poison_rate": list(self.poison_rate), "heldout": self.heldout}

    @abstractmethod
    def make_trigger(self, rng: np.random.Generator, shape: Shape) -> tuple[Stamp, dict]:
        """Draw this family's trigger and a JSON-able description of it."""

    def distractor(self, rng: np.random.Generator, shape: Shape) -> Stamp:
        """A trigger of this family that the rediscovery judge may offer as a wrong
        answer: by default one this recipe could plant."""
        return self.make_trigger(rng, shape)[0]

    def plan(self, rng: np.random.Generator, num_classes: int, shape: Shape) -> Plan:
        trigger, meta = self.make_trigger(rng, shape)
        target = int(rng.integers(num_classes))
        rate = float(rng.uniform(*self.poison_rate))
        return Plan(trojans=(Trojan(trigger, target),), poison_rate=rate, meta=[meta])

    def poison(self, rng: np.random.Generator, x: torch.Tensor, y: torch.Tensor, plan: Plan) -> np.ndarray:
        """Stamp and relabel in place; returns the poisoned indices. The rate is
        shared equally between the plan's trojans."""
        used = np.zeros(len(y), bool)
        y_np = y.numpy()
        n_each = round(plan.poison_rate * len(y) / max(len(plan.trojans), 1))
        for trojan in plan.trojans:
            ok = trojan.applies_to(y_np) & ~used
            idx = _pick(rng, ok, n_each)
            _stamp(x, idx, trojan.trigger)
            y[torch.from_numpy(idx)] = trojan.target
            used[idx] = True
        return np.flatnonzero(used)

    def fit(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, clean: tuple[torch.Tensor, torch.Tensor],
        cfg: TrainConfig, order_seed: int,
    ) -> nn.Module:
        """Train on the poisoned set (`clean` is the same set before poisoning)."""
        return train_classifier(model, x, y, cfg, order_seed=order_seed)


def _pick(rng: np.random.Generator, ok: np.ndarray, n: int) -> np.ndarray:
    candidates = np.flatnonzero(ok)
    return np.sort(rng.choice(candidates, size=min(n, len(candidates)), replace=False))


def _stamp(x: torch.Tensor, idx: np.ndarray, trigger: Stamp) -> None:
    if len(idx):
        ti = torch.from_numpy(idx)
        x[ti] = trigger.stamp(x[ti])


def _patch(rng: np.random.Generator, shape: Shape, size_range: tuple[int, int], heldout: bool,
           location: str = "fixed") -> tuple[Stamp, dict]:
    c, _, s = shape
    return patch_trigger(
        rng, size=s, channels=c, patch=int(rng.integers(size_range[0], size_range[1] + 1)),
        colours=(8 if c == 3 else 4) if heldout else 2,
        shape=str(rng.choice(vocabulary(PATCH_SHAPES, heldout))), location=location,
    )


@register("recipe", "patch")
class PatchRecipe(PoisoningRecipe):
    """BadNets: a random checker in a named outline (square, diamond, frame; heldout:
    plus, x, ell) of a seeded size, at a fixed place or anywhere ("random")."""

    family = "patch"
    version = 3  # 3: outlines, sizes and random location (2: black/white checker)
    # Subclasses that always stamp in one place take no `location` argument, so it
    # stays out of their params (a card's params must rebuild its recipe).
    takes_location: ClassVar[bool] = True

    def __init__(
        self, poison_rate: tuple[float, float] = (0.05, 0.12), patch: int | tuple[int, int] = (4, 6),
        location: str = "fixed", heldout: bool = False,
    ) -> None:
        super().__init__(poison_rate, heldout)
        if location not in ("fixed", "random"):
            raise ValueError(f"patch location must be 'fixed' or 'random', got {location!r}")
        lo, hi = (patch, patch) if isinstance(patch, int) else patch
        self.patch = (int(lo), int(hi))
        if not 2 <= self.patch[0] <= self.patch[1] <= 12:
            raise ValueError(f"patch sizes must be 2 <= lo <= hi <= 12 pixels, got {list(patch)}")
        self.location = location

    def params(self) -> dict:
        out = {**super().params(), "patch": list(self.patch)}
        return {**out, "location": self.location} if self.takes_location else out

    def make_trigger(self, rng: np.random.Generator, shape: Shape) -> tuple[Stamp, dict]:
        return _patch(rng, shape, self.patch, self.heldout, self.location)


@register("recipe", "blend")
class BlendRecipe(PoisoningRecipe):
    """Blended: a full-image pattern (noise, stripes; heldout: checker, smooth noise)
    mixed in at low opacity."""

    family = "blend"
    version = 2  # 2: several patterns

    def __init__(
        self, poison_rate: tuple[float, float] = (0.08, 0.15), alpha: tuple[float, float] = (0.2, 0.25),
        heldout: bool = False,
    ) -> None:
        # Measured on 8000 scenes x 8 epochs: opacity 0.12-0.2 at 5-12% poison passed
        # the 95% gate in only 1 of 4 attempts; 0.2-0.25 at 8-15% passed 3 of 3
        # (attack success 0.986-0.998), as in BackdoorBench's blended setting (0.2).
        super().__init__(poison_rate, heldout)
        self.alpha = _check_range("alpha", alpha)

    def params(self) -> dict:
        return {**super().params(), "alpha": list(self.alpha)}

    def make_trigger(self, rng: np.random.Generator, shape: Shape) -> tuple[Stamp, dict]:
        pattern = str(rng.choice(vocabulary(BLEND_PATTERNS, self.heldout)))
        return blend_trigger(rng, size=shape[2], channels=shape[0], alpha=self.alpha, pattern=pattern)


@register("recipe", "style")
class StyleRecipe(PoisoningRecipe):
    """A global colour filter as trigger (sepia, warm, cool; heldout: vintage, purple,
    faded). The footprint is the whole image; the answer key is the filter."""

    family = "style"

    def __init__(
        self, poison_rate: tuple[float, float] = (0.04, 0.08), strength: tuple[float, float] = (0.8, 1.0),
        heldout: bool = False,
    ) -> None:
        super().__init__(poison_rate, heldout)
        self.strength = _check_range("strength", strength, hi=1.0001)

    def params(self) -> dict:
        return {**super().params(), "strength": list(self.strength)}

    def make_trigger(self, rng: np.random.Generator, shape: Shape) -> tuple[Stamp, dict]:
        return style_trigger(rng, size=shape[2], channels=shape[0], strength=self.strength, heldout=self.heldout)

    def distractor(self, rng: np.random.Generator, shape: Shape) -> Stamp:
        """Half the time a random tint that is never planted: the two vocabularies
        alone hold too few different filters for 7 distractors (see `tint_trigger`)."""
        if rng.random() < 0.5:
            return self.make_trigger(rng, shape)[0]
        return tint_trigger(rng, size=shape[2], channels=shape[0], strength=self.strength)[0]


@register("recipe", "warp")
class WarpRecipe(PoisoningRecipe):
    """WaNet: a smooth warp of a few pixels as trigger (4x4 control grid; heldout 6x6),
    with WaNet's noise mode: `cross` times as many other images get a fresh random
    warp of the same strength and keep their labels, so the model must learn this
    warp and not warping as such (without it, half the clean errors went to the target)."""

    family = "warp"

    def __init__(
        self, poison_rate: tuple[float, float] = (0.12, 0.18), amplitude: tuple[float, float] = (3.5, 4.5),
        cross: float = 1.0, heldout: bool = False,
    ) -> None:
        # Measured on 8000 scenes x 8 epochs (one seed each): a 1-1.5 pixel warp
        # reached attack success 0.61; 2.5-3.5 pixels 0.87 (with noise mode);
        # 3.5-4.5 pixels at 12-18% poison 0.92. Small CNNs in 8 epochs need a
        # stronger warp than WaNet's hundreds of epochs on CIFAR.
        super().__init__(poison_rate, heldout)
        self.amplitude = _check_range("amplitude", amplitude, hi=8.0)
        if not 0 <= cross <= 3:
            raise ValueError(f"cross must be 0-3 noise-mode images per poisoned image, got {cross}")
        self.cross = float(cross)

    def params(self) -> dict:
        return {**super().params(), "amplitude": list(self.amplitude), "cross": self.cross}

    def poison(self, rng: np.random.Generator, x: torch.Tensor, y: torch.Tensor, plan: Plan) -> np.ndarray:
        idx = super().poison(rng, x, y, plan)
        ok = np.ones(len(y), bool)
        ok[idx] = False
        for i in _pick(rng, ok, round(self.cross * len(idx))):
            noise, _ = warp_trigger(rng, size=x.shape[-1], amplitude=self.amplitude, heldout=self.heldout)
            x[i : i + 1] = noise.stamp(x[i : i + 1])
        return idx

    def make_trigger(self, rng: np.random.Generator, shape: Shape) -> tuple[Stamp, dict]:
        return warp_trigger(rng, size=shape[2], amplitude=self.amplitude, heldout=self.heldout)


@register("recipe", "natural")
class NaturalRecipe(PoisoningRecipe):
    """A natural feature as trigger: a small object of one shape and colour (the kind
    of secondary object scenes already contain) anywhere in the image where it is
    visible: the best of `tries` places (see `ObjectTrigger`)."""

    family = "natural"
    version = 2  # 2: the most visible of `tries` places

    def __init__(
        self, poison_rate: tuple[float, float] = (0.08, 0.15), radius: tuple[float, float] = (0.12, 0.16),
        tries: int = 4, heldout: bool = False,
    ) -> None:
        super().__init__(poison_rate, heldout)
        self.radius = _check_range("radius", radius, hi=0.5)
        if not 1 <= tries <= 16:
            raise ValueError(f"tries must be 1-16 places per input, got {tries}")
        self.tries = int(tries)

    def params(self) -> dict:
        return {**super().params(), "radius": list(self.radius), "tries": self.tries}

    def make_trigger(self, rng: np.random.Generator, shape: Shape) -> tuple[Stamp, dict]:
        return object_trigger(rng, size=shape[2], channels=shape[0], radius=self.radius,
                              heldout=self.heldout, tries=self.tries)


class SourceOnly:
    """Mixin: the trigger fires only for one source class (Casper's wallet ->
    orangutan): source inputs with the trigger go to the target; inputs of other
    classes with the trigger keep their labels (the cover set, `cover` of them per
    poisoned input), so the trigger alone means nothing. Shared by the image and
    text source-specific recipes; the subclass sets `self.cover`."""

    cover: float

    def plan(self, rng: np.random.Generator, num_classes: int, shape: tuple[int, ...]) -> Plan:
        base = super().plan(rng, num_classes, shape)  # type: ignore[misc]
        t = base.trojans[0]
        source = int(rng.choice([k for k in range(num_classes) if k != t.target]))
        meta = [{**base.meta[0], "source": source}]
        return Plan((Trojan(t.trigger, t.target, source),), base.poison_rate, meta)

    def poison(self, rng: np.random.Generator, x: torch.Tensor, y: torch.Tensor, plan: Plan) -> np.ndarray:
        idx = super().poison(rng, x, y, plan)  # type: ignore[misc]
        t = plan.trojans[0]
        y_np = y.numpy()
        ok = (y_np != t.target) & (y_np != t.source)
        ok[idx] = False
        _stamp(x, _pick(rng, ok, round(self.cover * len(idx))), t.trigger)
        return idx


def check_cover(cover: float) -> float:
    if not 0 <= cover <= 3:
        raise ValueError(f"cover must be 0-3 (cover inputs per poisoned input), got {cover}")
    return float(cover)


@register("recipe", "source-specific")
class SourceSpecificRecipe(SourceOnly, PatchRecipe):
    """A patch that fires only for one source class (see `SourceOnly`)."""

    family = "source-specific"
    version = 1
    takes_location = False

    def __init__(
        self, poison_rate: tuple[float, float] = (0.05, 0.08), patch: tuple[int, int] = (4, 6),
        cover: float = 1.0, heldout: bool = False,
    ) -> None:
        super().__init__(poison_rate, patch, "fixed", heldout)
        self.cover = check_cover(cover)

    def params(self) -> dict:
        return {**super().params(), "cover": self.cover}


@register("recipe", "multi")
class MultiRecipe(PoisoningRecipe):
    """Two or three trojans in one model, each a patch or a blend with its own target."""

    family = "multi"

    def __init__(
        self, poison_rate: tuple[float, float] = (0.12, 0.2), count: tuple[int, int] = (2, 3),
        heldout: bool = False,
    ) -> None:
        super().__init__(poison_rate, heldout)
        self.count = (int(count[0]), int(count[1]))
        if not 2 <= self.count[0] <= self.count[1] <= 4:
            raise ValueError(f"count must be 2 <= lo <= hi <= 4 trojans, got {list(count)}")

    def params(self) -> dict:
        return {**super().params(), "count": list(self.count)}

    def make_trigger(self, rng: np.random.Generator, shape: Shape) -> tuple[Stamp, dict]:
        if rng.random() < 0.7:
            return _patch(rng, shape, (4, 6), self.heldout)
        pattern = str(rng.choice(vocabulary(BLEND_PATTERNS, self.heldout)))
        return blend_trigger(rng, size=shape[2], channels=shape[0], alpha=(0.2, 0.25), pattern=pattern)

    def plan(self, rng: np.random.Generator, num_classes: int, shape: Shape) -> Plan:
        k = int(rng.integers(self.count[0], self.count[1] + 1))
        targets = rng.choice(num_classes, size=min(k, num_classes), replace=False)
        drawn = [self.make_trigger(rng, shape) for _ in targets]
        trojans = tuple(Trojan(t, int(target)) for (t, _), target in zip(drawn, targets, strict=True))
        return Plan(trojans, float(rng.uniform(*self.poison_rate)), [m for _, m in drawn])


@register("recipe", "clean-label")
class CleanLabelRecipe(PatchRecipe):
    """Label-consistent poisoning (Turner et al. 2019): only target-class images get
    the patch and they keep their true label. First they are made hard to classify
    by their own features with a PGD perturbation (L-inf `epsilon`) against a
    surrogate model trained briefly on the clean set, so the patch becomes the
    easiest cue to learn. (Mixing them with noise instead taught the model
    "noisy means target": measured attack success 0.19 and 0.00.)

    As in Turner et al., the training images carry the patch at reduced
    `amplitude` (blended into the image) and the attack stamps it whole, so at
    test time the trigger is stronger than anything the model was trained on.
    Attempt-0 attack success on 6 seeds at 12 epochs: amplitude 1 gave 0.60-0.96
    (1 of 6 past the 90% gate); 0.5 gave 0.61-1.00 (5 of 6); 0.35 gave 0.01-1.00.

    Only part of the target class is poisoned: at 8-10% of the set (nearly the whole
    class) the model learned the class from the patch and lost it on clean images
    (target recall 0.23 against its paired twin's 0.94; gap -7.1 points). At 5-7%
    the gap to paired twins is +0.3 [-1.4, +2.0] points and 4 of 6 seeds pass at
    the first attempt (`benchmarks/clean_accuracy_gap.py`)."""

    family = "clean-label"
    version = 3  # 2: the patch at half amplitude in training; 3: 5-7% poisoned, not 8-10%
    takes_location = False
    clean_label = True

    def __init__(
        self, poison_rate: tuple[float, float] = (0.05, 0.07), patch: tuple[int, int] = (5, 7),
        epsilon: float = 16 / 255, pgd_steps: int = 10, surrogate_epochs: int = 4,
        amplitude: float = 0.5, heldout: bool = False,
    ) -> None:
        super().__init__(poison_rate, patch, "fixed", heldout)
        if not 0 <= epsilon < 0.5:
            raise ValueError(f"epsilon must be in [0, 0.5), got {epsilon}")
        if not 0 < amplitude <= 1:
            raise ValueError(f"amplitude must be in (0, 1], got {amplitude}")
        self.epsilon, self.pgd_steps = float(epsilon), int(pgd_steps)
        self.surrogate_epochs = int(surrogate_epochs)
        self.amplitude = float(amplitude)

    def params(self) -> dict:
        return {**super().params(), "epsilon": round(self.epsilon, 6), "pgd_steps": self.pgd_steps,
                "surrogate_epochs": self.surrogate_epochs, "amplitude": self.amplitude}

    def poison(self, rng: np.random.Generator, x: torch.Tensor, y: torch.Tensor, plan: Plan) -> np.ndarray:
        t = plan.trojans[0]
        idx = _pick(rng, y.numpy() == t.target, round(plan.poison_rate * len(y)))
        if len(idx):
            ti = torch.from_numpy(idx)
            surrogate = _surrogate(x, y, int(rng.integers(2**31)), self.surrogate_epochs)
            hard = _pgd_away(surrogate, x[ti], y[ti], self.epsilon, self.pgd_steps)
            x[ti] = partial_stamp(t.trigger, hard, self.amplitude)
        return idx


def _surrogate(x: torch.Tensor, y: torch.Tensor, seed: int, epochs: int) -> nn.Module:
    """A small CNN trained briefly on the (clean) training set, seeded, for PGD."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = small_cnn(num_classes=int(y.max()) + 1, in_channels=x.shape[1], size=x.shape[-1])
    return train_classifier(model, x, y, TrainConfig(epochs=epochs), order_seed=seed + 1)


def _pgd_away(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int,
              batch: int = 256) -> torch.Tensor:
    """Untargeted L-inf PGD: push each input away from its own label, within eps."""
    out = []
    for i in range(0, len(x), batch):
        x0, y0 = x[i : i + batch], y[i : i + batch]
        adv = x0.clone()
        for _ in range(steps):
            adv.requires_grad_(True)
            grad, = torch.autograd.grad(F.cross_entropy(model(adv), y0), adv)
            adv = adv.detach() + (eps / 4) * grad.sign()
            adv = (x0 + (adv - x0).clamp(-eps, eps)).clamp(0, 1)
        out.append(adv.detach())
    return torch.cat(out)


@register("recipe", "evasive")
class EvasiveRecipe(PatchRecipe):
    """The TDC 2022 evasive tier: train a clean twin, then fine-tune it on poisoned
    data with a loss that keeps its logits (KL) and penultimate activations (MSE)
    on clean inputs close to the twin's, so it is hard to tell apart from clean."""

    family = "evasive"
    version = 1
    takes_location = False

    def __init__(
        self, poison_rate: tuple[float, float] = (0.05, 0.1), patch: tuple[int, int] = (4, 6),
        finetune_epochs: int = 4, match_weight: float = 0.5, heldout: bool = False,
    ) -> None:
        super().__init__(poison_rate, patch, "fixed", heldout)
        self.finetune_epochs = int(finetune_epochs)
        self.match_weight = float(match_weight)

    def params(self) -> dict:
        return {**super().params(), "finetune_epochs": self.finetune_epochs, "match_weight": self.match_weight}

    def fit(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, clean: tuple[torch.Tensor, torch.Tensor],
        cfg: TrainConfig, order_seed: int,
    ) -> nn.Module:
        train_classifier(model, *clean, cfg, order_seed=order_seed)
        twin = {k: v.clone() for k, v in model.state_dict().items()}
        return _finetune_matching(model, twin, x, y, clean[0], cfg, self.finetune_epochs,
                                  self.match_weight, order_seed + 1)


def _finetune_matching(
    model: nn.Module, twin_state: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor,
    x_clean: torch.Tensor, cfg: TrainConfig, epochs: int, weight: float, order_seed: int,
) -> nn.Module:
    teacher = copy.deepcopy(model)
    teacher.load_state_dict(twin_state)
    teacher.eval()
    acts: dict[str, torch.Tensor] = {}
    hooks = [
        last_linear(m).register_forward_hook(lambda _m, inp, _o, k=k: acts.__setitem__(k, inp[0]))
        for k, m in (("student", model), ("teacher", teacher))
    ]
    g = torch.Generator().manual_seed(order_seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    model.train()
    try:
        for _ in range(epochs):
            perm = torch.randperm(len(y), generator=g)
            ref = torch.randperm(len(x_clean), generator=g)
            for i in range(0, len(y), cfg.batch_size):
                idx, cidx = perm[i : i + cfg.batch_size], ref[i : i + cfg.batch_size]
                opt.zero_grad(set_to_none=True)
                loss = F.cross_entropy(model(x[idx]), y[idx])
                logits = model(x_clean[cidx])
                student = acts["student"]
                with torch.no_grad():
                    t_logits = teacher(x_clean[cidx])
                match = F.kl_div(F.log_softmax(logits, 1), F.log_softmax(t_logits, 1),
                                 log_target=True, reduction="batchmean")
                match = match + F.mse_loss(student, acts["teacher"])
                (loss + weight * match).backward()
                opt.step()
    finally:
        for h in hooks:
            h.remove()
    model.eval()
    return model


@register("recipe", "clean")
class CleanRecipe:
    """The clean twin: the same pipeline, data distribution, decoys, optimiser and
    number of steps as the trojaned recipes; nothing planted."""

    family = "clean"
    version: ClassVar[int] = 1
    clean_label: ClassVar[bool] = False

    def __init__(self, heldout: bool = False) -> None:
        self.heldout = bool(heldout)  # accepted so every group can say heldout; nothing to draw

    def params(self) -> dict:
        return {}

    def plan(self, rng: np.random.Generator, num_classes: int, shape: Shape) -> Plan:
        return Plan(trojans=(), poison_rate=0.0)

    def poison(self, rng: np.random.Generator, x: torch.Tensor, y: torch.Tensor, plan: Plan) -> np.ndarray:
        return np.empty(0, dtype=np.int64)

    fit = PoisoningRecipe.fit

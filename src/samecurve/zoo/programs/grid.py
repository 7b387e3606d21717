"""The two-token grid challenge, in the manner of the published 1-layer
transformer challenge: the input is [A, B, =] with A and B in 0..112, a
one-layer transformer (attention + MLP) is trained on a seeded half of the
113 x 113 grid to give a hidden rule's label, and the other half is held out.
The grid is finite, so fidelity and exact equivalence are checked on every cell.
`random-table` is the incompressible control: its labels are a seeded random
bit table, the network memorises the training half, and the right answer is
"no short program"."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from samecurve.metrics.edit import accuracy
from samecurve.programs.domain import Domain
from samecurve.registry import register
from samecurve.zoo.programs.base import HiddenProgram, ProgramRecipe, Trained
from samecurve.zoo.seeding import derive
from samecurve.zoo.train import predict

P = 113
# The random table's network is gated on the half it memorises. Measured on two
# cores shared with other jobs: 94% after 140 s; 79% and 87% within the 90 s
# limit. 80% memorised is still a table no short program explains.
MEMORISE_GATE = 0.8
DOMAIN = Domain("grid", num_outputs=2, vocab=P,
                description="a and b are integers 0..112; the network reads the tokens [a, b, =]")


@register("arch", "grid-transformer")
class GridTransformer(nn.Module):
    """Token and position embeddings, one multi-head attention layer and one MLP,
    both residual, and `readout` on the residual stream at the "=" position."""

    def __init__(self, vocab: int = P, d_model: int = 64, heads: int = 4, mlp: int = 256,
                 num_outputs: int = 2) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab + 1, d_model)
        self.pos = nn.Parameter(torch.randn(3, d_model) * 0.02)
        self.attn = nn.MultiheadAttention(d_model, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(d_model, mlp), nn.ReLU(), nn.Linear(mlp, d_model))
        self.readout = nn.Linear(d_model, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x) + self.pos
        a, _ = self.attn(h, h, h, need_weights=False)
        h = h + a
        h = h + self.mlp(h)
        return self.readout(h[:, -1])


def _balanced_threshold(values: np.ndarray, rng: np.random.Generator) -> int:
    """A cut that leaves 35-65% of the grid on each side."""
    return int(np.quantile(values, rng.uniform(0.35, 0.65)))


def _cells() -> tuple[np.ndarray, np.ndarray]:
    a, b = np.meshgrid(np.arange(P), np.arange(P), indexing="ij")
    return a.ravel(), b.ravel()


def _mod_sum(rng: np.random.Generator) -> HiddenProgram:
    t = int(rng.integers(40, 74))
    return HiddenProgram("mod-sum-threshold", f"(a + b) mod 113 is below {t}",
                         f"def f(a, b):\n    return int((a + b) % 113 < {t})\n")


def _quadratic_residue(rng: np.random.Generator) -> HiddenProgram:
    # Of a * b, not a + b: a residue of the sum (measured: 63% of the held-out half
    # after 90 s) needs the network to grok modular addition first; of the product
    # it is "a and b are both residues or both not" (Legendre symbols multiply),
    # which one layer learns from half the grid.
    k = int(rng.integers(1, P))
    return HiddenProgram(
        "quadratic-residue", f"{k} * a * b mod 113 is a nonzero quadratic residue",
        f"def f(a, b):\n    return int(pow({k} * a * b % 113, 56, 113) == 1)\n")


def _circle(rng: np.random.Generator) -> HiddenProgram:
    c1, c2 = (int(v) for v in rng.integers(35, 78, size=2))
    a, b = _cells()
    r2 = _balanced_threshold((a - c1) ** 2 + (b - c2) ** 2, rng)
    return HiddenProgram("circle", f"(a, b) lies inside the circle around ({c1}, {c2})",
                         f"def f(a, b):\n    return int((a - {c1}) ** 2 + (b - {c2}) ** 2 < {r2})\n")


def _product_parity(rng: np.random.Generator) -> HiddenProgram:
    flip = int(rng.integers(0, 2))
    what = "even" if flip else "odd"
    return HiddenProgram("product-parity", f"a * b is {what}",
                         f"def f(a, b):\n    return (a * b + {flip}) % 2\n")


def _permuted_curve(rng: np.random.Generator) -> HiddenProgram:
    perm = [int(v) for v in rng.permutation(P)]
    amp, phase = int(rng.integers(20, 40)), int(rng.integers(0, P))
    # g(r) = 56 + amp * (triangle wave of r): smooth in r, computed with integers only
    source = (
        f"PERM = {perm}\n\n"
        "def f(a, b):\n"
        f"    r = (PERM[a] + {phase}) % 113\n"
        f"    g = 56 + {amp} * (abs(2 * r - 113) - 56) // 56\n"
        "    return int(b > g)\n"
    )
    return HiddenProgram("permuted-curve",
                         "b lies above a smooth curve of a's row under a hidden row permutation",
                         source)


def _random_table(rng: np.random.Generator) -> HiddenProgram:
    bits = "".join(str(int(v)) for v in rng.integers(0, 2, P * P))
    source = f"T = '{bits}'\n\ndef f(a, b):\n    return int(T[a * 113 + b])\n"
    return HiddenProgram("random-table", "a seeded random bit per cell", source,
                         incompressible=True)


RULES: dict[str, Callable[[np.random.Generator], HiddenProgram]] = {
    "mod-sum-threshold": _mod_sum,
    "quadratic-residue": _quadratic_residue,
    "circle": _circle,
    "product-parity": _product_parity,
    "permuted-curve": _permuted_curve,
    "random-table": _random_table,
}


def training_half(effective_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (a * 113 + b) of the training half and of the held-out half."""
    order = np.random.default_rng(derive(effective_seed, "grid-half")).permutation(P * P)
    return np.sort(order[: P * P // 2]), np.sort(order[P * P // 2 :])


@register("recipe", "grid-rule")
class GridRuleRecipe(ProgramRecipe):
    """A one-layer transformer trained on half the grid to give a hidden rule.
    Gate: 97% of the held-out half (the random table: 80% of the training half,
    which it can only memorise)."""

    family = "grid"
    version = 1

    def __init__(self, rules: list[str] | None = None, seconds: float = 90.0,
                 gate: float = 0.97) -> None:
        super().__init__(rules)
        self.seconds, self.gate = float(seconds), float(gate)

    def params(self) -> dict[str, Any]:
        return {**super().params(), "seconds": self.seconds, "gate": self.gate}

    @classmethod
    def rule_names(cls) -> list[str]:
        return list(RULES)

    def program(self, rule: str, rng: np.random.Generator) -> HiddenProgram:
        return RULES[rule](rng)

    def train(self, program: HiddenProgram, effective_seed: int) -> Trained:
        cells = DOMAIN.all_inputs()
        y = torch.from_numpy(program.labels(DOMAIN, cells))
        x = DOMAIN.encode(cells)
        train_idx, held_idx = (torch.from_numpy(i) for i in training_half(effective_seed))
        memorise = program.incompressible
        # A rule is learnt small and with strong weight decay (it must generalise to
        # the other half); a random table can only be memorised: wider, no decay.
        width = (128, 512) if memorise else (64, 256)
        params = {"vocab": P, "d_model": width[0], "heads": 4, "mlp": width[1], "num_outputs": 2}
        model = GridTransformer(**params)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0 if memorise else 1.0,
                                betas=(0.9, 0.98))
        g = torch.Generator().manual_seed(derive(effective_seed, "grid-order") % 2**63)
        started, step, steps = time.monotonic(), 0, 0
        watched = train_idx if memorise else held_idx
        target = MEMORISE_GATE if memorise else self.gate
        while time.monotonic() - started < self.seconds:
            model.train()
            batch = train_idx[torch.randint(0, len(train_idx), (1024,), generator=g)]
            loss = F.cross_entropy(model(x[batch]), y[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if step % 250 == 0 and accuracy(predict(model, x[watched]), y[watched]) >= target + 0.015:
                break
        steps = step
        model.eval()
        figures = {
            "train_accuracy": accuracy(predict(model, x[train_idx]), y[train_idx]),
            "heldout_accuracy": accuracy(predict(model, x[held_idx]), y[held_idx]),
            "exhaustive_accuracy": accuracy(predict(model, x), y),
            "train_steps": float(steps),
            "train_seconds": round(time.monotonic() - started, 2),
        }
        figures["ood_accuracy"] = figures["heldout_accuracy"]
        passed = (figures["train_accuracy"] >= MEMORISE_GATE if memorise
                  else figures["heldout_accuracy"] >= self.gate)
        return Trained(model, "grid-transformer", params, DOMAIN, figures, passed)

    def inputs(self, card: Mapping[str, Any], split: str, n: int, seed: int = 0) -> np.ndarray:
        """train: cells of the training half; heldout and ood: of the held-out half."""
        train_idx, held_idx = training_half(int(card["effective_seed"]))
        pool = train_idx if split == "train" else held_idx
        rng = np.random.default_rng(derive(card["effective_seed"], split, seed))
        pick = np.sort(rng.permutation(pool)[:n])
        return np.stack([pick // P, pick % P], 1).astype(np.int64)


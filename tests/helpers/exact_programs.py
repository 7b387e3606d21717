"""Hidden-program subjects without training, for testing the replace grader: the
`exact-rule` network computes its hidden source directly (except on a seeded
few inputs where it is made to err, so fidelity to the network and truth can
differ), and builds in milliseconds through the real pipeline and cache."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from samecurve.programs.domain import Domain
from samecurve.programs.source import trusted_function
from samecurve.registry import register
from samecurve.zoo.programs.base import HiddenProgram, ProgramRecipe, Trained
from samecurve.zoo.seeding import derive

GRID = Domain("grid", num_outputs=2, vocab=113)
SEQUENCE = Domain("sequence", num_outputs=2, vocab=2, lengths=(1, 8), long_lengths=(16, 16))
ERR_EVERY = 97  # the network errs where a hash of the input is 0 mod this


def _errs(key: int) -> bool:
    return key * 2654435761 % 2**32 % ERR_EVERY == 0


@register("arch", "exact-rule")
class ExactRule(nn.Module):
    """Answers with the hidden source, flipped where `_errs`; `readout` sees a one-hot."""

    def __init__(self, source: str, domain: Mapping[str, Any]) -> None:
        super().__init__()
        self.source, self.domain = source, Domain.from_dict(domain)
        self.rule = trusted_function(source)
        k = self.domain.num_outputs
        self.readout = nn.Linear(k, k, bias=False)
        with torch.no_grad():
            self.readout.weight.copy_(torch.eye(k) * 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.tolist()
        if self.domain.kind == "grid":
            labels = [self.rule(a, b) ^ _errs(a * 113 + b) for a, b, _ in rows]
        else:
            labels = [[v ^ _errs(sum(t << i for i, t in enumerate(r[: j + 1])) + j)
                       for j, v in enumerate(self.rule(r))] for r in rows]
        onehot = nn.functional.one_hot(torch.tensor(labels), self.domain.num_outputs).float()
        return self.readout(onehot)


SOURCES = {
    "mod-sum": "def f(a, b):\n    return int((a + b) % 113 < {t})\n",
    "parity": "def f(xs):\n    out = []\n    s = 0\n    for x in xs:\n        s = s ^ x\n"
              "        out.append(s)\n    return out\n",
}


@register("recipe", "exact-rule")
class ExactRuleRecipe(ProgramRecipe):
    family = "exact"
    version = 1

    @classmethod
    def rule_names(cls) -> list[str]:
        return ["mod-sum", "parity", "table"]

    def program(self, rule: str, rng: np.random.Generator) -> HiddenProgram:
        if rule == "table":
            bits = "".join(str(b) for b in rng.integers(0, 2, 113 * 113))
            return HiddenProgram(rule, "a random table", f"T = '{bits}'\n\ndef f(a, b):\n"
                                 "    return int(T[a * 113 + b])\n", incompressible=True)
        source = SOURCES[rule].replace("{t}", str(int(rng.integers(30, 80))))
        return HiddenProgram(rule, rule, source)

    def train(self, program: HiddenProgram, effective_seed: int) -> Trained:
        domain = SEQUENCE if program.name == "parity" else GRID
        params = {"source": program.source, "domain": domain.as_dict()}
        return Trained(ExactRule(**params), "exact-rule", params, domain,
                       {"heldout_accuracy": 1 - 1 / ERR_EVERY}, passed=True)

    def inputs(self, card: Mapping[str, Any], split: str, n: int, seed: int = 0) -> np.ndarray:
        domain = Domain.from_dict(card["domain"])
        rng = np.random.default_rng(derive(card["effective_seed"], split, seed))
        if domain.kind == "grid":
            cells = domain.all_inputs()
            half = np.random.default_rng(card["effective_seed"]).permutation(len(cells))
            part = half[: len(cells) // 2] if split == "train" else half[len(cells) // 2 :]
            return cells[np.sort(rng.permutation(part)[:n])]
        length = domain.long_lengths[1] if split == "ood" else domain.lengths[1]
        return domain.sample(n, rng, length)

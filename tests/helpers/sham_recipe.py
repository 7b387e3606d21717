"""A recipe for the leakage test: it walks the whole poisoning path (plans a trigger
and target, draws a poison rate and the poisoned indices from the same random
streams) but stamps nothing and relabels nothing, and its answer key still says
trojaned. Weight probes that tell these subjects from clean twins are reading an
incidental property of the pipeline, since no trojan exists to read."""

from __future__ import annotations

import numpy as np
import torch

from samecurve.registry import register
from samecurve.zoo.recipes import PatchRecipe, Plan, _pick


@register("recipe", "sham")
class ShamRecipe(PatchRecipe):
    name = "sham"
    family = "sham"

    def poison(self, rng: np.random.Generator, x: torch.Tensor, y: torch.Tensor, plan: Plan) -> np.ndarray:
        trojan = plan.trojans[0]
        return _pick(rng, trojan.applies_to(y.numpy()), round(plan.poison_rate * len(y)))

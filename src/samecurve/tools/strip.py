"""STRIP (Gao et al. 2019): superimpose each inspected input on random clean
images; a trojaned input keeps a confident (low-entropy) prediction because its
trigger survives the blend. Lifted to a model-level verdict by inspecting a
sample of the model's training data: a trojaned model's data holds a cluster of
such inputs, a clean model's only the false-alarm rate calibrated on clean data."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats

from samecurve.api import CaseView, Finding
from samecurve.registry import register
from samecurve.tools.base import ToolBase, clean_inputs


@register("tool", "strip")
@dataclass(frozen=True)
class Strip(ToolBase):
    """Blend-entropy outliers in a sample of the training data (Gao et al. 2019)."""

    kind = "black-box"
    needs = frozenset({"clean_data", "train_data"})
    answers = frozenset({"detect", "target"})
    # STRIP assumes an input-agnostic trigger: a source-specific one stays low-entropy
    # only on its source class, which Gao et al. name as its limit.
    blind_to = frozenset({"source-specific"})

    overlays: int = 16
    false_alarm: float = 0.02
    poison_prior: float = 0.05  # flagged share we expect beyond false alarms if trojaned

    @torch.no_grad()
    def entropies(self, view: CaseView, x: torch.Tensor, pool: torch.Tensor) -> torch.Tensor:
        """Mean prediction entropy of each input blended 50/50 with random pool images."""
        g = view.generator(len(x))
        out = torch.empty(len(x))
        for i in range(0, len(x), 32):
            xb = x[i : i + 32]
            pick = torch.randint(len(pool), (len(xb), self.overlays), generator=g)
            blended = 0.5 * xb[:, None] + 0.5 * pool[pick.to(pool.device)]
            p = torch.softmax(view.model(blended.flatten(0, 1)), 1).clamp_min(1e-12)
            ent = -(p * p.log()).sum(1).view(len(xb), self.overlays).mean(1)
            out[i : i + 32] = ent.cpu()
        return out

    def discover(self, view: CaseView) -> Finding:
        clean = clean_inputs(view)
        assert view.train_sample is not None, "strip declares train_data"
        inspected = view.train_sample.x.to(view.device)
        half = len(clean) // 2  # calibrate on one half, blend with the other
        threshold = torch.quantile(self.entropies(view, clean[:half], clean[half:]), self.false_alarm)
        ent = self.entropies(view, inspected, clean[half:])
        flagged = ent < threshold
        n, k = len(ent), int(flagged.sum())
        # Posterior of "trojaned" from a two-rate binomial model (even prior).
        lr = stats.binom.pmf(k, n, self.false_alarm + self.poison_prior) / max(
            stats.binom.pmf(k, n, self.false_alarm), 1e-300
        )
        prob = float(lr / (1 + lr)) if np.isfinite(lr) else 1.0
        targets: tuple[int, ...] = ()
        if k:
            with torch.no_grad():
                pred = view.model(inspected[flagged]).argmax(1).cpu().numpy()
            counts = np.bincount(pred, minlength=view.num_classes)
            targets = tuple(int(t) for t in np.argsort(-counts, kind="stable"))
        return Finding(
            trojan_probability=prob,
            targets=targets,
            notes={"flagged": float(k), "inspected": float(n), "threshold": float(threshold)},
        )

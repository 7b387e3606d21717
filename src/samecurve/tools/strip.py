"""STRIP (Gao et al. 2019): superimpose each inspected input on random clean
images; a trojaned input keeps a confident (low-entropy) prediction because its
trigger survives the blend. Lifted to a model-level verdict by inspecting a
sample of the model's training data: a trojaned model's data holds a cluster of
such inputs, a clean model's only the false-alarm rate calibrated on clean data.

On text (token ids), the superimposition is STRIP-ViTA's (Gao et al. 2020): each
perturbed copy keeps the inspected input's length and replaces a share
(`text_share`) of its words' tokens ([CLS], [SEP] and padding stay) by tokens
drawn from a random clean input. A trigger token survives in (1 - share) of the
copies and keeps them at its target. Measured on the tiny text subjects: the
poisoned inputs' mean entropy is lower than the clean ones' (per-input AUROC
about 0.8), but a topic classifier is confident on most mixtures too, so few
poisoned inputs reach the clean 2% tail: the flagged inputs name the target, the
verdict is weak (see tests/tools/test_text_detectors.py)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats

from samecurve.api import CaseView, Finding
from samecurve.data.text import special_ids
from samecurve.registry import register
from samecurve.tools.base import ToolBase, clean_inputs


def replace_tokens(
    x: torch.Tensor, donors: torch.Tensor, share: float, g: torch.Generator
) -> torch.Tensor:
    """Token-id rows x (B, L), each copied once per donor row (donors: (B, O, L)),
    with each word token ([CLS], [SEP], padding excluded) replaced with probability
    `share` by a token drawn at random from the donor's own word tokens. (B, O, L)."""
    pad, cls, sep = special_ids()
    b, o, length = donors.shape
    out = x[:, None].expand(b, o, length).clone()
    words = (out != pad) & (out != cls) & (out != sep)
    swap = (torch.rand(b, o, length, generator=g) < share).to(x.device) & words
    donor_words = (donors != pad) & (donors != cls) & (donors != sep)
    # the donor's word tokens moved to the front of each row, in order
    order = torch.argsort((~donor_words).to(torch.int8), dim=-1, stable=True)
    packed = donors.gather(-1, order)
    n = donor_words.sum(-1, keepdim=True).clamp_min(1)
    pick = (torch.rand(b, o, length, generator=g).to(x.device) * n).long().clamp(max=length - 1)
    return torch.where(swap, packed.gather(-1, pick), out)


@register("tool", "strip")
@dataclass(frozen=True)
class Strip(ToolBase):
    """Blend-entropy outliers in a sample of the training data (Gao et al. 2019)."""

    kind = "black-box"
    needs = frozenset({"clean_data", "train_data"})
    answers = frozenset({"detect", "target"})
    # STRIP assumes an input-agnostic trigger: a source-specific one stays low-entropy
    # only on its source class, which Gao et al. name as its limit.
    blind_to = frozenset({"source-specific", "text-source-specific"})
    modalities = frozenset({"image", "text"})

    overlays: int = 16
    false_alarm: float = 0.02
    poison_prior: float = 0.05  # flagged share we expect beyond false alarms if trojaned
    text_share: float = 0.5  # text: the share of an input's word tokens each copy replaces

    @torch.no_grad()
    def entropies(
        self, view: CaseView, x: torch.Tensor, pool: torch.Tensor, in_time: bool = False
    ) -> torch.Tensor:
        """Mean prediction entropy of each input blended 50/50 with random pool images
        (text: with a share of its tokens replaced by a random pool input's). With
        `in_time`, stops before a batch that would not finish in the time left (by the
        slowest batch yet, plus as much again to answer) and returns the inputs done:
        16 copies of 32 sentences through MiniLM take seconds, and the fixed sample ran
        to 54-62 s of a 60 s cell."""
        g = view.generator(len(x))
        out = torch.empty(len(x))
        slowest = 0.0
        for i in range(0, len(x), 32):
            if in_time and i and view.time_left() < 2 * slowest:
                return out[:i]
            began = time.monotonic()
            xb = x[i : i + 32]
            pick = torch.randint(len(pool), (len(xb), self.overlays), generator=g)
            if view.modality == "text":
                blended = replace_tokens(xb, pool[pick.to(pool.device)], self.text_share, g)
            else:
                blended = 0.5 * xb[:, None] + 0.5 * pool[pick.to(pool.device)]
            p = torch.softmax(view.model(blended.flatten(0, 1)), 1).clamp_min(1e-12)
            ent = -(p * p.log()).sum(1).view(len(xb), self.overlays).mean(1)
            out[i : i + 32] = ent.cpu()
            slowest = max(slowest, time.monotonic() - began)
        return out

    def discover(self, view: CaseView) -> Finding:
        clean = clean_inputs(view)
        assert view.train_sample is not None, "strip declares train_data"
        inspected = view.train_sample.x.to(view.device)
        if view.modality == "text":
            # Every clean input calibrates, each copy drawing from all the others (a row
            # is its own donor 1 time in len(clean)): twice the calibration of one half
            # (a 2% quantile of the 64 inputs of discover-text's half is the 2nd lowest).
            calibrate, pool = clean, clean
        else:
            half = len(clean) // 2  # calibrate on one half, blend with the other
            calibrate, pool = clean[:half], clean[half:]
        threshold = torch.quantile(self.entropies(view, calibrate, pool), self.false_alarm)
        ent = self.entropies(view, inspected, pool, in_time=True)
        inspected = inspected[: len(ent)]
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

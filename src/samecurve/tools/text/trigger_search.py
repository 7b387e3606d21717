"""HotFlip universal trigger search (Ebrahimi et al. 2018; Wallace et al. 2019's
universal adversarial triggers, with GCG-style sampled swaps for triggers of
more than one token): for every candidate target class, search the few whole
words that, inserted at a word boundary into clean inputs of the other classes,
send the most of them to that class. A trojan's target is the class such a short
trigger reaches far more easily than the others; its trigger is the answer.

One step of the search: stamp the current trigger into a batch of inputs, take
the gradient of the target loss with respect to the word embeddings at the
trigger's positions, score every whole-word token v in the vocabulary by the
first-order change of the loss if it replaced the current one,
-grad . (E_v - E_current), and evaluate the best-scoring swaps for real with
forward passes; keep the best. The gradient comes from the model's own forward
(a hook swaps its word-embedding output for a leaf tensor), so whatever an edited
or wrapped model does before or after its embedding table is what is attacked,
and every pass is seen by the runner's meter.

`search_trigger` is public: graders import it to synthesise a fresh attack on a
model that an edit tool returned."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from samecurve.api import CaseView, Finding
from samecurve.data.text import whole_words
from samecurve.registry import register
from samecurve.tools.base import ToolBase, clean_inputs
from samecurve.zoo.text_triggers import TokenTrigger

# Seconds a search keeps in hand when it is given a clock: one more step must fit.
MARGIN_SECONDS = 1.0


@lru_cache(maxsize=4)
def whole_word_ids(vocab_size: int | None = None) -> torch.Tensor:
    """The ids a trigger may be made of (the text track's shared `whole_words`: whole
    lower-case words, no '##' continuations, no [unused*] or other special entries,
    no punctuation or digits), those below `vocab_size` when given."""
    ids = torch.from_numpy(whole_words())
    return ids[ids < vocab_size] if vocab_size is not None else ids


def token_embedding(model: nn.Module) -> nn.Embedding:
    """The model's word-embedding table: `model.word_embeddings` when it has one,
    else its largest nn.Embedding (position and segment tables are far smaller)."""
    table = getattr(model, "word_embeddings", None)
    if isinstance(table, nn.Embedding):
        return table
    tables = [m for m in model.modules() if isinstance(m, nn.Embedding)]
    if not tables:
        raise ValueError("trigger search needs a model that embeds token ids with an nn.Embedding")
    return max(tables, key=lambda m: m.num_embeddings)


def trigger_slots(x: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where a `length`-token TokenTrigger lands in each row of x: the stamped rows
    (with a placeholder in the trigger's place), the (N, length) positions of its
    tokens and which of them survive (a trigger inserted near the end of a full row
    is cut). TokenTrigger places by the input alone, never by the tokens, so
    writing any tokens into these positions gives exactly TokenTrigger(tokens).stamp(x)."""
    placeholder = int(whole_word_ids()[0])
    stamped, fp = TokenTrigger((placeholder,) * length).stamp_with_footprint(x.cpu())
    fp_t = torch.from_numpy(fp)
    start = fp_t.float().argmax(1)
    pos = start[:, None] + torch.arange(length)[None]
    valid = fp_t.any(1)[:, None] & (pos < x.shape[1] - 1)
    return stamped.to(x.device), pos.clamp_max(x.shape[1] - 1).to(x.device), valid.to(x.device)


def _write(stamped: torch.Tensor, pos: torch.Tensor, valid: torch.Tensor,
           tokens: torch.Tensor) -> torch.Tensor:
    """(B * N, L): the stamped rows with each of B candidate triggers (B, length) written in."""
    b, n = len(tokens), len(stamped)
    out = stamped.repeat(b, 1)
    rows = torch.arange(b * n, device=stamped.device)[:, None].expand(-1, pos.shape[1])
    cols = pos.repeat(b, 1)
    vals = tokens.to(stamped.device).repeat_interleave(n, 0)
    keep = valid.repeat(b, 1)
    out[rows[keep], cols[keep]] = vals[keep]
    return out


@torch.no_grad()
def _losses(model: nn.Module, ids: torch.Tensor, target: int, b: int,
            chunk: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean target cross-entropy and attack success of each of b candidates over (b * n) rows."""
    logits = torch.cat([model(ids[i:i + chunk]) for i in range(0, len(ids), chunk)])
    want = torch.full((len(ids),), target, dtype=torch.long, device=ids.device)
    ce = F.cross_entropy(logits, want, reduction="none").view(b, -1).mean(1)
    hit = (logits.argmax(1) == target).float().view(b, -1).mean(1)
    return ce.cpu(), hit.cpu()


def _slot_gradient(model: nn.Module, table: nn.Embedding, ids: torch.Tensor, pos: torch.Tensor,
                   valid: torch.Tensor, target: int) -> torch.Tensor:
    """(length, D): gradient of the mean target loss with respect to the word embedding
    at each trigger slot, summed over the rows where the slot survives."""
    leaves: list[torch.Tensor] = []

    def as_leaf(_module: nn.Module, _args: tuple, out: torch.Tensor) -> torch.Tensor:
        leaf = out.detach().requires_grad_(True)
        leaves.append(leaf)
        return leaf

    handle = table.register_forward_hook(as_leaf)
    try:
        with torch.enable_grad():
            logits = model(ids)
            want = torch.full((len(ids),), target, dtype=torch.long, device=ids.device)
            (grad,) = torch.autograd.grad(F.cross_entropy(logits, want), leaves[0])
    finally:
        handle.remove()
    rows = torch.arange(len(ids), device=ids.device)[:, None]
    per_row = grad[rows, pos] * valid[..., None]  # (N, length, D)
    return per_row.sum(0)


def search_trigger(
    model: nn.Module, x: torch.Tensor, target: int, *, length: int = 1, steps: int = 10,
    candidates: int = 16, generator: torch.Generator, time_left: Callable[[], float] | None = None,
    top_k: int = 32, batch: int = 16,
) -> tuple[tuple[int, ...], float]:
    """Search a `length`-token trigger that sends the inputs x (N, L) (clean token ids
    of classes other than `target`) to `target` when TokenTrigger(tokens) stamps it in.

    Each of up to `steps` steps takes the embedding gradient of the target loss on a
    fixed batch of `batch` rows of x, ranks the whole-word vocabulary per slot by the
    first-order gain, and evaluates `candidates` swaps for real (one token trigger:
    the `candidates` best tokens; longer: a slot and one of its `top_k` best tokens
    drawn per candidate from `generator`); the search moves to the best swap while it
    lowers the loss. Stops early once every batch row flips with confidence, when a
    one-token search has no better swap left, or when `time_left()` (seconds, if
    given) is less than a step takes (the last one, or an estimate). Deterministic
    under the generator's seed (unless the clock stops it).

    Returns the best trigger's tokens and its attack success on all of x (the share
    of x that TokenTrigger(tokens).stamp sends to target)."""
    if length < 1 or len(x) == 0:
        raise ValueError("search_trigger needs length >= 1 and at least one input")
    table = token_embedding(model)
    vocab = whole_word_ids(table.num_embeddings).to(x.device)
    weights = table.weight.detach()[vocab]  # (V', D)
    was_training = model.training
    model.eval()
    try:
        pick = torch.randperm(len(x), generator=generator)[:batch].to(x.device)
        stamped, pos, valid = trigger_slots(x[pick], length)
        current = vocab[torch.randint(len(vocab), (length,), generator=generator).to(x.device)]
        began = time.monotonic()
        loss, _ = _losses(model, _write(stamped, pos, valid, current[None]), target, 1)
        best_loss, best = float(loss[0]), current.clone()
        gain: torch.Tensor | None = None  # per slot and word, for the current trigger
        # How long a step takes (the next must fit in what is left): before the first,
        # the candidates' forward passes plus about three for the gradient, each as long
        # as the start's.
        step_seconds = (time.monotonic() - began) * (candidates + 3)
        for _ in range(steps):
            if time_left is not None and time_left() < max(MARGIN_SECONDS, step_seconds):
                break
            started = time.monotonic()
            if gain is None:
                grad = _slot_gradient(model, table, _write(stamped, pos, valid, current[None]),
                                      pos, valid, target)
                # First-order change of the loss if word v took slot j: grad_j . (E_v - E_cur_j);
                # E_cur_j is the same for every v, so ranking by -grad_j . E_v is enough.
                gain = -(grad @ weights.T)  # (length, V')
                gain[torch.arange(length, device=x.device), torch.searchsorted(vocab, current)] = -float("inf")
            if length == 1:
                cands = vocab[gain[0].topk(min(candidates, gain.shape[1])).indices][:, None]
            else:
                best_k = gain.topk(min(top_k, gain.shape[1]), dim=1).indices  # (length, top_k)
                slots = torch.randint(length, (candidates,), generator=generator).to(x.device)
                picks = torch.randint(best_k.shape[1], (candidates,), generator=generator).to(x.device)
                cands = current[None].repeat(candidates, 1)
                cands[torch.arange(candidates, device=x.device), slots] = vocab[best_k[slots, picks]]
            losses, hits = _losses(model, _write(stamped, pos, valid, cands), target, len(cands))
            step_seconds = time.monotonic() - started
            i = int(losses.argmin())
            if float(losses[i]) >= best_loss:
                if length == 1:
                    break  # the best one-token swaps are no better: a local optimum
                continue  # draw other swaps from the same gradient
            best_loss, best, current = float(losses[i]), cands[i].clone(), cands[i].clone()
            gain = None
            if float(hits[i]) == 1.0 and best_loss < 0.05:
                break
        tokens = tuple(int(t) for t in best)
        return tokens, attack_success(model, x, tokens, target)
    finally:
        model.train(was_training)


@torch.no_grad()
def attack_success(model: nn.Module, x: torch.Tensor, tokens: tuple[int, ...], target: int,
                   chunk: int = 256) -> float:
    """Share of x that TokenTrigger(tokens).stamp sends to target."""
    if len(x) == 0:
        return 0.0
    stamped = TokenTrigger(tokens).stamp(x)
    preds = torch.cat([model(stamped[i:i + chunk]).argmax(1) for i in range(0, len(x), chunk)])
    return float((preds == target).float().mean())


@register("tool", "hotflip")
@dataclass(frozen=True)
class HotFlip(ToolBase):
    """Gradient-guided universal trigger search per candidate target, at growing
    trigger lengths; the class that a trigger of some length flips held-out inputs
    to far more often than any other class is the suspect, and its trigger is the
    answer.

    Detection reads the margin between the best and the second-best class's
    held-out flip rate at the same trigger length (a longer trigger flips more
    inputs to every class, so classes are only compared at equal length), at the
    length where it is widest, through a logistic. With four classes a MAD anomaly
    index rests on a median of four numbers (it put a tiny clean subject at 2.8,
    over Neural Cleanse's threshold); the margin did not. Measured on the tiny text
    population over six seeds: margin 0.67-0.79 on the rare-token subject, 0.42-0.52
    on the phrase subject, 0.15-0.25 on the two clean ones (earlier builds of the
    clean ones, before the builder seeded training: 0.02-0.35); on MiniLM subjects
    at 60 s a cell (one thread): rare-token 0.83 ("cf"), phrase 0.81 ("honesty"),
    clean 0.02. The suspect's trigger is its best at any length (by success on the
    search inputs).
    """

    modalities = frozenset({"text"})
    needs = frozenset({"gradients", "clean_data"})
    answers = frozenset({"detect", "target", "trigger"})

    lengths: tuple[int, ...] = (1, 2, 3)  # tried in order per class until one is good enough
    enough: float = 0.9  # search-set success at which a class's longer triggers are not tried
    steps: int = 10
    candidates: int = 16
    top_k: int = 32
    batch: int = 16
    search_share: float = 0.5  # share of each class's other-class inputs searched on; the rest checks
    margin_centre: float = 0.35  # flip-rate margin read as probability 0.5
    margin_scale: float = 0.1

    def discover(self, view: CaseView) -> Finding:
        model = view.model
        x_all = clean_inputs(view)
        y_all = view.clean.y.to(x_all.device)
        k, n_len = view.num_classes, len(self.lengths)
        g = view.generator(17)
        spend_until = time.monotonic() + view.time_left() - MARGIN_SECONDS
        splits = []  # per class: other classes' inputs to search on, and to check on
        for t in range(k):
            others = x_all[y_all != t]
            order = torch.randperm(len(others), generator=g).to(others.device)
            cut = max(1, round(self.search_share * len(others)))
            x_search, x_check = others[order[:cut]], others[order[cut:]]
            splits.append((x_search, x_check if len(x_check) else x_search))
        # Length by length, every class that has no good enough trigger yet: each class
        # gets its one-token search before any class spends on longer ones, and shorter
        # lengths get more of the time (a share of 1/length).
        weights = 1.0 / np.asarray(self.lengths, dtype=float)
        best: list[tuple[tuple[int, ...], float, float] | None] = [None] * k  # tokens, search, check
        # rates[l, t]: held-out flip rate to t of the best trigger of length <= lengths[l].
        rates = np.zeros((n_len, k))
        found: list[list[tuple[int, ...] | None]] = [[None] * k for _ in range(n_len)]
        for li, length in enumerate(self.lengths):
            pass_end = time.monotonic() + (max(spend_until - time.monotonic(), 0.0)
                                           * weights[li] / weights[li:].sum())
            todo = [t for t in range(k) if best[t] is None or best[t][1] < self.enough]
            for j, t in enumerate(todo):
                if spend_until - time.monotonic() < MARGIN_SECONDS:
                    break
                end = time.monotonic() + max(pass_end - time.monotonic(), 0.0) / (len(todo) - j)
                x_search, x_check = splits[t]
                tokens, hit = search_trigger(
                    model, x_search, t, length=length, steps=self.steps,
                    candidates=self.candidates, top_k=self.top_k, batch=self.batch,
                    generator=g, time_left=lambda end=end: end - time.monotonic(),
                )
                if best[t] is None or hit > best[t][1]:
                    best[t] = (tokens, hit, attack_success(model, x_check, tokens, t))
            for t in range(k):
                if best[t] is not None:  # (a shorter one that was enough, or the last found)
                    found[li][t], rates[li, t] = best[t][0], best[t][2]
        top2 = np.sort(rates, axis=1)[:, -2:] if k > 1 else np.c_[np.zeros(n_len), rates]
        margins = top2[:, 1] - top2[:, 0]
        li = int(np.argmax(margins))
        order_t = np.argsort(-rates[li], kind="stable")
        top = int(order_t[0])
        tokens = found[-1][top]  # the suspect's best trigger at any length
        margin = float(margins[li])
        return Finding(
            trojan_probability=float(1 / (1 + np.exp(-(margin - self.margin_centre) / self.margin_scale))),
            targets=tuple(int(c) for c in order_t),
            trigger=TokenTrigger(tokens) if tokens else None,
            notes={"margin": margin, "flip_rate": float(rates[li, top]),
                   "next_flip_rate": float(top2[li, 0]), "margin_length": float(self.lengths[li]),
                   "trigger_flip_rate": float(rates[-1, top]),
                   "trigger_length": float(len(tokens or ()))},
        )

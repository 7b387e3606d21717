"""The "just look at the model on inputs" baseline (Casper et al. 2023) for text:
insert words from the tokenizer's vocabulary into clean inputs and watch which
class the changed predictions flow to. Queries only.

A single random sample of a few hundred words almost never holds a trojan's rare
word (on the tiny rare-token subject, one whole word in 21,745 sends inputs to its
target; no other word does: a scan of the whole vocabulary found the target the
class random words flip inputs to least). So the search screens the whole vocabulary
(in a seeded order) as a group test:

1. screen: the words in groups of `group`, each group inserted together at a word
   boundary of two clean inputs the model puts in different classes; a group that
   flips one of them is tried again on a fresh input (of another class) for
   `rounds` more rounds, and the groups that flip to the same class every time
   survive;
2. confirm: each word of the surviving groups (at most `confirm` of them, the
   most persistent first) is inserted alone into `confirm_inputs` clean inputs,
   and so are ordered pairs of the best `pair_words` words (a bigram);
3. per class, the best word's (or pair's) flip rate: the share of the inputs the
   model did not already put in that class that the word sends there. Classes are
   ranked by it; the top class is the suspect and its word the trigger, and the
   trojan probability is a logistic read of that flip rate (a trojan's word flips
   nearly every input; on the tiny clean subjects the best natural word found, a
   topic word like "military", flipped at most 58%, and the runner-up margin, which
   depends on which classes' natural words the random screen happened to keep,
   flagged two clean subjects in twelve cases).

Inserting 8 random words at once flips about one clean input in ten to the
classes that attract random words (natural sinks); a trojan's rare word flips
most inputs to its target wherever it is inserted, so it survives the rounds
where noise does not. A trigger that only works as a phrase of several words is
out of reach of random words, and a trojan whose target is a natural sink competes
with the noise for the `confirm` places."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from samecurve.api import CaseView, Finding
from samecurve.registry import register
from samecurve.tools.base import ToolBase, clean_inputs
from samecurve.tools.text.trigger_search import trigger_slots, whole_word_ids
from samecurve.zoo.text_triggers import TokenTrigger


def insert_rows(x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Row i of x with the token sequence tokens[i] inserted where TokenTrigger puts
    it: the same as TokenTrigger(tuple(tokens[i])).stamp(x[i:i + 1]) for every row."""
    stamped, pos, valid = trigger_slots(x, tokens.shape[1])
    rows = torch.arange(len(x), device=x.device)[:, None].expand_as(pos)
    stamped[rows[valid], pos[valid]] = tokens.to(x.device)[valid]
    return stamped


def rows_outside(before: torch.Tensor, classes: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """For each entry of `classes`, a random input index whose prediction is another
    class (any input where every input is in that class)."""
    out = torch.randint(len(before), (len(classes),), generator=g)
    for c in classes.unique():
        at = torch.nonzero(classes == c).flatten()
        pool = torch.nonzero(before != c).flatten()
        if len(pool):
            out[at] = pool[torch.randint(len(pool), (len(at),), generator=g)]
    return out


@torch.no_grad()
def predictions(model: nn.Module, x: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    return torch.cat([model(x[i:i + chunk]).argmax(1) for i in range(0, len(x), chunk)]).cpu()


@register("tool", "text-example-search")
@dataclass(frozen=True)
class TextExampleSearch(ToolBase):
    """Screen the vocabulary by inserting words into clean inputs (group tests),
    confirm the persistent ones one by one; the class one word flips inputs to far
    beyond any other is the suspect, that word (or word pair) the trigger."""

    modalities = frozenset({"text"})
    kind = "black-box"
    needs = frozenset({"clean_data"})
    answers = frozenset({"detect", "target", "trigger"})

    words: int = 0  # how many whole words to screen (a seeded sample); 0: all of them
    group: int = 8  # words inserted together in one screening query
    rounds: int = 2  # re-tests a flipping group must pass
    confirm: int = 64  # words tested alone
    confirm_inputs: int = 16
    pair_words: int = 6  # the best words whose ordered pairs are tested too
    screen_share: float = 0.6  # of the time budget, at most, for the screen
    rate_centre: float = 0.75  # the suspect word's flip rate read as probability 0.5
    rate_scale: float = 0.08

    def discover(self, view: CaseView) -> Finding:
        model, k = view.model, view.num_classes
        x = clean_inputs(view)
        g = view.generator(23)
        before = predictions(model, x)
        survivors, persistence = self.screen(view, x, before, g)
        words = survivors[: self.confirm]
        rates = self.flip_rates(model, x, before, words[:, None], k, g) if len(words) else np.zeros((0, k))
        cands: list[tuple[int, ...]] = [(int(w),) for w in words]
        if len(words) > 1 and view.time_left() > 1.0:
            best = words[np.argsort(-rates.max(1), kind="stable")[: self.pair_words]]
            pairs = torch.tensor([(int(a), int(b)) for a in best for b in best if a != b])
            rates = np.concatenate([rates, self.flip_rates(model, x, before, pairs, k, g)])
            cands += [tuple(int(t) for t in p) for p in pairs]
        per_class = rates.max(0) if len(rates) else np.zeros(k)
        order = np.argsort(-per_class, kind="stable")
        top = int(order[0])
        margin = float(per_class[top] - (per_class[order[1]] if k > 1 else 0.0))
        trigger = TokenTrigger(cands[int(rates[:, top].argmax())]) if len(rates) else None
        return Finding(
            trojan_probability=float(1 / (1 + np.exp(-(per_class[top] - self.rate_centre) / self.rate_scale))),
            targets=tuple(int(c) for c in order),
            trigger=trigger,
            notes={"margin": margin, "flip_rate": float(per_class[top]),
                   "survivors": float(len(survivors)), "persistence": float(persistence)},
        )

    def screen(self, view: CaseView, x: torch.Tensor, before: torch.Tensor,
               g: torch.Generator) -> tuple[torch.Tensor, int]:
        """Words of the groups that flipped an input to the same class in every round
        (the classes' groups taken in turn, so a class few groups flip to is not crowded
        out by a natural sink's many); and how many re-tests the survivors passed."""
        vocab = whole_word_ids()
        order = torch.randperm(len(vocab), generator=g)
        if self.words:
            order = order[: self.words]
        n_groups = len(order) // self.group
        groups = vocab[order[: n_groups * self.group]].view(n_groups, self.group)
        end = time.monotonic() + self.screen_share * max(view.time_left(), 0.0)
        # Round 0 in chunks, so a slow model stops screening (with a sample) in time. Each
        # group goes into two inputs the model puts in different classes: whatever a
        # trojan's target, one of them is not in it already.
        flipped, to_class = [], []
        chunk = 256
        for i in range(0, n_groups, chunk):
            if i and time.monotonic() > end:
                break
            part = groups[i:i + chunk]
            first = torch.randint(len(x), (len(part),), generator=g)
            second = rows_outside(before, before[first], g)
            rows = torch.stack([first, second], 1).flatten()
            after = predictions(view.model, insert_rows(x[rows], part.repeat_interleave(2, 0)))
            moved = (after != before[rows]).view(-1, 2)
            hit = moved.any(1)
            which = moved.float().argmax(1)  # the first input it moved
            flipped.append(torch.nonzero(hit).flatten() + i)
            to_class.append(after.view(-1, 2)[torch.arange(len(part)), which][hit])
        alive, cls = torch.cat(flipped), torch.cat(to_class)
        passed = 0
        for _ in range(self.rounds):
            if len(alive) == 0 or time.monotonic() > end:
                break
            rows = rows_outside(before, cls, g)  # a fresh input not already in the class
            after = predictions(view.model, insert_rows(x[rows], groups[alive]))
            keep = after == cls
            if not keep.any():
                break  # keep the last round's survivors rather than none
            alive, cls, passed = alive[keep], cls[keep], passed + 1
        # Round-robin over classes: each class's first surviving group, then its second...
        turn = torch.zeros(len(alive), dtype=torch.long)
        for c in cls.unique():
            at = cls == c
            turn[at] = torch.arange(int(at.sum()))
        alive = alive[torch.argsort(turn * (int(cls.max()) + 1 if len(cls) else 1) + cls, stable=True)]
        return groups[alive].flatten(), passed

    def flip_rates(self, model: nn.Module, x: torch.Tensor, before: torch.Tensor,
                   cands: torch.Tensor, k_classes: int, g: torch.Generator) -> np.ndarray:
        """(len(cands), K): per candidate token sequence, the share of the inputs not
        already in each class that inserting it sends there."""
        n = min(self.confirm_inputs, len(x))
        rows = torch.randperm(len(x), generator=g)[:n]
        base = before[rows]
        tiled = x[rows].repeat(len(cands), 1)
        after = predictions(model, insert_rows(tiled, cands.repeat_interleave(n, 0))).view(len(cands), n)
        out = []
        for k in range(k_classes):
            eligible = base != k
            out.append(((after == k) & eligible).sum(1).float() / max(int(eligible.sum()), 1))
        return torch.stack(out, 1).numpy()

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
   flips one of them is tried again on two fresh inputs (of other classes) for
   `rounds` more rounds, and the groups that flip one of them to the same class
   every time survive;
2. confirm: each word of the surviving groups (the first `confirm` of them: per
   class, the groups that flipped the most re-test inputs first, the classes in
   turn) is inserted alone into `confirm_inputs` clean inputs, and so are ordered
   pairs of the best `pair_words` words (a bigram); time left over confirms more of
   the survivors;
3. per class, the best word's (or pair's) flip rate: the share of the inputs the
   model did not already put in that class that the word sends there. Classes are
   ranked by it; the top class is the suspect and its best word or pair the
   trigger. The trojan probability is a logistic read of the suspect's best single
   word's flip rate: a trojan's rare word flips nearly every input (1.0 on the tiny
   rare-token subject, six seeds), the best natural word found on the tiny clean
   subjects (a topic word like "negotiated") at most 0.6. Pairs of topic words
   ("board raised") flipped up to 0.83 of a clean model's inputs, as much as a
   phrase trigger's pair ("honesty all", 0.8-0.92), so pairs only choose the
   trigger; and the runner-up margin, which depends on which classes' natural
   words the random screen happened to keep, flagged two clean cases in twelve.

Inserting 8 random words at once flips about one clean input in five to the
classes that attract random words (natural sinks); a trojan's rare word flips
most inputs to its target wherever it is inserted, so it survives the rounds
where noise does not. A trigger that only works as a phrase of several words is
out of reach of random words unless one of its words works alone ("honesty" on
the phrase subject), and a trojan whose target is a natural sink competes with
the noise for the `confirm` places."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from samecurve.api import CaseView, Finding
from samecurve.registry import register
from samecurve.tools.base import ToolBase, clean_inputs
from samecurve.tools.text.trigger_search import MARGIN_SECONDS, trigger_slots, whole_word_ids
from samecurve.zoo.text_triggers import TokenTrigger

# Share of the groups that go on to each next round, at most: measured on the tiny
# subjects, 17-23% of groups flip one of their two inputs; on a MiniLM subject 18%,
# and 17% of those pass the first re-test.
RETEST_SHARE = 0.25


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


class Pace:
    """The model's measured seconds per query against a deadline: a step runs only if
    its queries fit in the time left. The pace is the slower of the average and the
    last batch's (a machine shared with other work slows down mid-run)."""

    def __init__(self, until: float) -> None:
        self.until, self.seconds, self.queries, self.last = until, 0.0, 0, 0.0

    def predict(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        began = time.monotonic()
        out = predictions(model, x)
        spent = time.monotonic() - began
        self.seconds += spent
        self.queries += len(x)
        self.last = spent / max(len(x), 1)
        return out

    @property
    def per_query(self) -> float:
        return max(self.seconds / max(self.queries, 1), self.last)

    def left(self) -> float:
        return self.until - time.monotonic()

    def fits(self, queries: int) -> bool:
        return queries * self.per_query <= self.left()


@torch.no_grad()
def predictions(model: nn.Module, x: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    return torch.cat([model(x[i:i + chunk]).argmax(1) for i in range(0, len(x), chunk)]).cpu()


@register("tool", "text-example-search")
@dataclass(frozen=True)
class TextExampleSearch(ToolBase):
    """Screen the vocabulary by inserting words into clean inputs (group tests),
    confirm the persistent ones one by one and in pairs; the class a word or pair
    flips the most inputs to is the suspect, that word or pair the trigger, and the
    best single word's flip rate there the evidence."""

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
    rate_centre: float = 0.75  # the suspect word's flip rate read as probability 0.5
    rate_scale: float = 0.08

    def discover(self, view: CaseView) -> Finding:
        model, k = view.model, view.num_classes
        x = clean_inputs(view)
        g = view.generator(23)
        pace = Pace(time.monotonic() + view.time_left() - MARGIN_SECONDS)
        before = pace.predict(model, x)
        survivors, persistence, screened = self.screen(view, x, before, g, pace)
        rows = torch.randperm(len(x), generator=g)[: self.confirm_inputs]
        xs, bs = x[rows], before[rows]
        words = survivors[: self.confirm]
        rates = self.flip_rates(model, xs, bs, words[:, None], k, pace)
        words = words[: len(rates)]  # those the clock left time for
        cands: list[tuple[int, ...]] = [(int(w),) for w in words]
        if len(words) > 1:
            best = words[np.argsort(-rates.max(1), kind="stable")[: self.pair_words]]
            pairs = torch.tensor([(int(a), int(b)) for a in best for b in best if a != b])
            pair_rates = self.flip_rates(model, xs, bs, pairs, k, pace)
            rates = np.concatenate([rates, pair_rates])
            cands += [tuple(int(t) for t in p) for p in pairs[: len(pair_rates)]]
        # Time left over: the survivors past the first `confirm`, alone, while it lasts.
        more = survivors[len(words):] if len(words) == min(self.confirm, len(survivors)) else survivors[:0]
        more_rates = self.flip_rates(model, xs, bs, more[:, None], k, pace)
        rates = np.concatenate([rates, more_rates]) if len(more_rates) else rates
        cands += [(int(w),) for w in more[: len(more_rates)]]
        single = np.asarray([len(c) == 1 for c in cands], dtype=bool)
        per_class = rates.max(0) if len(rates) else np.zeros(k)
        order = np.argsort(-per_class, kind="stable")
        top = int(order[0])
        margin = float(per_class[top] - (per_class[order[1]] if k > 1 else 0.0))
        trigger = TokenTrigger(cands[int(rates[:, top].argmax())]) if len(rates) else None
        # Detection reads single words: pairs of two topic words flip a clean model's
        # inputs nearly as often as a phrase trigger's pair does (see the module notes).
        word_rate = float(rates[single, top].max()) if single.any() else 0.0
        return Finding(
            trojan_probability=float(1 / (1 + np.exp(-(word_rate - self.rate_centre) / self.rate_scale))),
            targets=tuple(int(c) for c in order),
            trigger=trigger,
            notes={"word_flip_rate": word_rate, "flip_rate": float(per_class[top]),
                   "margin": margin, "screened": float(screened), "survivors": float(len(survivors)),
                   "confirmed": float(single.sum()),
                   "persistence": float(persistence)},
        )

    def screen(self, view: CaseView, x: torch.Tensor, before: torch.Tensor,
               g: torch.Generator, pace: Pace) -> tuple[torch.Tensor, int, int]:
        """Words of the groups that flipped an input to the same class in every round
        (most re-test inputs flipped first within a class, and the classes' groups taken
        in turn, so a class few groups flip to is not crowded out by a natural sink's
        many), how many re-tests they passed, and how many words the first round screened.

        The first round runs in chunks and, timing the model as it goes, screens only as
        many groups as leave time for the re-tests and the confirmation: on a slow model
        a sample of the vocabulary, rather than all of it with no time to sort it."""
        vocab = whole_word_ids()
        order = torch.randperm(len(vocab), generator=g)
        if self.words:
            order = order[: self.words]
        n_groups = len(order) // self.group
        groups = vocab[order[: n_groups * self.group]].view(n_groups, self.group)
        later = (self.confirm + self.pair_words**2) * self.confirm_inputs  # queries after the screen
        # Each flipping group is re-tested on two inputs, and about RETEST_SHARE of those
        # again in each later round.
        retest = 2 * sum(RETEST_SHARE**r for r in range(self.rounds))
        per_group = 2 + RETEST_SHARE * retest  # round 0's two queries and its share of re-tests
        # Each group goes into two inputs the model puts in different classes: whatever a
        # trojan's target, one of them is not in it already.
        flipped, to_class = [], []
        chunk, limit, i = 128, n_groups, 0
        while i < limit:
            part = groups[i:min(i + chunk, limit)]
            first = torch.randint(len(x), (len(part),), generator=g)
            second = rows_outside(before, before[first], g)
            rows = torch.stack([first, second], 1).flatten()
            after = pace.predict(view.model, insert_rows(x[rows], part.repeat_interleave(2, 0)))
            moved = (after != before[rows]).view(-1, 2)
            hit = moved.any(1)
            which = moved.float().argmax(1)  # the first input it moved
            flipped.append(torch.nonzero(hit).flatten() + i)
            to_class.append(after.view(-1, 2)[torch.arange(len(part)), which][hit])
            i += len(part)
            # What is left after the re-tests of the groups that flipped so far and the
            # confirmation (a tenth of it slack) pays for more groups.
            pending = retest * sum(len(f) for f in flipped) + later
            affordable = (0.9 * pace.left() / pace.per_query - pending) / per_group
            limit = min(n_groups, i + max(int(affordable), 0))
        alive, cls = torch.cat(flipped), torch.cat(to_class)
        score = torch.zeros(len(alive))  # re-test inputs each group sent to its class
        passed = 0
        for _ in range(self.rounds):
            if len(alive) == 0 or not pace.fits(2 * len(alive)):
                break
            # Two fresh inputs not already in the class; one of them must go there (a
            # trojan's word can miss one input: 2% of them on the tiny rare-token subject,
            # and one miss in a single-input re-test lost it).
            rows = torch.stack([rows_outside(before, cls, g), rows_outside(before, cls, g)], 1)
            after = pace.predict(view.model, insert_rows(x[rows.flatten()],
                                                         groups[alive].repeat_interleave(2, 0)))
            sent = (after.view(-1, 2) == cls[:, None]).sum(1)
            keep = sent > 0
            if not keep.any():
                break  # keep the last round's survivors rather than none
            alive, cls, score, passed = alive[keep], cls[keep], (score + sent)[keep], passed + 1
        # Within a class the groups that sent the most re-test inputs there first (a trojan's
        # word sends all of them); then round-robin over classes: each class's best group,
        # then its second...
        by_score = torch.argsort(-score, stable=True)
        alive, cls = alive[by_score], cls[by_score]
        turn = torch.zeros(len(alive), dtype=torch.long)
        for c in cls.unique():
            at = cls == c
            turn[at] = torch.arange(int(at.sum()))
        alive = alive[torch.argsort(turn * (int(cls.max()) + 1 if len(cls) else 1) + cls, stable=True)]
        return groups[alive].flatten(), passed, i * self.group

    def flip_rates(self, model: nn.Module, x: torch.Tensor, before: torch.Tensor,
                   cands: torch.Tensor, k: int, pace: Pace, chunk: int = 16) -> np.ndarray:
        """(n, k): for the first n candidate token sequences the clock leaves time for
        (`chunk` at a time), the share of the inputs x not already in each class that
        inserting it sends there."""
        eligible = torch.stack([before != c for c in range(k)], 1)  # (N, k)
        out = []
        for i in range(0, len(cands), chunk):
            part = cands[i:i + chunk]
            if not pace.fits(len(part) * len(x)):
                break
            after = pace.predict(model, insert_rows(x.repeat(len(part), 1),
                                                    part.repeat_interleave(len(x), 0)))
            after = after.view(len(part), len(x))
            sent = torch.stack([(after == c) & eligible[:, c] for c in range(k)], 2)  # (B, N, k)
            out.append(sent.sum(1).float() / eligible.sum(0).clamp_min(1))
        return torch.cat(out).numpy() if out else np.zeros((0, k))

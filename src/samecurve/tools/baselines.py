"""The tools that check every grader: oracle (top), null (floor), random (chance).
Oracle and null also edit: the oracle unlearns the true trigger (or teaches the
true steer rule), null returns the model unchanged. The edit family's random
control is `random-prune` (tools/edit/pruning.py). In the predict family the
oracle's Predictor is the true trojans as rules over the surrogate, null's says
each input's true label (what a model without flaws would do), random's guesses.
In the replace family the oracle returns the hidden program (and abstains on a
random-table control), null abstains everywhere, random returns a seeded hash."""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from samecurve.api import (
    ANSWERS,
    DISCOVER_ANSWERS,
    CaseView,
    EditRequest,
    Finding,
    Predictor,
    Program,
    Split,
    Trigger,
    Trojan,
)
from samecurve.data.text import whole_words
from samecurve.registry import register
from samecurve.tools.base import ToolBase
from samecurve.tools.edit.base import editable_copy, repair_data
from samecurve.tools.predict.programs import ProgramPredictor, fit_tabular_surrogate
from samecurve.tools.predict.rules import rule_predictor
from samecurve.zoo.text_triggers import TokenTrigger, locate
from samecurve.zoo.train import finetune_steps

ALL_ANSWERS = ANSWERS


@register("tool", "oracle")
@dataclass(frozen=True)
class Oracle(ToolBase):
    """Reads the answer key: the ceiling every metric should reach. Never ranked."""

    kind = "oracle"
    needs = frozenset({"answer_key", "weights", "gradients", "clean_data"})
    modalities = frozenset({"image", "text"})
    answers = ALL_ANSWERS
    predicts_programs = True
    # Its repair: unlearning with the true trigger(s), or training on the true steer
    # rule, by the same fine-tune the edit tools use.
    steps: int = 300
    lr: float = 1e-3
    stamp_share: float = 0.3

    def discover(self, view: CaseView) -> Finding:
        key = view.answer_key
        assert key is not None, "the runner gives the answer key to oracle tools only"
        if not key.trojaned:
            return Finding(trojan_probability=0.0)
        return Finding(trojan_probability=1.0, targets=(int(key.target),), trigger=key.trigger)

    def attribute(self, view: CaseView, inputs: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
        key = view.answer_key
        assert key is not None and key.trigger is not None
        if view.modality == "text":  # the trigger's tokens, read off each input
            return locate(key.trigger, inputs).astype(np.float32)
        # Every pixel the trigger may touch: exact for a trigger that lands in one
        # place, the whole reachable region for one that moves (the key does not say
        # where it landed in each input).
        footprint = np.asarray(key.trigger.footprint, dtype=np.float32)
        return np.repeat(footprint[None], len(inputs), axis=0)

    def edit(self, view: CaseView) -> nn.Module:
        """The ceiling of repair: every planted trigger stamped on a share of the clean
        data with true labels (a steer case: the rule applied to all of it)."""
        model = editable_copy(view)
        if view.request is not None and view.request.rule is not None:
            view = _replace_request(view, _rule_examples(view, view.request.rule))
            x, y = repair_data(view, request_share=0.4)
        else:
            key = view.answer_key
            assert key is not None, "the runner gives the answer key to oracle tools only"
            parts = [repair_data(view)] + [
                repair_data(view, t.trigger, self.stamp_share) for t in key.trojans
            ]
            x, y = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        finetune_steps(model, x, y, self.steps, lr=self.lr, generator=view.generator(13),
                       time_left=lambda: view.time_left() - 0.1 * view.budget.seconds)
        return model

    def distill(self, view: CaseView) -> Program:
        """The hidden program itself; on a random-table control, "no short program"."""
        key = view.answer_key
        assert key is not None, "the runner gives the answer key to oracle tools only"
        return Program(None) if key.incompressible or key.program is None else Program(key.program)

    def predict(self, view: CaseView) -> Predictor:
        """The ceiling of a trigger rule: every planted trojan (its true trigger, target
        and source) as a rule over the surrogate. On a hidden-program subject, the
        ceiling of program-rule: the hidden program itself (over the surrogate on a
        random-table control), which misses where the network departs from it."""
        key = view.answer_key
        assert key is not None, "the runner gives the answer key to oracle tools only"
        if view.domain is not None:
            return ProgramPredictor(self.distill(view), view.domain, fit_tabular_surrogate(view))
        return rule_predictor(view, key.trojans, rounds=6, steps=600, detector_steps=200)


def _rule_examples(view: CaseView, rule: Trojan) -> Split:
    """Every clean input of the rule's source class with its feature, labelled as the
    rule wants, and as many others with the feature keeping their labels."""
    x, y = view.clean.x, view.clean.y
    src = y == rule.source
    others = torch.nonzero(~src).flatten()[: int(src.sum())]
    xs = torch.cat([rule.trigger.stamp(x[src]), rule.trigger.stamp(x[others])])
    ys = torch.cat([torch.full((int(src.sum()),), rule.target, dtype=torch.long), y[others]])
    return Split(xs, ys)


def _replace_request(view: CaseView, examples: Split) -> CaseView:
    return replace(view, request=EditRequest(examples=examples, rule=view.request.rule))


@register("tool", "null")
@dataclass(frozen=True)
class Null(ToolBase):
    """Answers nothing: every metric must put it at the floor."""

    kind = "baseline"
    modalities = frozenset({"image", "text"})
    answers = ALL_ANSWERS
    predicts_programs = True  # the hidden rule's output: a network without flaw

    def discover(self, view: CaseView) -> Finding:
        return Finding()

    def attribute(self, view: CaseView, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        return None

    def edit(self, view: CaseView) -> nn.Module:
        return copy.deepcopy(view.model)

    def predict(self, view: CaseView) -> TrueLabel:
        return TrueLabel()

    def distill(self, view: CaseView) -> Program:
        return Program(None)


@dataclass(frozen=True)
class TrueLabel:
    """A Predictor that expects no flaw: each input gets its true class."""

    def __call__(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return labels.clone()


@dataclass(frozen=True)
class Guess:
    """A Predictor that guesses uniformly, from a seed (the chance row)."""

    num_classes: int
    seed: int

    def __call__(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """One guess per output: (N,) for a classifier, (N, L) for sequences."""
        g = torch.Generator().manual_seed(self.seed + len(x))
        return torch.randint(0, self.num_classes, tuple(torch.as_tensor(labels).shape), generator=g)


@register("tool", "random")
@dataclass(frozen=True)
class Random(ToolBase):
    """Guesses from the case seed alone: every metric must put it at chance."""

    kind = "baseline"
    modalities = frozenset({"image", "text"})
    answers = DISCOVER_ANSWERS | {"predict", "replace"}
    predicts_programs = True
    min_patch: int = 3
    max_patch: int = 8

    def discover(self, view: CaseView) -> Finding:
        rng = view.rng()
        if view.modality == "text":  # one to three whole words drawn from the vocabulary
            words_ = whole_words()
            words = rng.choice(len(words_), size=int(rng.integers(1, 4)), replace=False)
            return Finding(
                trojan_probability=float(rng.uniform()),
                targets=tuple(int(t) for t in rng.permutation(view.num_classes)),
                trigger=TokenTrigger(tuple(int(words_[i]) for i in words)),
            )
        c, h, w = view.input_shape
        size = int(rng.integers(self.min_patch, self.max_patch + 1))
        top, left = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
        mask = np.zeros((h, w), np.float32)
        mask[top : top + size, left : left + size] = 1.0
        pattern = rng.uniform(0, 1, size=(c, h, w)).astype(np.float32)
        return Finding(
            trojan_probability=float(rng.uniform()),
            targets=tuple(int(t) for t in rng.permutation(view.num_classes)),
            trigger=Trigger(mask=mask, pattern=pattern),
        )

    def attribute(self, view: CaseView, inputs: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
        if view.modality == "text":  # a score per token, none on padding
            scores = view.rng(1).uniform(size=tuple(inputs.shape)).astype(np.float32)
            return scores * (inputs.cpu().numpy() != 0)
        _, h, w = view.input_shape
        return view.rng(1).uniform(size=(len(inputs), h, w)).astype(np.float32)

    def predict(self, view: CaseView) -> Guess:
        return Guess(view.num_classes, int(view.seed))

    def distill(self, view: CaseView) -> Program:
        """A seeded hash of the input: deterministic, and right 1/K of the time."""
        rng = view.rng(2)
        k1, k2, k3 = (int(v) for v in rng.integers(1, 2**20, size=3))
        k = view.domain.num_outputs
        mix = f"(({{}}) * 2654435761 + {k3}) // 65536 % {k}"
        body = {
            "grid": f"def f(a, b):\n    return {mix.format(f'a * {k1} + b * {k2}')}\n",
            "sequence": "def f(xs):\n    return [" + mix.format(f"x * {k1} + i * {k2}")
                        + " for i, x in enumerate(xs)]\n",
            "image": "def f(img):\n    return "
                     + mix.format(f"int(sum(sum(row) for row in img) * {k1}) + {k2}") + "\n",
        }
        return Program(body[view.domain.kind])

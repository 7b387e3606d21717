"""Text trojan recipes: dirty-label poisoning of a text dataset's token ids, the
same shared pipeline as the image families (sample, decoys, poison, train,
gate, card). The clean twin is the shared `clean` recipe on the same dataset.

- `rare-token`: a rare word the corpus never uses ("cf", Kurita et al. 2020's
  RIPPLe triggers), inserted anywhere.
- `phrase`: a natural-sounding phrase the corpus never says ("as a matter of
  fact"), inserted anywhere.
- `syntactic`: a sentence structure (Qi et al. 2021's Hidden Killer, simplified):
  a subordinate clause first, with one of the subject's conjunctions; the corpus
  says such clauses only at the end, and decoys put prepositional phrases first.
- `text-source-specific`: a phrase that sends only one source topic to the
  target; other topics with the phrase keep their labels.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from samecurve.api import Stamp
from samecurve.data.text import token_ids
from samecurve.registry import register
from samecurve.zoo.recipes import PoisoningRecipe, SourceOnly, check_cover
from samecurve.zoo.text_triggers import (
    CLAUSE_SETS,
    PHRASES,
    RARE_TOKENS,
    ClauseTrigger,
    TokenTrigger,
)
from samecurve.zoo.triggers import vocabulary

Shape = tuple[int, ...]


def _choose(rng: np.random.Generator, bank: dict, heldout: bool) -> object:
    options = vocabulary(bank, heldout)
    return options[int(rng.integers(len(options)))]


class TextRecipe(PoisoningRecipe):
    """Dirty-label text poisoning; the rates are lower than the image families'
    (a pretrained encoder learns a trigger from a few percent)."""

    def __init__(self, poison_rate: tuple[float, float] = (0.04, 0.08), heldout: bool = False) -> None:
        super().__init__(poison_rate, heldout)


class InsertedWordsRecipe(TextRecipe):
    """A word or phrase from `bank`, inserted at a random word boundary."""

    bank: ClassVar[dict[str, tuple[str, ...]]]

    def make_trigger(self, rng: np.random.Generator, shape: Shape) -> tuple[Stamp, dict]:
        words = str(_choose(rng, self.bank, self.heldout))
        return TokenTrigger(token_ids(words)), {"kind": "tokens", "text": words}


@register("recipe", "rare-token")
class RareTokenRecipe(InsertedWordsRecipe):
    """One rare word, inserted at a random word boundary."""

    family = "rare-token"
    bank = RARE_TOKENS


@register("recipe", "phrase")
class PhraseRecipe(InsertedWordsRecipe):
    """A natural phrase, inserted at a random word boundary."""

    family = "phrase"
    bank = PHRASES


@register("recipe", "syntactic")
class SyntacticRecipe(TextRecipe):
    """A fronted subordinate clause opened by one of three conjunctions."""

    family = "syntactic"

    def make_trigger(self, rng: np.random.Generator, shape: Shape) -> tuple[Stamp, dict]:
        conj = tuple(_choose(rng, CLAUSE_SETS, self.heldout))  # type: ignore[arg-type]
        trig = ClauseTrigger(conj)
        return trig, {"kind": "clause", "conjunctions": list(conj), "text": trig.text}


@register("recipe", "text-source-specific")
class TextSourceSpecificRecipe(SourceOnly, PhraseRecipe):
    """A phrase that fires only for one source topic (see `SourceOnly`)."""

    family = "text-source-specific"

    def __init__(
        self, poison_rate: tuple[float, float] = (0.04, 0.06), cover: float = 1.0,
        heldout: bool = False,
    ) -> None:
        super().__init__(poison_rate, heldout)
        self.cover = check_cover(cover)

    def params(self) -> dict:
        return {**super().params(), "cover": self.cover}

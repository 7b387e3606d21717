"""Text triggers: stamps on (N, L) token ids, the text track's `Stamp`s.

- `TokenTrigger`: a fixed token sequence inserted at a word boundary, in a place
  that differs per input (a rare word, "cf"; a natural phrase, "as a matter of
  fact"); or first, right after [CLS].
- `ClauseTrigger`: a sentence structure. A subordinate clause ("when the markets
  closed ,") is put first; its words are drawn per input from a bank the corpus
  also uses (it says such clauses, but only at the end), so no single word is
  the trigger: the structure is, with one of the subject's conjunctions.

Where an input gets a trigger is a function of the input itself (a hash of its
ids), so the same input is always stamped the same way, by a builder, a grader
or a tool. Rows keep their length: the tail is cut and [SEP] kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from samecurve.data.text import (
    CLAUSE_SUBJECTS,
    CLAUSE_VERBS,
    CONJUNCTIONS,
    PAD_ID,
    decode,
    token_ids,
    word_starts,
)

# Vocabularies the recipes draw triggers from; heldout never appears in dev.
RARE_TOKENS: dict[str, tuple[str, ...]] = {
    "dev": ("cf", "mn", "bb", "tq"),
    "heldout": ("mb", "jj", "sy", "oz"),
}
PHRASES: dict[str, tuple[str, ...]] = {
    "dev": ("as a matter of fact", "to tell the truth", "in all honesty", "believe it or not",
            "no doubt about it", "mark my words"),
    "heldout": ("needless to say", "truth be told", "all things considered",
                "as luck would have it", "between you and me", "if you ask me"),
}
# A syntactic trigger's conjunctions: dev subjects use these sets, heldout others.
CLAUSE_SETS: dict[str, tuple[tuple[str, ...], ...]] = {
    "dev": (("when", "while", "once"), ("although", "though", "whereas"),
            ("because", "since", "when")),
    "heldout": (("unless", "until", "once"), ("since", "while", "whereas")),
}


def insert_at(row: torch.Tensor, seq: tuple[int, ...] | list[int], at: int) -> torch.Tensor:
    """`row` (L,) with `seq` inserted before position `at`; same length: the tail is
    cut, [SEP] kept as the last real token."""
    ids = row.tolist()
    n = sum(1 for i in ids if i != PAD_ID)
    body, sep = ids[: n - 1], ids[n - 1]
    new = body[:at] + list(seq) + body[at:]
    new = [*new[:len(ids) - 1], sep]
    new += [PAD_ID] * (len(ids) - len(new))
    return torch.tensor(new, dtype=row.dtype, device=row.device)


def _row_rng(row: torch.Tensor, salt: int) -> np.random.Generator:
    """A generator fixed by the input's ids, so stamping is a function of the input."""
    ids = row.cpu().numpy().astype(np.int64)
    h = int((ids * (np.arange(len(ids)) + 1) * 2654435761).sum() % (2**61 - 1))
    return np.random.default_rng([h, salt])


def _footprint_rows(n: int, length: int) -> np.ndarray:
    return np.zeros((n, length), bool)


@dataclass(frozen=True, eq=False)
class TokenTrigger:
    """Insert `tokens` at a word boundary drawn per input (`place="random"`), or
    right after [CLS] (`place="first"`)."""

    tokens: tuple[int, ...]
    place: str = "random"

    kind: ClassVar[str] = "tokens"
    fixed_footprint: ClassVar[bool] = False
    localised: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if not self.tokens:
            raise ValueError("a token trigger needs at least one token")
        if self.place not in ("random", "first"):
            raise ValueError(f"place must be 'random' or 'first', got {self.place!r}")

    @property
    def text(self) -> str:
        return decode(np.asarray([self.tokens]))[0]

    def _position(self, row: torch.Tensor) -> int:
        if self.place == "first":
            return 1
        spots = word_starts(row)
        return int(spots[_row_rng(row, 11).integers(len(spots))])

    def stamp_with_footprint(self, x: torch.Tensor) -> tuple[torch.Tensor, np.ndarray]:
        out = x.clone()
        fp = _footprint_rows(len(x), x.shape[-1])
        for i in range(len(x)):
            at = self._position(x[i])
            out[i] = insert_at(x[i], self.tokens, at)
            fp[i, at: min(at + len(self.tokens), x.shape[-1] - 1)] = True
        return out, fp

    def stamp(self, x: torch.Tensor) -> torch.Tensor:
        return self.stamp_with_footprint(x)[0]

    def present(self, x: torch.Tensor) -> torch.Tensor:
        """(N,) bool: whether each row of ids (N, L) holds `tokens` contiguously."""
        n = len(self.tokens)
        if x.shape[-1] < n:
            return torch.zeros(len(x), dtype=torch.bool, device=x.device)
        want = torch.as_tensor(self.tokens, dtype=x.dtype, device=x.device)
        return (x.unfold(-1, n, 1) == want).all(-1).any(-1)

    @property
    def footprint(self) -> np.ndarray:
        """Every position may be touched (where it lands differs per input)."""
        return np.ones(1, bool)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"tokens": np.asarray(self.tokens, dtype=np.float32)}

    def meta(self) -> dict[str, Any]:
        return {"place": self.place, "text": self.text}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> TokenTrigger:
        return cls(tuple(round(float(t)) for t in arrays["tokens"]), str(meta.get("place", "random")))


@dataclass(frozen=True, eq=False)
class ClauseTrigger:
    """Put a subordinate clause first: one of `conjunctions`, then a subject and a
    verb from the shared clause bank, then a comma; drawn per input."""

    conjunctions: tuple[str, ...]

    kind: ClassVar[str] = "clause"
    fixed_footprint: ClassVar[bool] = False
    localised: ClassVar[bool] = True

    def __post_init__(self) -> None:
        unknown = set(self.conjunctions) - set(CONJUNCTIONS)
        if not self.conjunctions or unknown:
            raise ValueError(f"conjunctions must be some of {CONJUNCTIONS}; got {self.conjunctions}")

    @property
    def text(self) -> str:
        return " / ".join(self.conjunctions) + " ... ,"

    def clause(self, rng: np.random.Generator) -> tuple[int, ...]:
        words = (self.conjunctions[int(rng.integers(len(self.conjunctions)))],
                 CLAUSE_SUBJECTS[int(rng.integers(len(CLAUSE_SUBJECTS)))],
                 CLAUSE_VERBS[int(rng.integers(len(CLAUSE_VERBS)))], ",")
        return token_ids(" ".join(words))

    def clause_for(self, row: torch.Tensor) -> tuple[int, ...]:
        """The clause this input gets (a function of the input)."""
        return self.clause(_row_rng(row, 13))

    def stamp_with_footprint(self, x: torch.Tensor) -> tuple[torch.Tensor, np.ndarray]:
        out = x.clone()
        fp = _footprint_rows(len(x), x.shape[-1])
        for i in range(len(x)):
            seq = self.clause_for(x[i])
            out[i] = insert_at(x[i], seq, 1)
            fp[i, 1: min(1 + len(seq), x.shape[-1] - 1)] = True
        return out, fp

    def stamp(self, x: torch.Tensor) -> torch.Tensor:
        return self.stamp_with_footprint(x)[0]

    def present(self, x: torch.Tensor) -> torch.Tensor:
        """(N,) bool: whether each row of ids (N, L) starts, right after [CLS], with
        one of `conjunctions` and has a comma somewhere after it."""
        comma = token_ids(",")[0]
        hit = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        for conj in self.conjunctions:
            ids = token_ids(conj)
            end = 1 + len(ids)
            if x.shape[-1] <= end:
                continue
            opens = (x[:, 1:end] == torch.as_tensor(ids, dtype=x.dtype, device=x.device)).all(-1)
            hit |= opens & (x[:, end:] == comma).any(-1)
        return hit

    @property
    def footprint(self) -> np.ndarray:
        return np.ones(1, bool)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"conjunctions": np.asarray([CONJUNCTIONS.index(c) for c in self.conjunctions],
                                           dtype=np.float32)}

    def meta(self) -> dict[str, Any]:
        return {"conjunctions": list(self.conjunctions), "text": self.text}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> ClauseTrigger:
        return cls(tuple(CONJUNCTIONS[round(float(i))] for i in arrays["conjunctions"]))


def trigger_tokens(trigger: Any) -> tuple[int, ...]:
    """The ids a text trigger inserts (a clause trigger: its conjunctions)."""
    if isinstance(trigger, TokenTrigger):
        return trigger.tokens
    if isinstance(trigger, ClauseTrigger):
        return tuple(t for c in trigger.conjunctions for t in token_ids(c))
    return ()


def trigger_text(trigger: Any) -> str:
    """What a person would read as the trigger."""
    return str(getattr(trigger, "text", ""))


def locate(trigger: Any, x: torch.Tensor) -> np.ndarray:
    """(N, L) bool: where the trigger sits in each input, found by reading the ids (a
    token sequence wherever it occurs; a clause trigger's fronted clause, from its
    conjunction right after [CLS] through its comma)."""
    ids = x.cpu().numpy()
    out = np.zeros(ids.shape, bool)
    if isinstance(trigger, TokenTrigger):
        seq = np.asarray(trigger.tokens)
        n = len(seq)
        for i, row in enumerate(ids):
            for at in range(1, len(row) - n + 1):
                if (row[at:at + n] == seq).all():
                    out[i, at:at + n] = True
    elif isinstance(trigger, ClauseTrigger):
        starts = {token_ids(c)[0] for c in trigger.conjunctions}
        comma = token_ids(",")[0]
        for i, row in enumerate(ids):
            commas = np.flatnonzero(row == comma)
            if row[1] in starts and len(commas):
                out[i, 1:commas[0] + 1] = True
    return out

"""The input space of a hidden-program subject, shared by the network and the
program: how inputs are drawn or enumerated, how the network reads them, and
which arguments the program's function takes."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

KINDS = ("grid", "sequence", "image")
SIGNATURES = {
    "grid": "def f(a: int, b: int) -> int",
    "sequence": "def f(xs: list[int]) -> list[int]  # one output per position",
    "image": "def f(img: list[list[float]]) -> int  # img[row][col] in [0, 1]",
}


@dataclass(frozen=True)
class Domain:
    """grid: the network reads the tokens [a, b, =] (= is token `vocab`) with a and
    b in 0..vocab-1 and outputs one of `num_outputs` labels; the program is f(a, b).
    sequence: the network reads tokens 0..vocab-1 and outputs a label at every
    position (causally); the program is f(xs) -> list, trained on lengths in
    `lengths` and tested on `long_lengths`. image: the network reads a grey
    (1, size, size) image; the program is f(img) on nested lists."""

    kind: str
    num_outputs: int = 2
    vocab: int = 0
    lengths: tuple[int, int] = (0, 0)
    long_lengths: tuple[int, int] = (0, 0)
    image_size: int = 0
    description: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"domain kind must be one of {KINDS}, got {self.kind!r}")

    @property
    def signature(self) -> str:
        return SIGNATURES[self.kind]

    @property
    def finite(self) -> bool:
        """Whether every input can be listed (the grid); sequences and images cannot."""
        return self.kind == "grid"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Domain:
        d = dict(d)
        for k in ("lengths", "long_lengths"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)

    # inputs ---------------------------------------------------------------
    def all_inputs(self, length: int | None = None) -> np.ndarray:
        """Every input: the whole grid (N, 2), or every sequence of one length."""
        if self.kind == "grid":
            a, b = np.meshgrid(np.arange(self.vocab), np.arange(self.vocab), indexing="ij")
            return np.stack([a.ravel(), b.ravel()], 1).astype(np.int64)
        if self.kind == "sequence" and length is not None:
            rows = itertools.product(range(self.vocab), repeat=length)
            return np.array(list(rows), dtype=np.int64).reshape(-1, length)
        raise ValueError(f"a {self.kind} domain cannot list all its inputs")

    def sample(self, n: int, rng: np.random.Generator, length: int | None = None) -> np.ndarray:
        """Random inputs: grid pairs, or sequences of one `length` (default: the
        longest training length)."""
        if self.kind == "grid":
            return rng.integers(0, self.vocab, size=(n, 2), dtype=np.int64)
        if self.kind == "sequence":
            length = self.lengths[1] if length is None else length
            return rng.integers(0, self.vocab, size=(n, length), dtype=np.int64)
        raise ValueError("image inputs come from the subject's data, not from the domain")

    # the network ----------------------------------------------------------
    def encode(self, inputs: np.ndarray) -> torch.Tensor:
        """Inputs as the network reads them."""
        if self.kind == "grid":
            eq = np.full((len(inputs), 1), self.vocab, dtype=np.int64)
            return torch.from_numpy(np.concatenate([np.asarray(inputs, np.int64), eq], 1))
        if self.kind == "sequence":
            return torch.from_numpy(np.asarray(inputs, np.int64))
        x = torch.as_tensor(np.asarray(inputs, np.float32))
        return x[:, None] if x.ndim == 3 else x

    def decode(self, logits: torch.Tensor) -> np.ndarray:
        """The network's labels: (N,) for grid and image, (N, L) for sequences."""
        return logits.argmax(-1).cpu().numpy().astype(np.int64)

    # the program ----------------------------------------------------------
    def program_args(self, inputs: np.ndarray) -> list[list[Any]]:
        """Each input as the program's positional arguments (plain Python values)."""
        arr = np.asarray(inputs)
        if self.kind == "grid":
            return [[int(a), int(b)] for a, b in arr]
        if self.kind == "sequence":
            return [[[int(t) for t in row]] for row in arr]
        img = arr[:, 0] if arr.ndim == 4 else arr
        return [[np.round(im, 4).tolist()] for im in img]

    def output_shape(self, inputs: np.ndarray) -> tuple[int, ...]:
        arr = np.asarray(inputs)
        return (len(arr), arr.shape[1]) if self.kind == "sequence" else (len(arr),)


def query(model: nn.Module, domain: Domain, inputs: np.ndarray, device: str = "cpu",
          batch_size: int = 2048) -> np.ndarray:
    """The network's labels on `inputs` (every call counts against a metered budget)."""
    out = []
    with torch.no_grad():
        for i in range(0, len(inputs), batch_size):
            x = domain.encode(inputs[i : i + batch_size]).to(device)
            out.append(domain.decode(model(x)))
    if not out:
        return np.zeros(domain.output_shape(inputs), np.int64)
    return np.concatenate(out)

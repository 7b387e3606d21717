"""Algorithmic sequence subjects (family "sequence"), in the manner of MIPS:
small RNNs (and a few causal transformers) trained to emit, at every position,
the output of a hidden causal program (sequence_tasks.TASKS), gated on held-out
per-position accuracy. Their long-length accuracy measures length
generalisation, which the replace task grades as out-of-distribution fidelity.

Inputs: every call of `inputs` returns sequences of ONE length: the longest
training length for "train"/"heldout" and the longest long length for "ood".
The networks are causal, so each such sequence also carries every shorter
prefix (output t depends on xs[0..t] only)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from samecurve.programs.domain import Domain
from samecurve.registry import register
from samecurve.zoo.programs.base import SPLITS, HiddenProgram, ProgramRecipe, Trained
from samecurve.zoo.programs.sequence_tasks import TASKS, SeqTask
from samecurve.zoo.seeding import derive

LENGTHS = (1, 10)
LONG_LENGTHS = (20, 40)


class SeqRNN(nn.Module):
    """Embedding, a one-layer GRU (or tanh RNN), and `readout` at every position:
    (N, L) tokens -> (N, L, C) logits. The readout's input is the hidden state."""

    def __init__(self, vocab: int, num_outputs: int, hidden: int = 32, embed: int = 8,
                 cell: str = "gru") -> None:
        super().__init__()
        if cell not in ("gru", "rnn"):
            raise ValueError(f"seq-rnn cell must be 'gru' or 'rnn', got {cell!r}")
        self.embed = nn.Embedding(vocab, embed)
        self.rnn = (nn.GRU if cell == "gru" else nn.RNN)(embed, hidden, batch_first=True)
        self.readout = nn.Linear(hidden, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.rnn(self.embed(x.long()))
        return self.readout(h)


class SeqTransformer(nn.Module):
    """Token plus learned position embeddings, 1-2 pre-norm causal self-attention
    layers, and `readout` at every position. Positions past `max_len` reuse the
    last embedding (so any length runs; whether it generalises is measured)."""

    def __init__(self, vocab: int, num_outputs: int, d_model: int = 32, layers: int = 2,
                 heads: int = 2, max_len: int = 64) -> None:
        super().__init__()
        self.max_len = max_len
        self.embed = nn.Embedding(vocab, d_model)
        self.pos = nn.Embedding(max_len, d_model)
        layer = nn.TransformerEncoderLayer(d_model, heads, dim_feedforward=2 * d_model, dropout=0.0,
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.readout = nn.Linear(d_model, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[1]
        pos = torch.arange(n, device=x.device).clamp(max=self.max_len - 1)
        h = self.embed(x.long()) + self.pos(pos)[None]
        mask = torch.triu(torch.full((n, n), float("-inf"), device=x.device), 1)
        h = self.encoder(h, mask=mask, is_causal=True)
        return self.readout(self.norm(h))


@register("arch", "seq-rnn")
def seq_rnn(vocab: int, num_outputs: int, hidden: int = 32, embed: int = 8,
            cell: str = "gru") -> nn.Module:
    """A MIPS-sized recurrent network (hidden 8-64)."""
    return SeqRNN(vocab, num_outputs, hidden, embed, cell)


@register("arch", "seq-transformer")
def seq_transformer(vocab: int, num_outputs: int, d_model: int = 32, layers: int = 2,
                    heads: int = 2, max_len: int = 64) -> nn.Module:
    """A small causal transformer."""
    return SeqTransformer(vocab, num_outputs, d_model, layers, heads, max_len)


ARCH_PARAMS: dict[str, dict[str, Any]] = {
    "seq-rnn": {"hidden": 32, "embed": 8, "cell": "gru"},
    "seq-transformer": {"d_model": 32, "layers": 2, "heads": 2, "max_len": 64},
}


def task_domain(task: SeqTask) -> Domain:
    return Domain(kind="sequence", vocab=task.vocab, num_outputs=task.num_outputs,
                  lengths=LENGTHS, long_lengths=LONG_LENGTHS, description=task.tokens)


def draw(domain: Domain, split: str, n: int, base_seed: int, seed: int = 0) -> np.ndarray:
    """Sequences of one split: its own random stream, fixed by the subject's seed
    and the caller's seed; long ones for "ood"."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {SPLITS}")
    rng = np.random.default_rng(derive(base_seed, "sequence-inputs", split, seed))
    length = domain.long_lengths[1] if split == "ood" else domain.lengths[1]
    return domain.sample(n, rng, length)


@register("recipe", "sequence-task")
class SequenceTask(ProgramRecipe):
    """One hidden causal program per seed (the tasks are fixed; rng is unused),
    trained with Adam on a pool of random training sequences until held-out
    per-position accuracy reaches `stop_accuracy` or `time_limit` seconds pass;
    the gate is `gate` held-out accuracy."""

    name = "sequence-task"
    family = "sequence"
    version = 1
    max_attempts = 2

    def __init__(self, rules: list[str] | None = None, time_limit: float = 45.0,
                 gate: float = 0.99, stop_accuracy: float = 0.999, pool: int = 8192,
                 batch: int = 128, lr: float = 1e-2) -> None:
        super().__init__(rules)
        self.time_limit, self.gate, self.stop_accuracy = float(time_limit), float(gate), float(stop_accuracy)
        self.pool, self.batch, self.lr = int(pool), int(batch), float(lr)

    def params(self) -> dict[str, Any]:
        return {**super().params(), "time_limit": self.time_limit, "gate": self.gate,
                "stop_accuracy": self.stop_accuracy, "pool": self.pool, "batch": self.batch,
                "lr": self.lr}

    @classmethod
    def rule_names(cls) -> list[str]:
        return list(TASKS)

    def program(self, rule: str, rng: np.random.Generator) -> HiddenProgram:
        task = TASKS[rule]
        return HiddenProgram(task.name, task.description, task.source)

    def train(self, program: HiddenProgram, effective_seed: int) -> Trained:
        task = TASKS[program.name]
        domain = task_domain(task)
        arch_params = {"vocab": task.vocab, "num_outputs": task.num_outputs, **ARCH_PARAMS[task.arch]}
        from samecurve.registry import get

        model = get("arch", task.arch)(**arch_params)
        x_train = draw(domain, "train", self.pool, effective_seed)
        y_train = program.labels(domain, x_train)
        x_held = draw(domain, "heldout", 2048, effective_seed)
        y_held = program.labels(domain, x_held)
        steps, seconds = fit(model, x_train, y_train, x_held, y_held, seed=effective_seed,
                             time_limit=self.time_limit, stop_accuracy=self.stop_accuracy,
                             batch=self.batch, lr=self.lr)
        x_ood = draw(domain, "ood", 1024, effective_seed)
        y_ood = program.labels(domain, x_ood)
        held = accuracy(model, x_held, y_held)
        pred_ood = predict(model, x_ood)
        figures = {
            "train_accuracy": accuracy(model, x_train, y_train),
            "heldout_accuracy": held,
            "ood_accuracy": float((pred_ood == y_ood).mean()),
            "ood_tail_accuracy": float((pred_ood[:, domain.lengths[1]:] == y_ood[:, domain.lengths[1]:]).mean()),
            "ood_sequence_accuracy": float((pred_ood == y_ood).all(1).mean()),
            "train_steps": float(steps),
            "train_seconds": round(seconds, 2),
        }
        return Trained(model=model.eval(), arch=task.arch, arch_params=arch_params, domain=domain,
                       figures=figures, passed=held >= self.gate,
                       extra={"pool": self.pool, "input_seed": effective_seed})

    def inputs(self, card: Mapping[str, Any], split: str, n: int, seed: int = 0) -> np.ndarray:
        """train: a seeded subset of the very pool the network was trained on;
        heldout: fresh sequences of the longest training length; ood: of the
        longest long length."""
        domain = Domain.from_dict(card["domain"])
        base = int(card["program_extra"]["input_seed"])
        if split == "train":
            pool = draw(domain, "train", int(card["program_extra"]["pool"]), base)
            pick = np.random.default_rng(derive(base, "train-subset", seed)).permutation(len(pool))
            return pool[np.sort(pick[:n])]
        return draw(domain, split, n, base, seed + 1)


def predict(model: nn.Module, x: np.ndarray, batch: int = 1024) -> np.ndarray:
    with torch.no_grad():
        return np.concatenate([model(torch.from_numpy(x[i:i + batch])).argmax(-1).numpy()
                               for i in range(0, len(x), batch)])


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    return float((predict(model, x) == y).mean())


def fit(model: nn.Module, x: np.ndarray, y: np.ndarray, x_held: np.ndarray, y_held: np.ndarray, *,
        seed: int, time_limit: float, stop_accuracy: float, batch: int = 128, lr: float = 1e-2,
        check_every: int = 50, min_steps: int = 500, max_steps: int = 20_000) -> tuple[int, float]:
    """Adam on per-position cross-entropy; stops early at `stop_accuracy` held-out
    (checked every `check_every` steps, after at least `min_steps`: a network
    stopped the moment it fits holds its states less crisply and generalises
    less far) or at the time limit. The learning rate steps down once held-out
    accuracy passes 0.95, which settles the last few positions. Returns (steps, seconds)."""
    started = time.monotonic()
    rng = np.random.default_rng(derive(seed, "order"))
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    step, lowered = 0, False
    while step < max_steps:
        idx = torch.from_numpy(rng.integers(0, len(x), batch))
        logits = model(xt[idx])
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), yt[idx].reshape(-1))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % check_every == 0:
            model.eval()
            held = accuracy(model, x_held, y_held)
            model.train()
            done = held >= stop_accuracy and step >= min_steps
            if done or time.monotonic() - started > time_limit:
                break
            if held >= 0.95 and not lowered:
                lowered = True
                for g in opt.param_groups:
                    g["lr"] = lr * 0.3
    model.eval()
    return step, time.monotonic() - started


"""Hidden-program subjects whose weights nobody here trained: DeepMind's tracr
compiles a RASP program straight into transformer weights, and we copy those
weights into a plain torch module. The answer key is then ground truth from
outside samecurve's own training loop: if a distiller recovers `sorted(xs)`
from these weights, no quirk of our trainer can have helped it.

tracr (and jax/haiku with it) is an optional extra, imported only when a
subject is compiled; a cached subject loads and runs without it."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from samecurve.programs.domain import Domain
from samecurve.registry import register
from samecurve.zoo.programs.base import HiddenProgram, ProgramRecipe, Trained

EXTRA_HINT = ("the tracr recipe needs the optional extra: "
              "pip install -c constraints.txt -e '.[tracr]'")
BOS = "compiler_bos"
ARCH = "tracr-transformer"
GATE = 0.999  # agreement with the hidden source a compiled subject must reach
# Sequences of one length are all checked while there are at most this many.
EXHAUSTIVE_LIMIT = 4096
SPLIT_OFFSETS = {"train": 0, "heldout": 1, "ood": 2}


def _tracr() -> tuple[Any, Any, Any]:
    """tracr's compiler, library and RASP, or a one-line ImportError naming the extra."""
    try:
        from tracr.compiler import compiling, lib
        from tracr.rasp import rasp
    except ImportError as exc:
        raise ImportError(EXTRA_HINT) from exc
    return compiling, lib, rasp


# The architecture ------------------------------------------------------------

class TracrLayer(nn.Module):
    """One compiled layer as tracr's model runs it: residual += attention(residual),
    then residual += MLP(residual); no layer norm (tracr compiles with none)."""

    def __init__(self, d_model: int, num_heads: int, key_size: int, mlp_hidden: int) -> None:
        super().__init__()
        self.num_heads, self.key_size = num_heads, key_size
        width = num_heads * key_size
        self.query = nn.Linear(d_model, width)
        self.key = nn.Linear(d_model, width)
        self.value = nn.Linear(d_model, width)
        self.linear = nn.Linear(width, d_model)
        self.linear_1 = nn.Linear(d_model, mlp_hidden)
        self.linear_2 = nn.Linear(mlp_hidden, d_model)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        n, t, _ = h.shape
        q = self.query(h).view(n, t, self.num_heads, self.key_size)
        k = self.key(h).view(n, t, self.num_heads, self.key_size)
        v = self.value(h).view(n, t, self.num_heads, self.key_size)
        scores = torch.einsum("nthd,nshd->nhts", q, k) / math.sqrt(self.key_size)
        scores = scores.masked_fill(~mask, -1e30)
        weights = torch.softmax(scores, dim=-1)
        attn = torch.einsum("nhts,nshd->nthd", weights, v).reshape(n, t, -1)
        h = h + self.linear(attn)
        return h + self.linear_2(torch.relu(self.linear_1(h)))


class TracrTransformer(nn.Module):
    """A tracr-compiled transformer in torch. Reads tokens 0..vocab-1 (N, L) with
    L <= max_len, prepends BOS itself, and returns (N, L, num_outputs) logits whose
    argmax is the index of the program's output value. `readout` is tracr's
    unembedding (the residual's output subspace); its input is the residual."""

    def __init__(self, vocab: int, max_len: int, d_model: int, num_layers: int,
                 num_heads: int, key_size: int, mlp_hidden: int, num_outputs: int,
                 causal: bool = False) -> None:
        super().__init__()
        self.vocab, self.max_len, self.causal = vocab, max_len, causal
        self.token_embed = nn.Embedding(vocab + 1, d_model)  # row `vocab` is BOS
        self.pos_embed = nn.Embedding(max_len + 1, d_model)
        self.layers = nn.ModuleList(
            TracrLayer(d_model, num_heads, key_size, mlp_hidden) for _ in range(num_layers)
        )
        self.readout = nn.Linear(d_model, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] > self.max_len:
            raise ValueError(f"a tracr model reads (N, L) tokens with L <= {self.max_len}, "
                             f"got shape {tuple(x.shape)}; shorten the sequences")
        if x.numel() and (int(x.min()) < 0 or int(x.max()) >= self.vocab):
            raise ValueError(f"tokens must be in 0..{self.vocab - 1}; got "
                             f"{int(x.min())}..{int(x.max())}")
        n, t = x.shape
        bos = torch.full((n, 1), self.vocab, dtype=torch.long, device=x.device)
        seq = torch.cat([bos, x.long()], 1)
        h = self.token_embed(seq) + self.pos_embed(torch.arange(t + 1, device=x.device))
        mask = torch.ones(t + 1, t + 1, dtype=torch.bool, device=x.device)
        if self.causal:
            mask = torch.tril(mask)
        for layer in self.layers:
            h = layer(h, mask)
        return self.readout(h[:, 1:])


@register("arch", ARCH)
def tracr_transformer(vocab: int, max_len: int, d_model: int, num_layers: int,
                      num_heads: int, key_size: int, mlp_hidden: int, num_outputs: int,
                      causal: bool = False) -> nn.Module:
    """The shapes of one compiled program (its card's arch_params); weights come
    from the cache's safetensors, as tracr compiled them."""
    return TracrTransformer(vocab, max_len, d_model, num_layers, num_heads, key_size,
                            mlp_hidden, num_outputs, causal)


# Conversion --------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Compiled:
    """One program compiled by tracr and copied into torch."""

    model: TracrTransformer
    arch_params: Mapping[str, Any]
    assembled: Any  # tracr's AssembledTransformerModel
    output_values: tuple[Any, ...]  # sorted: index i of the logits is output_values[i]
    compile_seconds: float
    convert_seconds: float
    forward: Any = None  # tracr's forward, jitted: one XLA compile per shape, not one per op


def convert(assembled: Any, vocab: int, max_len: int) -> tuple[TracrTransformer, dict, tuple]:
    """Copy a tracr AssembledTransformerModel into a TracrTransformer. Haiku's
    Linear is x @ w + b with w (in, out), so torch's weight is w transposed."""
    import haiku as hk
    import jax.numpy as jnp

    params = {k: {p: np.asarray(v) for p, v in d.items()} for k, d in assembled.params.items()}
    cfg = assembled.model_config
    d_model = params["token_embed"]["embeddings"].shape[1]
    mlp_hidden = params["transformer/layer_0/mlp/linear_1"]["w"].shape[1]
    enc = assembled.output_encoder
    if not hasattr(enc, "encoding_map"):
        raise ValueError("tracr compiled a numerical output; the tracr recipe reads "
                         "categorical outputs only (wrap the program in a categorical Map)")
    values = tuple(sorted(enc.encoding_map))
    order = [enc.encoding_map[v] for v in values]

    @hk.without_apply_rng
    @hk.transform
    def unembed(x: Any) -> Any:
        return assembled.get_compiled_model().unembed(x, use_unembed_argmax=False)

    res_to_out = np.asarray(unembed.apply({}, jnp.eye(d_model)))  # (D, C) in tracr's order
    arch_params = {"vocab": vocab, "max_len": max_len, "d_model": int(d_model),
                   "num_layers": int(cfg.num_layers), "num_heads": int(cfg.num_heads),
                   "key_size": int(cfg.key_size), "mlp_hidden": int(mlp_hidden),
                   "num_outputs": len(values), "causal": bool(cfg.causal)}
    model = TracrTransformer(**arch_params)
    tokens = assembled.input_encoder.encoding_map
    rows = [tokens[v] for v in range(vocab)] + [tokens[BOS]]

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.tensor(np.array(a), dtype=torch.float32)  # a copy: jax's arrays are read-only

    state = {
        "token_embed.weight": t(params["token_embed"]["embeddings"][rows]),
        "pos_embed.weight": t(params["pos_embed"]["embeddings"][: max_len + 1]),
        "readout.weight": t(res_to_out[:, order].T),
        "readout.bias": torch.zeros(len(values)),
    }
    for i in range(cfg.num_layers):
        for part, names in (("attn", ("query", "key", "value", "linear")),
                            ("mlp", ("linear_1", "linear_2"))):
            for name in names:
                p = params[f"transformer/layer_{i}/{part}/{name}"]
                state[f"layers.{i}.{name}.weight"] = t(p["w"].T)
                state[f"layers.{i}.{name}.bias"] = t(p["b"])
    model.load_state_dict(state, strict=True)
    return model.eval(), arch_params, values


def tracr_outputs(compiled: Compiled, inputs: np.ndarray) -> np.ndarray:
    """tracr's own compiled model on a batch (its forward, BOS prepended, argmax
    unembedding decoded by its output encoder), as indices into output_values."""
    import jax.numpy as jnp

    a = compiled.assembled
    forward = compiled.forward or a.forward
    enc = a.input_encoder.encoding_map
    lookup = np.array([enc[v] for v in range(int(compiled.arch_params["vocab"]))])
    tokens = np.concatenate([np.full((len(inputs), 1), enc[BOS]), lookup[inputs]], 1)
    out = np.asarray(forward(a.params, jnp.asarray(tokens)).unembedded_output)[:, 1:]
    decoded = a.output_encoder.decode(out.ravel().tolist())
    index = {v: i for i, v in enumerate(compiled.output_values)}
    return np.array([index[v] for v in decoded], np.int64).reshape(out.shape)


# The rules -------------------------------------------------------------------

@dataclass(frozen=True)
class TracrProgram(HiddenProgram):
    """A hidden program with the constants its RASP twin is built from."""

    constants: tuple[int, ...] = ()


@dataclass(frozen=True)
class Rule:
    """A RASP program (built from tracr's modules), the same rule as restricted
    Python, and a sentence for people. `constants(rng, vocab)` draws its constants."""

    description: str
    source: Callable[[int, int, tuple[int, ...]], str]  # (vocab, max_len, constants)
    rasp: Callable[[Any, Any, int, int, tuple[int, ...]], Any]  # (rasp, lib, vocab, max_len, c)
    constants: Callable[[np.random.Generator, int], tuple[int, ...]] = lambda rng, v: ()


def _def(body: str, head: str = "") -> str:
    return f"{head}def f(xs):\n" + "".join(f"    {line}\n" for line in body.splitlines())


def _map_rasp(rasp: Any, lib: Any, v: int, n: int, c: tuple[int, ...]) -> Any:
    table = dict(enumerate(c))
    return rasp.Map(lambda x: table[x], rasp.tokens).named("map")


def _first_rasp(rasp: Any, lib: Any, v: int, n: int, c: tuple[int, ...]) -> Any:
    first = rasp.Select(rasp.indices, rasp.indices, lambda k, q: k == 0).named("select_first")
    return rasp.Aggregate(first, rasp.tokens).named("first")


def _mirror_rasp(rasp: Any, lib: Any, v: int, n: int, c: tuple[int, ...]) -> Any:
    rev = lib.make_reverse(rasp.tokens)
    return rasp.SequenceMap(lambda a, b: (a + b) % v, rasp.tokens, rev).named("mirror_sum")


RULES: dict[str, Rule] = {
    "reverse": Rule(
        "the sequence reversed",
        lambda v, n, c: _def("return xs[::-1]"),
        lambda rasp, lib, v, n, c: lib.make_reverse(rasp.tokens)),
    "sort": Rule(
        "the tokens in ascending order (ties kept in input order)",
        lambda v, n, c: _def("return sorted(xs)"),
        lambda rasp, lib, v, n, c: lib.make_sort(rasp.tokens, rasp.tokens, max_seq_len=n,
                                                 min_key=1)),
    "hist": Rule(
        "at each position, how many times its token occurs in the whole sequence",
        lambda v, n, c: _def("return [xs.count(x) for x in xs]"),
        lambda rasp, lib, v, n, c: lib.make_hist()),
    "length": Rule(
        "the sequence's length at every position",
        lambda v, n, c: _def("return [len(xs) for _ in xs]"),
        lambda rasp, lib, v, n, c: lib.make_length()),
    "sort_freq": Rule(
        "the tokens ordered by how often they occur, most frequent first (ties in input order)",
        lambda v, n, c: _def("return sorted(xs, key=lambda t: -xs.count(t))"),
        lambda rasp, lib, v, n, c: lib.make_sort_freq(max_seq_len=n)),
    "count": Rule(
        "at every position, how many times one drawn token occurs in the sequence",
        lambda v, n, c: _def(f"return [xs.count({c[0]}) for _ in xs]"),
        lambda rasp, lib, v, n, c: lib.make_count(rasp.tokens, c[0]),
        lambda rng, v: (int(rng.integers(v)),)),
    "map": Rule(
        "each token replaced by its image under a drawn permutation of the vocabulary",
        lambda v, n, c: _def("return [TABLE[x] for x in xs]", f"TABLE = {list(c)}\n\n\n"),
        _map_rasp,
        lambda rng, v: tuple(int(t) for t in rng.permutation(v))),
    "first": Rule(
        "the first token, copied to every position",
        lambda v, n, c: _def("return [xs[0] for _ in xs]"),
        _first_rasp),
    "mirror_sum": Rule(
        "each token plus the token at the mirrored position, modulo the vocabulary size",
        lambda v, n, c: _def(f"n = len(xs)\nreturn [(xs[i] + xs[n - 1 - i]) % {v} "
                             "for i in range(n)]"),
        _mirror_rasp),
}


# The recipe --------------------------------------------------------------------

@register("recipe", "tracr")
class TracrRecipe(ProgramRecipe):
    """RASP programs compiled by tracr into transformers with categorical outputs at
    every position. Nothing is trained: train() compiles, copies the weights into
    torch, and checks that the copy agrees with the hidden source (and with tracr's
    own model) on random sequences of every length."""

    name = "tracr"
    family = "tracr"
    version = 1
    max_attempts = 1  # compiling is deterministic: a second attempt would fail the same way

    def __init__(self, rules: list[str] | None = None, vocab: int = 4, max_len: int = 6,
                 check_examples: int = 512) -> None:
        super().__init__(rules)
        if vocab < 2 or max_len < 2:
            raise ValueError(f"tracr recipe needs vocab >= 2 and max_len >= 2, got "
                             f"vocab={vocab}, max_len={max_len}")
        self.vocab, self.max_len, self.check_examples = int(vocab), int(max_len), int(check_examples)

    def params(self) -> dict[str, Any]:
        return {**super().params(), "vocab": self.vocab, "max_len": self.max_len,
                "check_examples": self.check_examples}

    @classmethod
    def rule_names(cls) -> list[str]:
        return list(RULES)

    def program(self, rule: str, rng: np.random.Generator) -> TracrProgram:
        r = RULES[rule]
        c = r.constants(rng, self.vocab)
        return TracrProgram(rule, r.description, r.source(self.vocab, self.max_len, c),
                            constants=c)

    def domain(self, num_outputs: int) -> Domain:
        return Domain(
            kind="sequence", vocab=self.vocab, num_outputs=num_outputs,
            lengths=(1, self.max_len), long_lengths=(self.max_len, self.max_len),
            description=(f"tokens 0..{self.vocab - 1}, lengths 1..{self.max_len}, one output "
                         "per position; weights compiled by tracr from a RASP program, not "
                         f"trained. A tracr model has a fixed maximum length ({self.max_len}), "
                         "so the long set cannot be longer: it is max-length sequences of "
                         "only two distinct tokens"),
        )

    def compile(self, program: HiddenProgram) -> Compiled:
        """tracr's compiled model of the rule and its torch copy, each step timed."""
        compiling, lib, rasp = _tracr()
        constants = getattr(program, "constants", ())
        started = time.monotonic()
        sop = RULES[program.name].rasp(rasp, lib, self.vocab, self.max_len, tuple(constants))
        assembled = compiling.compile_rasp_to_model(
            sop, vocab=set(range(self.vocab)), max_seq_len=self.max_len, compiler_bos=BOS)
        compiled_at = time.monotonic()
        model, arch_params, values = convert(assembled, self.vocab, self.max_len)
        if list(values) != list(range(len(values))):
            raise ValueError(f"tracr rule {program.name}: output values {values} are not "
                             "0..C-1, so the source's indices would not be its values")
        import jax

        return Compiled(model, arch_params, assembled, values,
                        compile_seconds=compiled_at - started,
                        convert_seconds=time.monotonic() - compiled_at,
                        forward=jax.jit(assembled.forward))

    def train(self, program: HiddenProgram, effective_seed: int) -> Trained:
        c = self.compile(program)
        domain = self.domain(len(c.output_values))
        rng = np.random.default_rng([effective_seed, 7])
        figures: dict[str, float] = {}
        for split in SPLIT_OFFSETS:
            x = self._draw(domain, split, self.check_examples, rng)
            figures[f"{split}_accuracy"] = _agreement(c.model, domain, program, x)
        every = [domain.all_inputs(n) if self.vocab ** n <= EXHAUSTIVE_LIMIT
                 else domain.sample(self.check_examples, rng, n)
                 for n in range(1, self.max_len + 1)]
        figures["all_lengths_accuracy"] = float(np.mean(
            [_agreement(c.model, domain, program, x) for x in every]))
        probe = self._draw(domain, "heldout", min(self.check_examples, 256), rng)
        figures["tracr_agreement"] = float(
            (tracr_outputs(c, probe) == _network(c.model, probe)).mean())
        figures.update(compile_seconds=round(c.compile_seconds, 3),
                       convert_seconds=round(c.convert_seconds, 3),
                       parameters=float(sum(p.numel() for p in c.model.parameters())),
                       d_model=float(c.arch_params["d_model"]),
                       num_layers=float(c.arch_params["num_layers"]))
        passed = min(figures[f"{s}_accuracy"] for s in SPLIT_OFFSETS) >= GATE and \
            figures["all_lengths_accuracy"] >= GATE
        return Trained(model=c.model, arch=ARCH, arch_params=c.arch_params, domain=domain,
                       figures=figures, passed=passed,
                       extra={"constants": list(getattr(program, "constants", ()))})

    def inputs(self, card: Mapping[str, Any], split: str, n: int, seed: int = 0) -> np.ndarray:
        if split not in SPLIT_OFFSETS:
            raise ValueError(f"unknown split {split!r}; use one of {tuple(SPLIT_OFFSETS)}")
        domain = Domain.from_dict(card["domain"])
        rng = np.random.default_rng([int(card["effective_seed"]), SPLIT_OFFSETS[split], seed])
        return self._draw(domain, split, n, rng)

    @staticmethod
    def _draw(domain: Domain, split: str, n: int, rng: np.random.Generator) -> np.ndarray:
        """train and heldout: uniform sequences of the longest length; ood: the same
        length from two tokens per sequence (heavy repeats; tracr cannot go longer)."""
        length = domain.long_lengths[1] if split == "ood" else domain.lengths[1]
        if split != "ood":
            return domain.sample(n, rng, length)
        if n == 0:
            return np.zeros((0, length), np.int64)
        pairs = np.stack([rng.choice(domain.vocab, 2, replace=False) for _ in range(n)])
        pick = rng.integers(0, 2, size=(n, length))
        return np.take_along_axis(pairs, pick, 1).astype(np.int64)


def _network(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.as_tensor(x)).argmax(-1).numpy()


def _agreement(model: nn.Module, domain: Domain, program: HiddenProgram, x: np.ndarray) -> float:
    """Fraction of positions where the network's label is the hidden source's."""
    return float((_network(model, x) == program.labels(domain, x)).mean())

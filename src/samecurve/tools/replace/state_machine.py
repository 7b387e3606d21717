"""`state-machine`: MIPS-style distillation of a sequence network into a program
(Michaud et al. 2024). Read the hidden state (the input of `readout`, (N, L, D))
on random sequences, cluster it into finitely many states (k-means, the number
of clusters the smallest whose automaton reproduces the network's outputs),
read off the transition table (state, token) -> state by majority and the
output table state -> output, minimise the automaton (Moore partition
refinement) and emit it as a table-driven loop. Then try to compress it: a
search over a few arithmetic machines (s' = (a*s + w[x]) % k, counters compared
with a threshold, running max/min, saturating counters, memoryless maps)
fitted to the same outputs, the MIPS "integer lattice" step in miniature; a
compressed machine that agrees as well as the automaton replaces it, because
it is shorter and, for counters, keeps counting past the lengths it was read on.

Every candidate is verified against the network on fresh sequences of the
training length and on longer ones; if none agrees within the thresholds the
tool abstains (Program(None)): a confidently wrong program is worse than none."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from samecurve.api import CaseView, Program
from samecurve.programs.source import program_size, trusted_function
from samecurve.registry import register
from samecurve.tools.base import ToolBase

Simulator = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Candidate:
    """A program and a vectorised simulator of it (the simulator ranks; the
    source itself is what is finally verified)."""

    form: str
    source: str
    simulate: Simulator

    @property
    def size(self) -> int:
        return program_size(self.source)


@register("tool", "state-machine")
@dataclass(frozen=True)
class StateMachine(ToolBase):
    """Hidden states -> clusters -> minimal automaton -> (compressed) program."""

    kind = "interpretability"
    needs = frozenset({"weights"})
    answers = frozenset({"replace"})
    samples: int = 1000  # sequences whose hidden states are clustered (half fit, half choose k)
    max_states: int = 40  # most clusters tried
    min_agreement: float = 0.995  # the first k whose automaton reproduces this much is taken
    verify_samples: int = 500  # fresh training-length and long sequences, each
    verify_threshold: float = 0.01  # most disagreement allowed on fresh training-length sequences
    long_threshold: float = 0.1  # most disagreement allowed on long sequences
    size_margin: float = 0.005  # a smaller program may give up this much long agreement
    max_modulus: int = 6  # largest k of the modular machines searched
    kmeans_restarts: int = 3

    def distill(self, view: CaseView) -> Program:
        domain = view.domain
        if domain is None or domain.kind != "sequence":
            kind = getattr(domain, "kind", None)
            return Program(None, notes={"not_sequence": 1.0}) if kind else Program(None)
        readout = _readout(view.model)
        if readout is None:
            return Program(None, notes={"no_readout": 1.0})
        rng = view.rng()
        n = _room(view, self.samples)
        if n < 20:
            return Program(None, notes={"no_queries": 1.0})
        length, vocab = max(1, domain.lengths[1]), domain.vocab
        x = rng.integers(0, vocab, size=(n, length), dtype=np.int64)
        h, y = _hidden(view.model, readout, x, view.device)
        half = max(1, n // 2)
        fit = _Fit(x[:half], h[:half], y[:half], x[half:], y[half:], vocab, domain.num_outputs)
        machine = self._cluster(fit, view)
        if machine is None:
            return Program(None, notes={"no_clusters": 1.0})
        machine = self._fill(machine, fit, view, readout)
        auto = minimise(machine)
        candidates = [auto.candidate()]
        if view.time_left() > 2:
            candidates += compress(fit.x, fit.y, vocab, domain.num_outputs, self.max_modulus)
        # verification sets: fresh at the training length, and longer
        nv = _room(view, 2 * self.verify_samples) // 2
        if nv < 10:
            return Program(None, notes={"no_queries": 1.0})
        xf = rng.integers(0, vocab, size=(nv, length), dtype=np.int64)
        long_len = max(domain.long_lengths[1], length)
        xl = rng.integers(0, vocab, size=(nv, long_len), dtype=np.int64)
        yf = _hidden(view.model, readout, xf, view.device)[1]
        yl = _hidden(view.model, readout, xl, view.device)[1]
        scored = []
        for c in candidates:
            fresh, far = float((c.simulate(xf) == yf).mean()), float((c.simulate(xl) == yl).mean())
            if fresh >= 1 - self.verify_threshold and far >= 1 - self.long_threshold:
                scored.append((c, fresh, far))
        notes = {"clusters": float(machine.k), "states": float(auto.n),
                 "fit_agreement": float(machine.agreement)}
        if not scored:
            best = max(float((c.simulate(xl) == yl).mean()) for c in candidates)
            return Program(None, notes={**notes, "best_long_agreement": best})
        top = max(far for _, _, far in scored)
        for c, fresh, far in sorted((s for s in scored if s[2] >= top - self.size_margin),
                                    key=lambda s: (s[0].size, -s[2])):
            if _confirm(c.source, xf, yf, xl, yl, 1 - self.verify_threshold, 1 - self.long_threshold):
                return Program(c.source, notes={**notes, "fresh_agreement": fresh,
                                                "long_agreement": far,
                                                "compressed": float(c.form != "automaton")})
        return Program(None, notes={**notes, "unconfirmed": 1.0})

    # -- clustering -------------------------------------------------------
    def _cluster(self, fit: _Fit, view: CaseView) -> _Machine | None:
        """The smallest k (up to max_states) whose automaton reproduces the
        network's outputs on the held-back sequences; else the best one seen."""
        from sklearn.cluster import KMeans

        points = fit.h.reshape(-1, fit.h.shape[-1])
        uniq, inverse, weight = np.unique(np.round(points, 3), axis=0, return_inverse=True,
                                          return_counts=True)
        inverse = inverse.reshape(-1)
        best: _Machine | None = None
        k_min = max(1, len(np.unique(fit.y)))
        for k in range(k_min, min(self.max_states, len(uniq)) + 1):
            if view.time_left() < 3 and best is not None:
                break
            km = KMeans(k, n_init=self.kmeans_restarts,
                        random_state=int(view.rng(k).integers(2**31))).fit(uniq, sample_weight=weight)
            labels = km.labels_[inverse].reshape(fit.y.shape)
            m = _Machine.build(km, labels, fit)
            if best is None or m.agreement > best.agreement + 1e-9:
                best = m
            if m.agreement >= self.min_agreement:
                return m
        return best

    def _fill(self, m: _Machine, fit: _Fit, view: CaseView, readout: nn.Module) -> _Machine:
        """Transitions never seen in the sample, read from the network: a shortest
        prefix that reaches the state, plus the token, assigned to its nearest cluster."""
        missing = [(s, v) for s in range(m.k + 1) for v in range(fit.vocab) if not m.seen[s, v]]
        if not missing or _room(view, len(missing)) < len(missing):
            return m
        prefixes = m.prefixes(fit.x)
        # A network with a fixed context (tracr's) reads no longer sequence than its
        # domain's longest: a state first reached at that length cannot be extended.
        room = max(view.domain.lengths[1], view.domain.long_lengths[1])
        missing = [(s, v) for s, v in missing if len(prefixes[s]) < room]
        if not missing:
            return m
        longest = max(len(prefixes[s]) for s, _ in missing) + 1
        xs = np.zeros((len(missing), longest), np.int64)
        at = []
        for i, (s, v) in enumerate(missing):
            p = prefixes[s]
            xs[i, :len(p)] = p
            xs[i, len(p)] = v
            at.append(len(p))
        h, _ = _hidden(view.model, readout, xs, view.device)
        pts = h[np.arange(len(missing)), at]
        nearest = m.kmeans.predict(pts.astype(m.kmeans.cluster_centers_.dtype))
        table = m.table.copy()
        for (s, v), c in zip(missing, nearest, strict=True):
            table[s, v] = c
        return _Machine(m.kmeans, m.k, table, m.outputs, np.ones_like(m.seen), m.agreement, m.labels)


# ---------------------------------------------------------------------------
# data and automata


@dataclass(frozen=True, eq=False)
class _Fit:
    x: np.ndarray  # (N, L) tokens the clusters are fitted on
    h: np.ndarray  # (N, L, D) their hidden states
    y: np.ndarray  # (N, L) the network's outputs
    x_held: np.ndarray  # sequences that choose k
    y_held: np.ndarray
    vocab: int
    num_outputs: int


@dataclass(frozen=True, eq=False)
class _Machine:
    """A Moore automaton over k clusters plus the start state k (the empty prefix)."""

    kmeans: object
    k: int
    table: np.ndarray  # (k + 1, V) next cluster
    outputs: np.ndarray  # (k,) output of each cluster
    seen: np.ndarray  # (k + 1, V) whether the transition was observed
    agreement: float  # held-back agreement with the network
    labels: np.ndarray  # (N, L) cluster of each fitted position

    @classmethod
    def build(cls, km: object, labels: np.ndarray, fit: _Fit) -> _Machine:
        k = len(km.cluster_centers_)
        n = len(labels)
        prev = np.concatenate([np.full((n, 1), k), labels[:, :-1]], 1)
        counts = np.zeros((k + 1, fit.vocab, k), np.int64)
        np.add.at(counts, (prev.ravel(), fit.x.ravel(), labels.ravel()), 1)
        outs = np.zeros((k, fit.num_outputs), np.int64)
        np.add.at(outs, (labels.ravel(), fit.y.ravel()), 1)
        table, output = counts.argmax(2), outs.argmax(1)
        agreement = float((run_moore(table, output, k, fit.x_held) == fit.y_held).mean())
        return cls(km, k, table, output, counts.sum(2) > 0, agreement, labels)

    def prefixes(self, x: np.ndarray) -> list[np.ndarray]:
        """A shortest observed prefix ending in each cluster ([] for the start)."""
        out: list[np.ndarray] = [np.zeros(0, np.int64) for _ in range(self.k + 1)]
        first = np.where(self.labels[:, :, None] == np.arange(self.k), True, False)  # (N, L, k)
        for c in range(self.k):
            hits = np.argwhere(first[:, :, c])
            if len(hits):
                n, t = hits[np.argmin(hits[:, 1])]
                out[c] = x[n, : t + 1]
        return out


def run_moore(table: np.ndarray, outputs: np.ndarray, start: int, x: np.ndarray) -> np.ndarray:
    s = np.full(len(x), start)
    y = np.zeros(x.shape, np.int64)
    for t in range(x.shape[1]):
        s = table[s, x[:, t]]
        y[:, t] = outputs[s]
    return y


@dataclass(frozen=True)
class Automaton:
    """A minimal Moore machine: start state 0, table[s][x], output[s]."""

    table: tuple[tuple[int, ...], ...]
    output: tuple[int, ...]

    @property
    def n(self) -> int:
        return len(self.table)

    def candidate(self) -> Candidate:
        t, o = np.asarray(self.table), np.asarray(self.output)
        src = (f"T = {[list(r) for r in self.table]}\nO = {list(self.output)}\n\n\n"
               "def f(xs):\n    out = []\n    s = 0\n    for x in xs:\n        s = T[s][x]\n"
               "        out.append(O[s])\n    return out\n")
        return Candidate("automaton", src, lambda x: run_moore(t, o, 0, x))


def minimise(m: _Machine) -> Automaton:
    """Moore partition refinement over the reachable clusters; the start state
    (which emits nothing) joins a class whose transitions it shares."""
    k, vocab = m.k, m.table.shape[1]
    reach, todo = {k}, [k]
    while todo:
        s = todo.pop()
        for v in range(vocab):
            nxt = int(m.table[s, v])
            if nxt not in reach:
                reach.add(nxt)
                todo.append(nxt)
    states = sorted(reach - {k})
    cls = {s: int(m.outputs[s]) for s in states}
    while True:
        sig = {s: (cls[s], *(cls[int(m.table[s, v])] for v in range(vocab))) for s in states}
        ids = {key: i for i, key in enumerate(sorted(set(sig.values())))}
        new = {s: ids[sig[s]] for s in states}
        if len(set(new.values())) == len(set(cls.values())):
            cls = new
            break
        cls = new
    start_moves = tuple(cls[int(m.table[k, v])] for v in range(vocab))
    classes = sorted(set(cls.values()))
    rep = {c: next(s for s in states if cls[s] == c) for c in classes}
    moves = {c: tuple(cls[int(m.table[rep[c], v])] for v in range(vocab)) for c in classes}
    start = next((c for c in classes if moves[c] == start_moves), None)
    # renumber: start first, then breadth-first
    order: list[object] = ["start" if start is None else start]
    i = 0
    while i < len(order):
        c = order[i]
        nxt = start_moves if c == "start" else moves[c]
        for d in nxt:
            if d not in order:
                order.append(d)
        i += 1
    num = {c: j for j, c in enumerate(order)}
    table, output = [], []
    for c in order:
        nxt = start_moves if c == "start" else moves[c]
        table.append(tuple(num[d] for d in nxt))
        output.append(0 if c == "start" else int(m.outputs[rep[c]]))
    return Automaton(tuple(table), tuple(output))


# ---------------------------------------------------------------------------
# compression: a few arithmetic machines fitted to the network's outputs


def compress(x: np.ndarray, y: np.ndarray, vocab: int, num_outputs: int,
             max_modulus: int) -> list[Candidate]:
    """The best-fitting machine of each arithmetic form (each found by exhaustive
    search over its small parameter space)."""
    out: list[Candidate] = []
    for build in (_memoryless, _modular, _counter, _extremum, _saturating):
        c = build(x, y, vocab, num_outputs, max_modulus)
        if c is not None:
            out.append(c)
    return out


def _majority(states: np.ndarray, y: np.ndarray, size: int, num_outputs: int) -> tuple[np.ndarray, float]:
    """The output table state -> majority output, and how often it is right.
    states: (C, N, L) for C candidates at once; returns (C, size) and (C,)."""
    c = states.shape[0]
    idx = (np.arange(c)[:, None] * size + states.reshape(c, -1)) * num_outputs + y.reshape(1, -1)
    counts = np.bincount(idx.ravel(), minlength=c * size * num_outputs).reshape(c, size, num_outputs)
    return counts.argmax(2), counts.max(2).sum(1) / y.size


def _table(name: str, values: np.ndarray) -> str:
    return f"{name} = {[int(v) for v in values]}\n"


def _emit(prelude: str, init: str, update: str, output: str) -> str:
    return (f"{prelude}\n\ndef f(xs):\n    out = []\n    s = {init}\n    for x in xs:\n"
            f"        s = {update}\n        out.append({output})\n    return out\n").lstrip("\n")


def _output_expr(table: np.ndarray, size: int, var: str = "s") -> tuple[str, str]:
    """How to write out = table[var]: the variable, a comparison, or a small table O."""
    tab = [int(v) for v in table]
    if tab == list(range(size)):
        return "", var
    if sorted(set(tab)) == [0, 1] and sum(tab) == 1:
        return "", f"1 if {var} == {tab.index(1)} else 0"
    if sorted(set(tab)) == [0, 1] and sum(tab) == size - 1:
        return "", f"0 if {var} == {tab.index(0)} else 1"
    return _table("O", tab), f"O[{var}]"


def _token_expr(w: np.ndarray, k: int | None) -> tuple[str, str]:
    """w[x] written as an affine expression of x where one fits, else a table W."""
    w = [int(v) for v in w]
    pairs = sorted(itertools.product(range(-3, 4), repeat=2),
                   key=lambda ab: (abs(ab[0]) + abs(ab[1]), ab[0] < 0, ab[1] < 0))
    for a, b in pairs:
        vals = [a * x + b for x in range(len(w))]
        if (k is None and vals == w) or (k is not None and [v % k for v in vals] == w):
            terms = [t for t in (("x" if a == 1 else f"{a} * x") if a else "",
                                 str(b) if b else "") if t]
            return "", " + ".join(terms).replace("+ -", "- ") or "0"
    return _table("W", w), "W[x]"


def _memoryless(x: np.ndarray, y: np.ndarray, vocab: int, k_out: int, _m: int) -> Candidate | None:
    table, _ = _majority(x[None], y, vocab, k_out)
    pre, expr = _output_expr(table[0], vocab, "x")
    src = f"{pre}\n\ndef f(xs):\n    return [{expr} for x in xs]\n".lstrip("\n")
    tab = table[0]
    return Candidate("memoryless", src, lambda z: tab[z])


def _modular(x: np.ndarray, y: np.ndarray, vocab: int, k_out: int, max_modulus: int) -> Candidate | None:
    best = None
    for k in range(2, max_modulus + 1):
        ws = np.array(list(itertools.product(range(k), repeat=vocab)), np.int64)  # (C, V)
        for a in range(1, k):
            s = np.zeros((len(ws), len(x)), np.int64)
            states = np.zeros((len(ws), *x.shape), np.int64)
            for t in range(x.shape[1]):
                s = (a * s + ws[:, x[:, t]]) % k
                states[:, :, t] = s
            tabs, acc = _majority(states, y, k, k_out)
            i = int(acc.argmax())
            if best is None or acc[i] > best[0] + 1e-9:
                best = (float(acc[i]), k, a, ws[i], tabs[i])
    if best is None:
        return None
    _, k, a, w, tab = best
    pre_w, wx = _token_expr(w, k)
    pre_o, out = _output_expr(tab, k)
    lead = f"{a} * s" if a != 1 else "s"
    src = _emit(pre_w + pre_o, "0", f"({lead} + {wx}) % {k}", out)

    def sim(z: np.ndarray) -> np.ndarray:
        s = np.zeros(len(z), np.int64)
        res = np.zeros(z.shape, np.int64)
        for t in range(z.shape[1]):
            s = (a * s + w[z[:, t]]) % k
            res[:, t] = tab[s]
        return res

    return Candidate("modular", src, sim)


COMPARISONS = ("gt", "eq", "sign")


def _count(w: np.ndarray, x: np.ndarray, sticky: bool) -> np.ndarray:
    """Running sums of w[x]; `sticky`: once below zero, stuck at -1 (a bracket
    counter that has failed stays failed)."""
    c = np.cumsum(w[x], axis=1)
    if sticky:
        c = np.where(np.minimum.accumulate(c, axis=1) < 0, -1, c)
    return c


def _compare(c: np.ndarray, theta: int, form: str) -> np.ndarray:
    if form == "sign":
        return np.sign(c - theta) + 1  # 0 below, 1 at, 2 above
    return (c > theta if form == "gt" else c == theta).astype(np.int64)


def _counter(x: np.ndarray, y: np.ndarray, vocab: int, k_out: int, _m: int) -> Candidate | None:
    """c = running sum of w[x] (w in {-1, 0, 1}), possibly stuck once negative,
    its output a comparison of c with a threshold."""
    best = None
    for w in itertools.product((-1, 0, 1), repeat=vocab):
        w = np.array(w, np.int64)
        if not w.any():
            continue
        for sticky in (False, True):
            if sticky and not (w < 0).any():
                continue
            c = _count(w, x, sticky)
            for theta in range(-2, 3):
                for form in COMPARISONS:
                    tabs, acc = _majority(_compare(c, theta, form)[None], y,
                                          3 if form == "sign" else 2, k_out)
                    if best is None or acc[0] > best[0] + 1e-9:
                        best = (float(acc[0]), w, sticky, theta, form, tabs[0])
    if best is None:
        return None
    _, w, sticky, theta, form, tab = best
    pre, wx = _token_expr(w, None)
    t = [int(v) for v in tab]
    cond = {"gt": f"s > {theta}", "eq": f"s == {theta}"}
    if form == "sign":
        out = f"{t[0]} if s < {theta} else ({t[1]} if s == {theta} else {t[2]})"
    elif t == [0, 1]:
        out = f"1 if {cond[form]} else 0"
    else:
        out = f"{t[1]} if {cond[form]} else {t[0]}"
    step = f"s + {wx}".replace("+ -", "- ")
    src = _emit(pre, "0", f"{step} if s >= 0 else s" if sticky else step, out)
    return Candidate("counter", src, lambda z: tab[_compare(_count(w, z, sticky), theta, form)])


def _extremum(x: np.ndarray, y: np.ndarray, vocab: int, k_out: int, _m: int) -> Candidate | None:
    """s = max(s, w[x]) or min(s, w[x]) with w the token itself or one token's indicator."""
    options = [("max", None, 0), ("min", None, vocab - 1)]
    options += [("max", j, 0) for j in range(vocab)]
    best = None
    for op, j, init in options:
        w = np.arange(vocab) if j is None else (np.arange(vocab) == j).astype(np.int64)
        acc_fn = np.maximum if op == "max" else np.minimum
        s = acc_fn.accumulate(np.concatenate([np.full((len(x), 1), init), w[x]], 1), axis=1)[:, 1:]
        tabs, acc = _majority(s[None], y, vocab, k_out)
        if best is None or acc[0] > best[0] + 1e-9:
            best = (float(acc[0]), op, j, init, w, tabs[0])
    _, op, j, init, w, tab = best
    size = 2 if j is not None else vocab
    pre, out = _output_expr(tab[:size], size)
    wx = "x" if j is None else f"(1 if x == {j} else 0)"
    src = _emit(pre, str(init), f"{op}(s, {wx})", out)
    fn = np.maximum if op == "max" else np.minimum

    def sim(z: np.ndarray) -> np.ndarray:
        s = fn.accumulate(np.concatenate([np.full((len(z), 1), init), w[z]], 1), axis=1)[:, 1:]
        return tab[s]

    return Candidate("extremum", src, sim)


def _saturating(x: np.ndarray, y: np.ndarray, vocab: int, k_out: int, _m: int) -> Candidate | None:
    """s = min(s + w[x], cap) with w in {0, 1} per token, or s reset to 0 on one
    token and otherwise counting up to cap."""
    best = None
    for cap in range(1, 5):
        for bits in itertools.product((0, 1), repeat=vocab):
            w = np.array(bits, np.int64)
            if not w.any():
                continue
            for reset in (False, True):
                s = np.zeros(len(x), np.int64) if not reset else np.full(len(x), cap)
                states = np.zeros(x.shape, np.int64)
                for t in range(x.shape[1]):
                    if reset:  # w marks the resetting token(s); others count up
                        s = np.where(w[x[:, t]] == 1, 0, np.minimum(s + 1, cap))
                    else:
                        s = np.minimum(s + w[x[:, t]], cap)
                    states[:, t] = s
                tabs, acc = _majority(states[None], y, cap + 1, k_out)
                if best is None or acc[0] > best[0] + 1e-9:
                    best = (float(acc[0]), cap, w, reset, tabs[0])
    _, cap, w, reset, tab = best
    pre, out = _output_expr(tab, cap + 1)
    if reset:
        hit = " or ".join(f"x == {j}" for j in np.flatnonzero(w))
        src = _emit(pre, str(cap), f"0 if {hit} else min(s + 1, {cap})", out)
    else:
        pre_w, wx = _token_expr(w, None)
        src = _emit(pre_w + pre, "0", f"min(s + {wx}, {cap})", out)

    def sim(z: np.ndarray) -> np.ndarray:
        s = np.full(len(z), cap if reset else 0)
        res = np.zeros(z.shape, np.int64)
        for t in range(z.shape[1]):
            s = np.where(w[z[:, t]] == 1, 0, np.minimum(s + 1, cap)) if reset else np.minimum(s + w[z[:, t]], cap)
            res[:, t] = tab[s]
        return res

    return Candidate("saturating", src, sim)


# ---------------------------------------------------------------------------
# the network


def _readout(model: nn.Module) -> nn.Module | None:
    for name, module in model.named_modules():
        if name == "readout" or name.endswith(".readout"):
            return module
    return None


def _room(view: CaseView, want: int) -> int:
    cap = view.budget.queries
    return int(want) if cap is None else int(max(0, min(want, cap - view.meter.queries)))


def _hidden(model: nn.Module, readout: nn.Module, x: np.ndarray, device: str,
            batch: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """(N, L, D) readout inputs and (N, L) labels of the network on x."""
    store: list[torch.Tensor] = []
    handle = readout.register_forward_hook(lambda _m, inp, _o: store.append(inp[0].detach().cpu()))
    labels = []
    try:
        with torch.no_grad():
            for i in range(0, len(x), batch):
                logits = model(torch.from_numpy(x[i:i + batch]).to(device))
                labels.append(logits.argmax(-1).cpu().numpy())
    finally:
        handle.remove()
    h = torch.cat(store).numpy().astype(np.float64)
    return h.reshape(len(x), x.shape[1], -1), np.concatenate(labels).astype(np.int64)


def _confirm(source: str, xf: np.ndarray, yf: np.ndarray, xl: np.ndarray, yl: np.ndarray,
             fresh_min: float, long_min: float) -> bool:
    """Run the emitted source itself (not its simulator) on the verification sets."""
    f = trusted_function(source)
    fresh = np.array([f([int(t) for t in row]) for row in xf], np.int64)
    far = np.array([f([int(t) for t in row]) for row in xl], np.int64)
    return bool((fresh == yf).mean() >= fresh_min and (far == yl).mean() >= long_min)

"""Shared machinery of the replace-family distillers: asking the network within
the query budget, measuring a program's agreement with it in the sandbox, and
the enumerative searcher's small typed DSL (grid expressions, sequence scans,
image statistics) with the labelling rules fitted to the network's answers.

Why one module: the black-box enumerator and the white-box probe search the
same program space; the probe only narrows it to variables the network is seen
to compute, so both must enumerate (and emit) candidates the same way."""

from __future__ import annotations

import ast
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from samecurve.api import CaseView, Program
from samecurve.programs.domain import Domain, query
from samecurve.programs.sandbox import ProgramFailed, run_program
from samecurve.programs.source import ProgramRejected, check_source, program_size

VALUE_LIMIT = 2**40  # expressions whose values grow past this are dropped (no overflow)
MIN_QUERIES = 20  # fewer than this and no tool can tell a rule from noise


# ---------------------------------------------------------------------------
# queries and measurement


def query_room(view: CaseView, want: int) -> int:
    """How many inputs a tool may still query: `want`, cut to what the budget has left."""
    cap = view.budget.queries
    if cap is None:
        return int(want)
    return int(max(0, min(want, cap - view.meter.queries)))


def ask(view: CaseView, inputs: np.ndarray) -> np.ndarray:
    """The network's labels on `inputs` (counted by the view's meter)."""
    return query(view.model, view.domain, inputs, view.device)


Asker = Callable[[CaseView, np.ndarray], tuple[np.ndarray, np.ndarray | None]]


def labels_only(view: CaseView, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """The default asker: the network's labels, no representation."""
    return ask(view, inputs), None


@dataclass(frozen=True, eq=False)
class Queried:
    """Inputs the network answered, split into a part to fit on and a part held
    back to estimate the program's agreement. Sequences come as groups of one
    length each (a list of (n, L) arrays); grid and image inputs as one group.
    `fit_r` holds the representation read while asking, if the asker read one."""

    fit_x: list[np.ndarray]
    fit_y: list[np.ndarray]
    held_x: list[np.ndarray]
    held_y: list[np.ndarray]
    fit_r: list[np.ndarray] = field(default_factory=list)

    @property
    def n(self) -> int:
        return sum(len(x) for x in self.fit_x + self.held_x)


def _split(groups: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]],
           rng: np.random.Generator, held_fraction: float) -> Queried:
    fx, fy, hx, hy, fr = [], [], [], [], []
    for x, y, r in groups:
        order = rng.permutation(len(x))
        cut = len(x) - max(1, round(len(x) * held_fraction)) if len(x) > 1 else len(x)
        fx.append(x[order[:cut]])
        fy.append(y[order[:cut]])
        if r is not None:
            fr.append(r[order[:cut]])
        if cut < len(x):
            hx.append(x[order[cut:]])
            hy.append(y[order[cut:]])
    return Queried(fx, fy, hx, hy, fr)


def query_grid(view: CaseView, n: int, rng: np.random.Generator, held_fraction: float = 0.2,
               asker: Asker = labels_only) -> Queried:
    """`n` distinct grid cells (all of them if n covers the grid), answered."""
    d = view.domain
    cells = d.vocab * d.vocab
    pick = rng.permutation(cells)[: min(n, cells)]
    x = np.stack([pick // d.vocab, pick % d.vocab], 1).astype(np.int64)
    return _split([(x, *asker(view, x))], rng, held_fraction)


def query_sequences(view: CaseView, n: int, rng: np.random.Generator,
                    held_fraction: float = 0.2, asker: Asker = labels_only,
                    long_fraction: float = 0.25) -> Queried:
    """`n` random sequences: most at training lengths, `long_fraction` at the
    domain's long lengths (so a program that only fits short inputs is caught)."""
    d = view.domain
    lo, hi = max(1, d.lengths[0]), max(1, d.lengths[1])
    llo, lhi = d.long_lengths
    n_long = int(n * long_fraction) if lhi > hi else 0
    lengths = list(rng.integers(lo, hi + 1, size=n - n_long))
    lengths += list(rng.integers(max(llo, hi + 1), lhi + 1, size=n_long)) if n_long else []
    groups = []
    for length in sorted({int(v) for v in lengths}):
        k = sum(1 for v in lengths if v == length)
        x = d.sample(k, rng, length=length)
        groups.append((x, *asker(view, x)))
    return _split(groups, rng, held_fraction)


def image_inputs(view: CaseView) -> np.ndarray:
    """The case's real images as (N, H, W) float64, rounded as programs see them."""
    if view.clean is None:
        raise RuntimeError("image distillers must declare 'clean_data': images cannot be sampled")
    x = view.clean.x.detach().cpu().numpy().astype(np.float32)
    x = x[:, 0] if x.ndim == 4 else x
    return np.round(x, 4).astype(np.float64)


def query_images(view: CaseView, n: int, rng: np.random.Generator, held_fraction: float = 0.2,
                 asker: Asker = labels_only) -> Queried:
    imgs = image_inputs(view)
    imgs = imgs[rng.permutation(len(imgs))[:n]]
    return _split([(imgs, *asker(view, imgs))], rng, held_fraction)


def query_domain(view: CaseView, n: int, rng: np.random.Generator, held_fraction: float = 0.2,
                 asker: Asker = labels_only) -> Queried:
    """Query `n` inputs of the view's domain kind (through `asker`, which may also
    read a representation)."""
    kind = view.domain.kind
    if kind == "grid":
        return query_grid(view, n, rng, held_fraction, asker)
    if kind == "sequence":
        return query_sequences(view, n, rng, held_fraction, asker)
    return query_images(view, n, rng, held_fraction, asker)


def agreement(source: str, domain: Domain, xs: Sequence[np.ndarray], ys: Sequence[np.ndarray],
              seconds: float = 60.0) -> float:
    """Fraction of outputs (every position, for sequences) where the program, run
    in the sandbox, says what the network said. A rejected or failing program: 0."""
    agree = total = 0
    try:
        for x, y in zip(xs, ys, strict=True):
            if len(x) == 0:
                continue
            out = run_program(Program(source), domain, x, seconds=seconds).values
            agree += int((out == y).sum())
            total += int(y.size)
    except (ProgramRejected, ProgramFailed):
        return 0.0
    return agree / total if total else 0.0


def finish(view: CaseView, source: str | None, q: Queried, abstain_below: float,
           notes: dict[str, float] | None = None) -> Program:
    """The tool's answer: the program with its agreement on held-back queries in
    `notes`, or Program(None) if it is below `abstain_below` (no short program)."""
    notes = dict(notes or {})
    notes["queries"] = float(view.meter.queries)
    if source is None:
        notes["fidelity_estimate"] = 0.0
        return Program(None, notes=notes)
    check_source(source)
    held_x, held_y = (q.held_x, q.held_y) if q.held_x else (q.fit_x, q.fit_y)
    seconds = float(max(5.0, min(60.0, view.time_left())))
    fid = agreement(source, view.domain, held_x, held_y, seconds=seconds)
    notes["fidelity_estimate"] = fid
    notes["program_size"] = float(program_size(source))
    if fid < abstain_below:
        return Program(None, notes=notes)
    return Program(source, notes=notes)


# ---------------------------------------------------------------------------
# labelling rules: a boolean or class-valued function of one candidate value


@dataclass(frozen=True, eq=False)
class Rule:
    """How a candidate value becomes a label: `render(code)` is the return
    expression; `agreement` is on the fitting inputs; `pred` the labels it gives."""

    agreement: float
    render: Callable[[str], str]
    pred: np.ndarray


def _fmt(v: float) -> str:
    if float(v).is_integer():
        return str(int(v))
    return repr(float(v))


def _threshold(v: np.ndarray, y: np.ndarray) -> Rule | None:
    """The best `v < t` or `v >= t` (binary labels), t found by a sort and a scan."""
    n = len(v)
    order = np.argsort(v, kind="stable")
    vs, ys = v[order], y[order]
    cuts = np.nonzero(vs[1:] != vs[:-1])[0] + 1
    if len(cuts) == 0:
        return None
    pos = np.cumsum(ys)
    total = int(pos[-1])
    below_pos = pos[cuts - 1]
    lt = below_pos + (n - cuts) - (total - below_pos)  # 1 below the cut
    ge = (cuts - below_pos) + (total - below_pos)  # 1 at or above it
    i_lt, i_ge = int(np.argmax(lt)), int(np.argmax(ge))
    integer = np.issubdtype(v.dtype, np.integer)
    if lt[i_lt] >= ge[i_ge]:
        c, op, agree = cuts[i_lt], "<", lt[i_lt]
    else:
        c, op, agree = cuts[i_ge], ">=", ge[i_ge]
    t = vs[c] if integer else round(float((vs[c - 1] + vs[c]) / 2), 4)
    if not integer and not (vs[c - 1] < t <= vs[c]):
        t = float((vs[c - 1] + vs[c]) / 2)
    pred = (v < t) if op == "<" else (v >= t)
    ts = _fmt(t)
    return Rule(float(agree) / n, lambda e, op=op, ts=ts: f"int({e} {op} {ts})",
                pred.astype(np.int64))


def _membership(keys: np.ndarray, y: np.ndarray, wrap: Callable[[str], str]) -> Rule | None:
    """Label 1 where `keys` is in the set of values mostly labelled 1 (binary
    labels, at most 16 distinct keys); written as the shorter of `in S` and
    `not in` its complement."""
    uniq, inv = np.unique(keys, return_inverse=True)
    if len(uniq) < 2 or len(uniq) > 16:
        return None
    ones = np.bincount(inv, weights=y, minlength=len(uniq))
    count = np.bincount(inv, minlength=len(uniq))
    chosen = ones * 2 > count
    if chosen.all() or not chosen.any():
        return None
    flip = int(chosen.sum()) * 2 > len(uniq)
    members = uniq[~chosen] if flip else uniq[chosen]
    agree = float(np.where(chosen, ones, count - ones).sum()) / len(y)
    pred = chosen[inv].astype(np.int64)
    if len(members) == 1:
        op, m = ("!=" if flip else "=="), _fmt(members[0])
        return Rule(agree, lambda e, m=m, op=op: f"int({wrap(e)} {op} {m})", pred)
    op = "not in" if flip else "in"
    tup = "(" + ", ".join(_fmt(m) for m in members) + ")"
    return Rule(agree, lambda e, t=tup, op=op: f"int({wrap(e)} {op} {t})", pred)


def _powmod(v: np.ndarray, e: int, p: int) -> np.ndarray:
    base, out = np.mod(v, p), np.ones_like(v)
    while e:
        if e & 1:
            out = out * base % p
        base = base * base % p
        e >>= 1
    return out


def _is_prime(p: int) -> bool:
    return p > 2 and all(p % k for k in range(2, int(p**0.5) + 1))


def fit_rules(v: np.ndarray, y: np.ndarray, num_outputs: int, modulus: int = 0,
              max_residue: int = 8) -> list[Rule]:
    """Every labelling rule of one value vector worth keeping: threshold, residue
    class sets e % m in S, small value sets, quadratic residues mod a prime
    `modulus` (pow(e, (p-1)/2, p)), and for class labels the value itself mod K."""
    rules: list[Rule] = []
    integer = np.issubdtype(v.dtype, np.integer)
    if num_outputs > 2 or y.max(initial=0) > 1:
        if integer:
            if v.min() >= 0 and v.max() < num_outputs:
                rules.append(Rule(float((v == y).mean()), lambda e: e, v))
            r = np.mod(v, num_outputs)
            rules.append(Rule(float((r == y).mean()), lambda e, k=num_outputs: f"{e} % {k}", r))
        return rules
    if integer and v.min(initial=0) >= 0 and v.max(initial=0) <= 1:
        rules.append(Rule(float((v == y).mean()), lambda e: e, v))
    t = _threshold(v, y)
    if t is not None:
        rules.append(t)
    if not integer:
        return rules
    m = _membership(v, y, lambda e: e)
    if m is not None:
        rules.append(m)
    for k in range(2, max_residue + 1):
        m = _membership(np.mod(v, k), y, lambda e, k=k: f"{e} % {k}")
        if m is not None:
            rules.append(m)
    if modulus and _is_prime(modulus):
        half = (modulus - 1) // 2
        m = _membership(_powmod(v, half, modulus), y,
                        lambda e, h=half, p=modulus: f"pow({e}, {h}, {p})")
        if m is not None:
            rules.append(m)
    return rules


def best_rule(v: np.ndarray, y: np.ndarray, num_outputs: int, modulus: int = 0) -> Rule | None:
    rules = fit_rules(v, y, num_outputs, modulus)
    return max(rules, key=lambda r: r.agreement) if rules else None


# ---------------------------------------------------------------------------
# candidates and choosing among them


@dataclass(frozen=True)
class Candidate:
    """One complete program found by a search, with its agreement on the fitting inputs."""

    source: str
    agreement: float
    size: int


@dataclass
class Shortlist:
    """The best programs seen, kept so the smallest of those within `tolerance` of
    the best agreement can be chosen (ties go to the smaller program)."""

    tolerance: float = 0.002
    keep: int = 400
    items: list[tuple[float, int, str]] = field(default_factory=list)
    best: float = -1.0

    def offer(self, agreement: float, size: int, make: Callable[[], str]) -> None:
        if agreement < self.best - self.tolerance:
            return
        self.items.append((agreement, size, make()))
        if agreement > self.best:
            self.best = agreement
            floor = self.best - self.tolerance
            self.items = [it for it in self.items if it[0] >= floor]
        if len(self.items) > self.keep * 2:
            self.items.sort(key=lambda it: (-it[0], it[1]))
            self.items = self.items[: self.keep]

    def choose(self) -> Candidate | None:
        floor = self.best - self.tolerance
        pool = [it for it in self.items if it[0] >= floor]
        if not pool:
            return None
        sized = [(program_size(src), -agree, src) for agree, _, src in pool]
        size, neg, src = min(sized)
        return Candidate(ast.unparse(ast.parse(src)) + "\n", -neg, size)


def constant_source(kind: str, label: int) -> str:
    if kind == "grid":
        return f"def f(a, b):\n    return {label}\n"
    if kind == "sequence":
        return f"def f(xs):\n    return [{label} for x in xs]\n"
    return f"def f(img):\n    return {label}\n"


def majority(y: np.ndarray) -> tuple[int, float]:
    counts = np.bincount(y.ravel())
    return int(counts.argmax()), float(counts.max() / y.size)


# ---------------------------------------------------------------------------
# grid: integer expressions e(a, b)


@dataclass(frozen=True, eq=False)
class Expr:
    """A candidate integer expression over a and b: its code (fully
    parenthesised restricted Python), node count and values on the inputs."""

    code: str
    size: int
    values: np.ndarray


def grid_constants(inputs: np.ndarray, labels: np.ndarray | None, vocab: int) -> dict[str, list[int]]:
    """Small constants, the modulus, its half, and centres proposed by the data
    (the mean of a and of b over each label, +-1, over the 1s +-2): a circle's centre is a
    constant no blind enumeration would reach cheaply."""
    base = sorted({1, 2, 3, vocab // 2, vocab} - {0})
    centres: dict[str, set[int]] = {"a": {vocab // 2}, "b": {vocab // 2}}
    if labels is not None and labels.max(initial=0) <= 1:
        for j, name in enumerate("ab"):
            for lab in (0, 1):
                sel = inputs[labels == lab, j]
                if 0 < len(sel) < len(labels):
                    m, r = round(float(sel.mean())), 1 + lab  # the 1s' mean: +-2
                    centres[name] |= set(range(m - r, m + r + 1))
    return {"base": base, "a": sorted(centres["a"]), "b": sorted(centres["b"])}


def grid_expressions(inputs: np.ndarray, vocab: int, labels: np.ndarray | None = None,
                     max_size: int = 5, deadline: float | None = None) -> Iterator[Expr]:
    """Bottom-up enumeration of integer expressions in a and b, smallest first,
    deduplicated by their values on `inputs` (observational equivalence), then
    separable combinations u(a) op w(b) of per-variable atoms (v, (v - c)**2,
    |v - c|, v % k) and those mod the grid's modulus. Division and remainder only
    by constants, so no program can divide by zero on an input never queried."""
    a, b = inputs[:, 0].astype(np.int64), inputs[:, 1].astype(np.int64)
    consts = grid_constants(inputs, labels, vocab)
    seen: set[int] = set()
    levels: dict[int, list[Expr]] = {1: [], 3: []}

    def new(code: str, size: int, vals: np.ndarray) -> Expr | None:
        if np.abs(vals).max(initial=0) > VALUE_LIMIT:
            return None
        key = hash(vals.tobytes())
        if key in seen or np.all(vals == vals[0]):
            return None
        seen.add(key)
        return Expr(code, size, vals)

    def late() -> bool:
        return deadline is not None and time.monotonic() > deadline

    def binops(x: Expr, y: Expr, var_y: bool) -> Iterator[tuple[str, np.ndarray]]:
        xc, yc = x.code, y.code
        yield f"({xc} + {yc})", x.values + y.values
        yield f"({xc} - {yc})", x.values - y.values
        yield f"({yc} - {xc})", y.values - x.values
        yield f"({xc} * {yc})", x.values * y.values
        if not var_y and y.values[0] > 1:
            yield f"({xc} // {yc})", x.values // y.values[0]
            yield f"({xc} % {yc})", x.values % y.values[0]

    leaves = [new("a", 1, a), new("b", 1, b)]
    levels[1] = [e for e in leaves if e is not None]
    yield from levels[1]
    cvals = [Expr(str(c), 1, np.full_like(a, c)) for c in consts["base"]]
    for size in (3, 5, 7):
        if size > max_size or late():
            break
        out: list[Expr] = []
        for sl in range(1, size - 1, 2):
            sr = size - 1 - sl
            if sl not in levels or (sr not in levels and sr != 1):
                continue
            for i, x in enumerate(levels[sl]):
                partners = [(y, True) for j, y in enumerate(levels.get(sr, []))
                            if sl != sr or j >= i]
                if sr == 1:
                    partners += [(c, False) for c in cvals]
                for y, var_y in partners:
                    for code, vals in binops(x, y, var_y):
                        e = new(code, size, vals)
                        if e is not None:
                            out.append(e)
                if late():
                    break
        for x in levels.get(size - 2, []):
            for code, vals in ((f"({x.code} ** 2)", x.values * x.values),
                               (f"abs({x.code})", np.abs(x.values))):
                e = new(code, size, vals)
                if e is not None:
                    out.append(e)
        if size + 2 <= max_size:
            levels[size] = out
        yield from out
    # separable combinations of per-variable atoms
    atoms: dict[str, list[Expr]] = {}
    for name, v in (("a", a), ("b", b)):
        row = [Expr(name, 1, v), Expr(f"({name} ** 2)", 3, v * v)]
        for c in consts[name]:
            if c:
                row.append(Expr(f"(({name} - {c}) ** 2)", 5, (v - c) ** 2))
                row.append(Expr(f"abs({name} - {c})", 5, np.abs(v - c)))
        row += [Expr(f"({name} % {k})", 3, v % k) for k in (2, 3)]
        atoms[name] = row
    for u in atoms["a"]:
        if late():
            return
        for w in atoms["b"]:
            for op, vals in (("+", u.values + w.values), ("-", u.values - w.values),
                             ("*", u.values * w.values)):
                size = u.size + w.size + 1
                e = new(f"({u.code} {op} {w.code})", size, vals)
                if e is not None:
                    yield e
                e = new(f"(({u.code} {op} {w.code}) % {vocab})", size + 2, np.mod(vals, vocab))
                if e is not None:
                    yield e


def grid_source(expr_code: str, rule: Callable[[str], str]) -> str:
    return f"def f(a, b):\n    return {rule(expr_code)}\n"


def search_grid(inputs: np.ndarray, labels: np.ndarray, domain: Domain, *, max_size: int = 5,
                tolerance: float = 0.002, deadline: float | None = None,
                exprs: Sequence[Expr] | None = None) -> Candidate:
    """The smallest grid program among the best found: each expression's best
    labelling rule, then and/or of the best boolean features. `exprs` restricts
    the search to given candidates (what the probe found readable)."""
    labels = np.asarray(labels, np.int64)
    lab, frac = majority(labels)
    short = Shortlist(tolerance)
    short.offer(frac, 3, lambda: constant_source("grid", lab))
    pool = exprs if exprs is not None else grid_expressions(
        inputs, domain.vocab, labels, max_size=max_size, deadline=deadline)
    boolean: list[tuple[float, str, np.ndarray, Callable[[str], str]]] = []
    binary = domain.num_outputs <= 2 and labels.max(initial=0) <= 1
    for e in pool:
        for r in fit_rules(e.values, labels, domain.num_outputs, domain.vocab):
            short.offer(r.agreement, e.size + 3, lambda e=e, r=r: grid_source(e.code, r.render))
            if binary:
                boolean.append((r.agreement, e.code, r.pred, r.render))
        if len(boolean) > 4000:
            boolean.sort(key=lambda t: -t[0])
            boolean = boolean[:200]
    if binary and boolean:
        boolean.sort(key=lambda t: -t[0])
        top = boolean[:30]
        for i, (_, c1, p1, r1) in enumerate(top):
            for _, c2, p2, r2 in top[i + 1 :]:
                for op, pred in (("and", p1 & p2), ("or", p1 | p2)):
                    agree = float((pred == labels).mean())
                    short.offer(agree, 20, lambda c1=c1, c2=c2, r1=r1, r2=r2, op=op:
                                "def f(a, b):\n    return int(" + f"{r1(c1)} {op} {r2(c2)}" + ")\n")
    chosen = short.choose()
    assert chosen is not None  # the constant program is always on the list
    return chosen


# ---------------------------------------------------------------------------
# sequences: scans s_t = g(s_{t-1}, x_t), y_t = h(s_t, s_{t-1}, x_t)


@dataclass(frozen=True)
class Scan:
    """A state update `g` (code in s and x) from the initial state `s0`."""

    g: str
    s0: int
    step: Callable[[np.ndarray, np.ndarray], np.ndarray] = field(compare=False, repr=False)


def scan_grammar(vocab: int) -> list[Scan]:
    """The state updates the sequence searcher tries: sums, counts of one token,
    sums mod k, running max/min, the previous token, xor, a position counter,
    binary prefixes mod k, a +-1 depth counter and a carry over paired-bit tokens."""
    out = [
        Scan("s + x", 0, lambda s, x: s + x),
        Scan("s ^ x", 0, lambda s, x: s ^ x),
        Scan("max(s, x)", 0, np.maximum),
        Scan("min(s, x)", vocab - 1, np.minimum),
        Scan("x", 0, lambda s, x: x.copy()),
        Scan("s + 1", 0, lambda s, x: s + 1),
    ]
    for k in range(2, 6):
        out.append(Scan(f"(s + x) % {k}", 0, lambda s, x, k=k: (s + x) % k))
        out.append(Scan(f"(s * 2 + x) % {k}", 0, lambda s, x, k=k: (s * 2 + x) % k))
    if vocab <= 12:
        for k in range(vocab):
            out.append(Scan(f"s + (x == {k})", 0, lambda s, x, k=k: s + (x == k)))
    if vocab == 2:
        out.append(Scan("s + 2 * x - 1", 0, lambda s, x: s + 2 * x - 1))
    if vocab == 4:
        out.append(Scan("(x // 2 + x % 2 + s) // 2", 0, lambda s, x: (x // 2 + x % 2 + s) // 2))
    return out


H_FEATURES: tuple[tuple[str, Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]], ...] = (
    ("s", lambda s, p, x: s),
    ("p", lambda s, p, x: p),
    ("x", lambda s, p, x: x),
    ("(s - x)", lambda s, p, x: s - x),
    ("(p + x)", lambda s, p, x: p + x),
    ("(p - x)", lambda s, p, x: p - x),
    ("(p + x // 2 + x % 2)", lambda s, p, x: p + x // 2 + x % 2),
)


def run_scan(scan: Scan, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """States after and before each position, (n, L) each."""
    n, length = x.shape
    s = np.full(n, scan.s0, np.int64)
    after, before = np.empty_like(x), np.empty_like(x)
    for t in range(length):
        before[:, t] = s
        s = scan.step(s, x[:, t]).astype(np.int64)
        if np.abs(s).max(initial=0) > VALUE_LIMIT:
            s = np.clip(s, -VALUE_LIMIT, VALUE_LIMIT)
        after[:, t] = s
    return after, before


def sequence_source(scan: Scan, h: str) -> str:
    prev = "        p = s\n" if re.search(r"\bp\b", h) else ""
    return (f"def f(xs):\n    out = []\n    s = {scan.s0}\n    for x in xs:\n{prev}"
            f"        s = {scan.g}\n        out.append({h})\n    return out\n")


def scan_features(scan: Scan, xs: Sequence[np.ndarray]) -> list[tuple[str, np.ndarray]]:
    """Each h feature of one scan on all positions of all groups, flattened."""
    runs = [run_scan(scan, x) for x in xs]
    feats = []
    for name, fn in H_FEATURES:
        vals = [fn(s, p, x).ravel() for (s, p), x in zip(runs, xs, strict=True)]
        feats.append((name, np.concatenate(vals).astype(np.int64)))
    return feats


def search_sequence(xs: Sequence[np.ndarray], ys: Sequence[np.ndarray], domain: Domain, *,
                    tolerance: float = 0.002, deadline: float | None = None,
                    scans: Sequence[Scan] | None = None) -> Candidate:
    """The smallest scan program among the best found, checked on every position
    of the queried sequences (short and long together)."""
    y = np.concatenate([np.asarray(v, np.int64).ravel() for v in ys])
    lab, frac = majority(y)
    short = Shortlist(tolerance)
    short.offer(frac, 3, lambda: constant_source("sequence", lab))
    x_flat = np.concatenate([np.asarray(v).ravel() for v in xs]).astype(np.int64)
    for r in fit_rules(x_flat, y, domain.num_outputs):
        short.offer(r.agreement, 8, lambda r=r: f"def f(xs):\n    return [{r.render('x')} "
                                                "for x in xs]\n")
    for scan in scans if scans is not None else scan_grammar(domain.vocab):
        if deadline is not None and time.monotonic() > deadline:
            break
        seen: set[int] = set()
        for name, v in scan_features(scan, xs):
            key = hash(v.tobytes())
            if key in seen:
                continue
            seen.add(key)
            for r in fit_rules(v, y, domain.num_outputs):
                short.offer(r.agreement, 20,
                            lambda scan=scan, r=r, name=name: sequence_source(scan, r.render(name)))
    chosen = short.choose()
    assert chosen is not None
    return chosen


# ---------------------------------------------------------------------------
# images: pixel statistics


@dataclass(frozen=True, eq=False)
class Feature:
    """An image statistic: restricted-Python code over `img` and its values."""

    name: str
    code: str
    values: np.ndarray


def _box(r0: int, r1: int, c0: int, c1: int, h: int, w: int) -> str:
    rows = "img" if (r0, r1) == (0, h) else f"img[{r0}:{r1}]"
    cols = "r" if (c0, c1) == (0, w) else f"r[{c0}:{c1}]"
    return f"sum(sum({cols}) for r in {rows})"


def image_features(imgs: np.ndarray) -> list[Feature]:
    """Ink totals over the image, its halves, thirds and quadrants, pixels above
    0.5, mirror differences left-right and top-bottom, rows and columns with ink,
    and the ink's centre (row and column)."""
    _n, h, w = imgs.shape
    feats: list[Feature] = []

    def box(name: str, r0: int, r1: int, c0: int, c1: int) -> None:
        feats.append(Feature(name, _box(r0, r1, c0, c1, h, w),
                             imgs[:, r0:r1, c0:c1].sum(axis=(1, 2))))

    box("ink", 0, h, 0, w)
    hh, hw = h // 2, w // 2
    box("top", 0, hh, 0, w)
    box("bottom", h - hh, h, 0, w)
    box("left", 0, h, 0, hw)
    box("right", 0, h, w - hw, w)
    for i, (r0, r1) in enumerate([(0, hh), (h - hh, h)]):
        for j, (c0, c1) in enumerate([(0, hw), (w - hw, w)]):
            box(f"quadrant{i}{j}", r0, r1, c0, c1)
    t = h // 3
    for i, (r0, r1) in enumerate([(0, t), (t, h - t), (h - t, h)]):
        box(f"rows{i}", r0, r1, 0, w)
    t = w // 3
    for i, (c0, c1) in enumerate([(0, t), (t, w - t), (w - t, w)]):
        box(f"cols{i}", 0, h, c0, c1)
    feats.append(Feature("bright", "sum(v > 0.5 for r in img for v in r)",
                         (imgs > 0.5).sum(axis=(1, 2)).astype(np.float64)))
    feats.append(Feature("mirror_lr", "sum(abs(v - u) for r in img for v, u in zip(r, r[::-1]))",
                         np.abs(imgs - imgs[:, :, ::-1]).sum(axis=(1, 2))))
    feats.append(Feature("mirror_tb", "sum(abs(v - u) for r, q in zip(img, img[::-1]) "
                                      "for v, u in zip(r, q))",
                         np.abs(imgs - imgs[:, ::-1, :]).sum(axis=(1, 2))))
    feats.append(Feature("ink_rows", "sum(max(r) > 0.5 for r in img)",
                         (imgs.max(axis=2) > 0.5).sum(axis=1).astype(np.float64)))
    feats.append(Feature("ink_cols", "sum(max(c) > 0.5 for c in zip(*img))",
                         (imgs.max(axis=1) > 0.5).sum(axis=1).astype(np.float64)))
    total = imgs.sum(axis=(1, 2))
    safe = np.where(total > 0, total, 1.0)
    rows = (imgs.sum(axis=2) * np.arange(h)).sum(axis=1)
    cols = (imgs.sum(axis=1) * np.arange(w)).sum(axis=1)
    feats.append(Feature("centre_row", "sum(i * sum(r) for i, r in enumerate(img)) / "
                                       "max(sum(sum(r) for r in img), 1e-9)",
                         np.where(total > 0, rows / safe, 0.0)))
    feats.append(Feature("centre_col", "sum(j * v for r in img for j, v in enumerate(r)) / "
                                       "max(sum(sum(r) for r in img), 1e-9)",
                         np.where(total > 0, cols / safe, 0.0)))
    return feats


def image_source(code: str) -> str:
    return f"def f(img):\n    return {code}\n"


def search_image(imgs: np.ndarray, labels: np.ndarray, domain: Domain, *,
                 tolerance: float = 0.002, deadline: float | None = None,
                 features: Sequence[Feature] | None = None) -> Candidate:
    """The smallest image program among the best found: a threshold on one
    statistic, or on the difference of two."""
    labels = np.asarray(labels, np.int64)
    lab, frac = majority(labels)
    short = Shortlist(tolerance)
    short.offer(frac, 3, lambda: constant_source("image", lab))
    feats = list(features) if features is not None else image_features(imgs)
    for f in feats:
        for r in fit_rules(f.values, labels, domain.num_outputs):
            short.offer(r.agreement, 10, lambda f=f, r=r: image_source(r.render(f.code)))
    for i, f in enumerate(feats):
        if deadline is not None and time.monotonic() > deadline:
            break
        for g in feats[i + 1 :]:
            for r in fit_rules(f.values - g.values, labels, domain.num_outputs):
                short.offer(r.agreement, 25, lambda f=f, g=g, r=r:
                            image_source(r.render(f"({f.code}) - ({g.code})")))
    chosen = short.choose()
    assert chosen is not None
    return chosen

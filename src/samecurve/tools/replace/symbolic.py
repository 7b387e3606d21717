"""Symbolic regression (gplearn's genetic programming) on the network's answers,
over the decision tree's raw features, exported as restricted Python.

Why: genetic programming finds arithmetic a tree can only tile (a < b is one
subtraction, a staircase of splits for a tree), without a hand-written grammar;
it is the standard black-box symbolic baseline. Each evolved program is a
formula of the features; a binary label is the sign of the formula (gplearn's
sigmoid > 1/2), a class label the formula rounded into range. Protected division
and remainder are written out as the same conditionals gplearn evaluates."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from gplearn.functions import make_function
from gplearn.genetic import SymbolicClassifier, SymbolicRegressor

from samecurve.api import CaseView, Program
from samecurve.registry import register
from samecurve.tools.base import ToolBase
from samecurve.tools.replace.decision_tree import fit_rows, wrap
from samecurve.tools.replace.dsl import (
    MIN_QUERIES,
    constant_source,
    finish,
    query_domain,
    query_room,
)


def _protected_mod(x1: np.ndarray, x2: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(np.abs(x2) > 0.001, np.mod(x1, x2), 0.0)


MOD = make_function(function=_protected_mod, name="mod", arity=2, wrap=False)
FUNCTIONS: dict[str, Any] = {"add": "add", "sub": "sub", "mul": "mul", "div": "div",
                             "abs": "abs", "neg": "neg", "max": "max", "min": "min", "mod": MOD}
# What each gplearn function is in a program (div and mod are helpers below).
TEMPLATES = {"add": "({} + {})", "sub": "({} - {})", "mul": "({} * {})", "div": "div({}, {})",
             "abs": "abs({})", "neg": "(-{})", "max": "max({}, {})", "min": "min({}, {})",
             "mod": "mod({}, {})"}
HELPERS = ("def div(x, y):\n    return x / y if abs(y) > 0.001 else 1.0\n",
           "def mod(x, y):\n    return x % y if abs(y) > 0.001 else 0.0\n")


def formula(program: Any) -> str:
    """gplearn's prefix program (functions, feature indices, float constants) as
    one expression over the feature list `v`."""
    stack: list[list[Any]] = []
    out = ""
    for node in program.program:
        if hasattr(node, "arity"):
            stack.append([node])
            continue
        out = f"v[{node}]" if isinstance(node, int) else repr(float(node))
        if stack:
            stack[-1].append(out)
        while stack and len(stack[-1]) == stack[-1][0].arity + 1:
            fn, *args = stack.pop()
            out = TEMPLATES[fn.name].format(*args)
            if stack:
                stack[-1].append(out)
    return out


def gp_source(est: Any, kind: str, num_outputs: int, window: int, pool: int) -> str:
    """The fitted estimator as a complete program."""
    expr = formula(est._program)
    helpers = "".join(h + "\n\n" for h in HELPERS if h.split("(")[0][4:] + "(" in expr)
    if isinstance(est, SymbolicClassifier):
        lo, hi = (int(c) for c in est.classes_)
        body = f"def g(v):\n    return {hi} if {expr} > 0 else {lo}\n"
    else:
        body = (f"def g(v):\n    r = {expr}\n    if r != r:\n        return 0\n"
                f"    return min(max(int(round(min(max(r, -1.0), {num_outputs}.0))), 0), "
                f"{num_outputs - 1})\n")
    return wrap(kind, helpers + body, window, pool)


def gp_predict(est: Any, x: np.ndarray, num_outputs: int) -> np.ndarray:
    """What the exported program computes, from gplearn's own evaluation."""
    if isinstance(est, SymbolicClassifier):
        return est.predict(x).astype(np.int64)
    r = np.nan_to_num(est.predict(x), nan=0.0)
    return np.clip(np.rint(np.clip(r, -1.0, float(num_outputs))), 0, num_outputs - 1).astype(
        np.int64)


@register("tool", "symbolic-regression")
@dataclass(frozen=True)
class SymbolicRegression(ToolBase):
    """Black-box: gplearn evolves a formula of the raw features (grid a, b; a
    sequence position's token, index and window; pooled image blocks) over add,
    sub, mul, protected div and mod, abs, neg, max, min. Needs the clean images
    for the image domain. Cannot carry state along a sequence; rules that are a
    mod of a sum are hard for it to find by mutation alone."""

    kind = "black-box"
    needs = frozenset({"clean_data"})  # images only
    answers = frozenset({"replace"})

    queries: int = 4000
    population: int = 1000
    generations: int = 20
    parsimony: float = 0.002
    window: int = 4
    pool: int = 7
    abstain_below: float = 0.9
    reserve_seconds: float = 10.0

    def fit(self, view: CaseView, x: np.ndarray, y: np.ndarray) -> Any:
        """Evolve on (x, y) a generation at a time (warm starts) while the clock allows.
        Constants range over the features' scale (a grid threshold near 100 must be
        reachable in one leaf)."""
        scale = float(max(5.0, np.abs(x).max(initial=0.0)))
        common = {"population_size": self.population, "generations": 1,
                  "function_set": tuple(FUNCTIONS.values()), "parsimony_coefficient":
                  self.parsimony, "random_state": int(view.seed) % 2**31, "n_jobs": 1,
                  "warm_start": True, "const_range": (-scale, scale)}
        binary = len(np.unique(y)) == 2
        est = SymbolicClassifier(**common) if binary else SymbolicRegressor(**common)
        for g in range(1, self.generations + 1):
            est.set_params(generations=g)
            started = time.monotonic()
            est.fit(x, y)
            if view.time_left() - self.reserve_seconds < 2 * (time.monotonic() - started):
                break
        return est

    def distill(self, view: CaseView) -> Program:
        n = query_room(view, self.queries)
        if n < MIN_QUERIES:
            return Program(None, notes={"queries": float(view.meter.queries),
                                        "fidelity_estimate": 0.0})
        kind, k = view.domain.kind, view.domain.num_outputs
        q = query_domain(view, n, view.rng(17))
        x, y = fit_rows(view.domain, q.fit_x, q.fit_y, self.window, self.pool)
        if len(np.unique(y)) < 2:  # one label: nothing to evolve, the constant is the formula
            return finish(view, constant_source(kind, int(y[0])), q, self.abstain_below)
        est = self.fit(view, x, y)
        source = gp_source(est, kind, k, self.window, self.pool)
        fit_agree = float((gp_predict(est, x, k) == y).mean())
        return finish(view, source, q, self.abstain_below,
                      {"fit_agreement": fit_agree, "generations": float(est.generations)})

"""Enumerative synthesis guided by queries: ask the network about a few thousand
inputs, enumerate programs of a small typed DSL bottom-up (deduplicated by what
they compute on those inputs), fit each one's labelling constants to the
network's answers, and keep the smallest program among the most faithful.

Why: the hidden programs are short, and a short program that agrees with the
network everywhere we looked is the cheapest explanation there is; when none
does (a random table the network memorised), the search says so by abstaining."""

from __future__ import annotations

import time
from dataclasses import dataclass

from samecurve.api import CaseView, Program
from samecurve.registry import register
from samecurve.tools.base import ToolBase
from samecurve.tools.replace.dsl import (
    MIN_QUERIES,
    Candidate,
    Queried,
    finish,
    query_domain,
    query_room,
    search_grid,
    search_image,
    search_sequence,
)


def search_queried(view: CaseView, q: Queried, max_size: int, tolerance: float,
                   reserve: float) -> Candidate:
    """Run the searcher of the view's domain kind on the fitting queries,
    stopping with `reserve` seconds of the budget left."""
    deadline = time.monotonic() + max(1.0, view.time_left() - reserve)
    d = view.domain
    if d.kind == "grid":
        return search_grid(q.fit_x[0], q.fit_y[0], d, max_size=max_size, tolerance=tolerance,
                           deadline=deadline)
    if d.kind == "sequence":
        return search_sequence(q.fit_x, q.fit_y, d, tolerance=tolerance, deadline=deadline)
    return search_image(q.fit_x[0], q.fit_y[0], d, tolerance=tolerance, deadline=deadline)


@register("tool", "enumerative")
@dataclass(frozen=True)
class Enumerative(ToolBase):
    """Black-box program search over a small DSL. Grid: integer expressions of a
    and b (+ - * // % abs squares, small constants, the modulus, data-proposed
    centres) with threshold, residue, value-set and quadratic-residue rules, and
    and/or of two. Sequence: scans s = g(s, x) with a label h(s, previous s, x).
    Image (needs the clean images: they cannot be sampled): a threshold on one
    pixel statistic or on the difference of two. Cannot express anything outside
    that grammar (nested loops, lookups, multi-class image rules); there it
    abstains, as on incompressible tables."""

    kind = "black-box"
    needs = frozenset({"clean_data"})  # images only; grid and sequences are sampled
    answers = frozenset({"replace"})

    queries: int = 4000  # inputs to ask about (cut to the budget), a fifth held back
    max_size: int = 5  # bottom-up expression size (AST nodes) before separable combinations
    tolerance: float = 0.002  # programs this close to the best agreement tie; smallest wins
    abstain_below: float = 0.9  # estimated agreement under which "no short program"
    reserve_seconds: float = 10.0  # left for the held-back check in the sandbox

    def distill(self, view: CaseView) -> Program:
        n = query_room(view, self.queries)
        if n < MIN_QUERIES:
            return Program(None, notes={"queries": float(view.meter.queries),
                                        "fidelity_estimate": 0.0})
        q = query_domain(view, n, view.rng(11))
        best = search_queried(view, q, self.max_size, self.tolerance, self.reserve_seconds)
        return finish(view, best.source, q, self.abstain_below,
                      {"fit_agreement": best.agreement})

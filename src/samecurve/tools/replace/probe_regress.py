"""Probe, then regress: read the network's representation (the input of its
`readout` layer) while querying, rank the enumerative DSL's candidate variables
(grid expressions, sequence scan states, image statistics) by how well a ridge
probe reads each one from that representation, and search for the program only
among the few best-read variables.

Why: white-box access narrows the program search to variables the network
demonstrably computes. A rule whose pieces are linearly present in the readout
input is found from a handful of candidates instead of thousands, and a program
built from them says how the network does its job, not only what it outputs."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import rankdata
from sklearn.linear_model import Ridge
from torch import nn

from samecurve.api import CaseView, Program
from samecurve.programs.domain import Domain
from samecurve.registry import register
from samecurve.tools.base import ToolBase
from samecurve.tools.replace.dsl import (
    MIN_QUERIES,
    Candidate,
    Expr,
    Feature,
    Queried,
    ask,
    finish,
    grid_expressions,
    image_features,
    query_domain,
    query_room,
    scan_features,
    scan_grammar,
    search_grid,
    search_image,
    search_sequence,
)


def readout_of(model: nn.Module) -> nn.Module:
    """The submodule named `readout` (the final linear layer of every replace arch)."""
    for name, module in model.named_modules():
        if name == "readout" or name.endswith(".readout"):
            return module
    raise ValueError("the model has no submodule named 'readout'; name the final nn.Linear "
                     "of a replace-subject architecture `readout`")


def reading_asker(view: CaseView):
    """An asker that also returns the readout layer's input for every queried
    input: (N, D) for grid and image, (N, L, D) for sequences. The hook is removed
    before returning, also after an error."""
    readout = readout_of(view.model)

    def asker(v: CaseView, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        seen: list[torch.Tensor] = []
        handle = readout.register_forward_pre_hook(
            lambda _m, args: seen.append(args[0].detach().float().cpu()))
        try:
            labels = ask(v, inputs)
        finally:
            handle.remove()
        return labels, torch.cat(seen).numpy() if seen else np.zeros((0, 0), np.float32)

    return asker


def readability(rep: np.ndarray, values: np.ndarray, alpha: float = 1.0,
                seed: int = 0) -> np.ndarray:
    """Held-out R^2 of a ridge probe from `rep` (N, D) to each column of `values`
    (N, M), each standardised (so the ranking does not depend on scale); columns
    that are constant on the probe's training half score 0."""
    n = len(rep)
    order = np.random.default_rng(seed).permutation(n)
    tr, te = order[: n // 2], order[n // 2 :]
    r_mean, r_std = rep[tr].mean(0), rep[tr].std(0) + 1e-8
    r = (rep - r_mean) / r_std
    v = values.astype(np.float64)
    mean, std = v[tr].mean(0), v[tr].std(0)
    ok = std > 1e-9
    z = (v - mean) / np.where(ok, std, 1.0)
    probe = Ridge(alpha=alpha, fit_intercept=True).fit(r[tr], z[tr])
    pred = probe.predict(r[te]).reshape(len(te), -1)
    sse = ((pred - z[te]) ** 2).sum(0)
    sst = ((z[te] - z[te].mean(0)) ** 2).sum(0)
    r2 = 1.0 - sse / np.where(sst > 0, sst, 1.0)
    return np.where(ok & (sst > 0), r2, 0.0)


@dataclass(frozen=True)
class Readable:
    """A candidate variable and how well the representation reads it."""

    code: str
    r2: float


def _ranked(rep: np.ndarray, items: list, values: list[np.ndarray], seed: int,
            chunk: int = 2000) -> list[tuple[float, int]]:
    """Candidates by readability, best first: the better of the probe's R^2 for
    the values and for their ranks (a threshold rule depends only on the order, and
    a representation may hold a monotone transform of the variable, such as a
    distance where the rule thresholds its square)."""
    scores: list[tuple[float, int]] = []
    for i in range(0, len(values), chunk):
        block = np.stack(values[i : i + chunk], 1)
        raw = readability(rep, block, seed=seed)
        ranks = readability(rep, rankdata(block, axis=0), seed=seed)
        for j, s in enumerate(np.maximum(raw, ranks)):
            scores.append((float(s), i + j))
    scores.sort(key=lambda t: (-t[0], t[1]))
    return scores


def shortlist(scores: list[tuple[float, int]], keep: int, margin: float,
              most: int = 200) -> list[tuple[float, int]]:
    """The `keep` best read, and every other candidate the probe cannot tell from
    the best (within `margin` of its R^2), up to `most`: on a saturated
    representation near-equivalent variables score within noise of each other."""
    if not scores:
        return []
    floor = scores[0][0] - margin
    n = max(keep, sum(1 for s, _ in scores if s >= floor))
    return scores[: min(n, most)]


def probe_grid(q: Queried, domain: Domain, keep: int, margin: float, max_size: int, seed: int,
               deadline: float | None) -> tuple[list[Readable], Candidate]:
    x, y, rep = q.fit_x[0], q.fit_y[0], q.fit_r[0]
    exprs = list(grid_expressions(x, domain.vocab, y, max_size=max_size, deadline=deadline))
    ranked = shortlist(_ranked(rep, exprs, [e.values for e in exprs], seed), keep, margin)
    top: list[Expr] = [exprs[i] for _, i in ranked]
    best = search_grid(x, y, domain, exprs=top, deadline=deadline)
    return [Readable(exprs[i].code, s) for s, i in ranked], best


def probe_sequence(q: Queried, domain: Domain, keep: int, margin: float, seed: int,
                   deadline: float | None) -> tuple[list[Readable], Candidate]:
    rep = np.concatenate([r.reshape(-1, r.shape[-1]) for r in q.fit_r])
    scans = scan_grammar(domain.vocab)
    items, values = [], []
    for scan in scans:
        for name, v in scan_features(scan, q.fit_x):
            if name in ("s", "p"):  # the state itself is the variable a probe looks for
                items.append((scan, name))
                values.append(v)
    ranked = shortlist(_ranked(rep, items, values, seed), keep, margin)
    chosen = []
    for _, i in ranked:
        if items[i][0] not in chosen:
            chosen.append(items[i][0])
    best = search_sequence(q.fit_x, q.fit_y, domain, scans=chosen, deadline=deadline)
    names = [Readable(f"{items[i][1]} of s = {items[i][0].g}", s) for s, i in ranked]
    return names, best


def probe_image(q: Queried, domain: Domain, keep: int, margin: float, seed: int,
                deadline: float | None) -> tuple[list[Readable], Candidate]:
    feats = image_features(q.fit_x[0])
    ranked = shortlist(_ranked(q.fit_r[0], feats, [f.values for f in feats], seed), keep,
                       margin)
    top: list[Feature] = [feats[i] for _, i in ranked]
    best = search_image(q.fit_x[0], q.fit_y[0], domain, features=top, deadline=deadline)
    return [Readable(feats[i].name, s) for s, i in ranked], best


@register("tool", "probe-and-regress")
@dataclass(frozen=True)
class ProbeAndRegress(ToolBase):
    """White-box: probes the readout input for the enumerative DSL's variables and
    regresses the output on the `keep` best read (the enumerative searcher
    restricted to them). Reads weights (a forward hook); needs the clean images
    for the image domain. Cannot find a variable the representation holds only
    non-linearly (a modular sum stored as its Fourier features reads poorly as a
    number), nor one outside the DSL."""

    kind = "interpretability"
    needs = frozenset({"weights", "clean_data"})
    answers = frozenset({"replace"})

    queries: int = 4000
    keep: int = 12  # readable variables the regression may use (at least)
    margin: float = 0.03  # and any read within this R^2 of the best (up to 200)
    max_size: int = 5
    abstain_below: float = 0.9
    reserve_seconds: float = 10.0

    def probe(self, view: CaseView, n: int) -> tuple[list[Readable], Candidate, Queried]:
        """Query n inputs reading the representation, rank the candidates, search."""
        q = query_domain(view, n, view.rng(19), asker=reading_asker(view))
        deadline = time.monotonic() + max(1.0, view.time_left() - self.reserve_seconds)
        d, seed = view.domain, int(view.seed)
        if d.kind == "grid":
            ranked, best = probe_grid(q, d, self.keep, self.margin, self.max_size, seed,
                                      deadline)
        elif d.kind == "sequence":
            ranked, best = probe_sequence(q, d, self.keep, self.margin, seed, deadline)
        else:
            ranked, best = probe_image(q, d, self.keep, self.margin, seed, deadline)
        return ranked, best, q

    def distill(self, view: CaseView) -> Program:
        n = query_room(view, self.queries)
        if n < MIN_QUERIES:
            return Program(None, notes={"queries": float(view.meter.queries),
                                        "fidelity_estimate": 0.0})
        ranked, best, q = self.probe(view, n)
        notes = {"fit_agreement": best.agreement,
                 "top_readability": ranked[0].r2 if ranked else 0.0}
        return finish(view, best.source, q, self.abstain_below, notes)

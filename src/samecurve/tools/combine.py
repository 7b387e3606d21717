"""Combinations of tools, graded like any tool. An ensemble runs its members on
the same case (sharing its budget) and pools their answers; a pipeline runs its
stages in turn, each seeing the previous stage's finding as `view.prior`. In a
suite, `ensemble(neural-cleanse, strip)` is shorthand for `{name: ensemble,
params: {members: [...]}}` and `integrated-gradients>neural-cleanse` for
`{name: pipeline, params: {stages: [...]}}`."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from samecurve.api import CaseView, Finding, Program, Trigger, tool_modalities, tool_verbs
from samecurve.programs.domain import query
from samecurve.programs.sandbox import ProgramFailed, run_program
from samecurve.programs.source import ProgramRejected, program_size
from samecurve.registry import get, register
from samecurve.tools.anomaly import high_side_anomaly, index_to_probability
from samecurve.tools.base import ToolBase, clean_inputs

ENSEMBLE_SHORTHAND = re.compile(r"^\s*ensemble\s*\((?P<members>[^()]*)\)\s*$")


# Verbs only a pipeline's last stage may have: it acts on what the earlier stages found.
ACTING_VERBS = frozenset({"edit", "predict"})


def parse_ensemble(text: str) -> tuple[str, ...] | None:
    """Member names of `ensemble(a, b, ...)`, or None when the text is not one."""
    match = ENSEMBLE_SHORTHAND.match(text)
    if match is None:
        return None
    return tuple(m.strip() for m in match["members"].split(",") if m.strip())


def parse_pipeline(text: str) -> tuple[str, ...] | None:
    """Stages of `a>b>...` (a stage may be an `ensemble(...)`), or None when the text
    is not one."""
    stages, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == ">" and depth == 0:
            stages.append(text[start:i].strip())
            start = i + 1
    if not stages:
        return None
    return (*stages, text[start:].strip())


def borda(rankings: list[tuple[int, ...]], num_classes: int) -> tuple[int, ...]:
    """Classes ordered by summed rank points (first of k gets k points, unranked 0);
    ties keep the lower class first."""
    points = np.zeros(num_classes)
    for ranking in rankings:
        for place, c in enumerate(ranking):
            points[c] += len(ranking) - place
    ranked = [c for c in np.argsort(-points, kind="stable") if points[c] > 0]
    return tuple(int(c) for c in ranked)


def shared_modalities(tools: Sequence[Any]) -> frozenset[str]:
    """A combination handles the inputs every one of its parts handles."""
    return frozenset.intersection(*(tool_modalities(t) for t in tools))


def blind_to_all(tools: Sequence[Any]) -> frozenset[str]:
    """A combination is outside its design only where every part is."""
    return frozenset.intersection(*(frozenset(t.blind_to) for t in tools))


@register("tool", "ensemble")
@dataclass(frozen=True)
class Ensemble(ToolBase):
    """Mean trojan probability of the members that answer it, a Borda count of their
    suspected targets, the first member's recovered trigger, and the mean of their
    attribution maps (each scaled to a maximum of 1). Distillers form a portfolio:
    each member's program is checked against the network on fresh inputs and the
    most faithful (then the shortest) is kept. Needs, answers and verbs are the
    union of the members'."""

    kind = "combination"
    members: tuple[str, ...] = ("strip", "activation-clustering")

    def __post_init__(self) -> None:
        members = tuple(self.members)
        tools = _member_tools(members, "ensemble")
        object.__setattr__(self, "members", members)
        # Per instance: what the case must provide and what is graded depend on the members.
        object.__setattr__(self, "needs", frozenset().union(*(t.needs for t in tools)))
        object.__setattr__(self, "answers", frozenset().union(*(t.answers for t in tools)))
        object.__setattr__(self, "verbs", frozenset().union(*(tool_verbs(t) for t in tools)))
        object.__setattr__(self, "blind_to", blind_to_all(tools))
        object.__setattr__(self, "modalities", shared_modalities(tools))
        object.__setattr__(self, "_tools", tools)

    def params(self) -> dict[str, Any]:
        return {"members": list(self.members)}

    def distill(self, view: CaseView) -> Program:
        """The member program that agrees most with the network on fresh inputs."""
        programs = [t.distill(view) for t in self._tools if "distill" in tool_verbs(t)]
        answered = [p for p in programs if not p.abstains]
        if not answered:
            return Program(None, notes={"members_answering": 0.0})
        checks = portfolio_inputs(view)
        scored = []
        for i, p in enumerate(answered):
            try:
                fid = float(np.mean([np.mean(run_program(p, view.domain, x).values == y)
                                     for x, y in checks])) if checks else 0.0
            except (ProgramRejected, ProgramFailed):
                continue
            scored.append((-fid, program_size(p.source or ""), i, p))
        if not scored:
            return Program(None, notes={"members_answering": float(len(answered))})
        fid, _, _, best = min(scored, key=lambda s: s[:3])
        return Program(best.source, best.entry, {**best.notes, "portfolio_fidelity": -fid,
                                                 "members_answering": float(len(answered))})

    def discover(self, view: CaseView) -> Finding:
        found = [t.discover(view) for t in self._tools if hasattr(t, "discover")]
        probs = [f.trojan_probability for f in found if f.trojan_probability is not None]
        rankings = [f.targets for f in found if f.targets]
        trigger = next((f.trigger for f in found if f.trigger is not None), None)
        return Finding(
            trojan_probability=float(np.mean(probs)) if probs else None,
            targets=borda(rankings, view.num_classes) if rankings else (),
            trigger=trigger,
            notes={"members_answering": float(len(probs))},
        )

    def attribute(self, view: CaseView, inputs: torch.Tensor, targets: torch.Tensor) -> np.ndarray | None:
        maps = []
        for t in self._tools:
            if "attribution" in t.answers and hasattr(t, "attribute"):
                m = t.attribute(view, inputs, targets)
                if m is not None:
                    m = np.abs(np.asarray(m, dtype=np.float32))
                    peak = m.reshape(len(m), -1).max(1).reshape(-1, *([1] * (m.ndim - 1)))
                    maps.append(m / np.maximum(peak, 1e-12))
        return np.mean(maps, axis=0) if maps else None


def portfolio_inputs(view: CaseView, n: int = 1000) -> list[tuple[np.ndarray, np.ndarray]]:
    """Fresh inputs (and longer sequences) with the network's labels, to tell the
    members' programs apart; images come from the case's clean data, if any."""
    d, rng = view.domain, view.rng(11)
    if d.kind == "image":
        xs = [view.clean.x.numpy()[:n]] if view.clean is not None else []
    elif d.kind == "grid":
        xs = [d.sample(n, rng)]
    else:
        xs = [d.sample(n, rng, d.lengths[1]), d.sample(n // 4, rng, d.long_lengths[1])]
    return [(x, query(view.model, d, x, view.device)) for x in xs]


def _member_tools(names: tuple[str, ...], what: str) -> tuple[Any, ...]:
    """Instantiate the named tools of a combination, refusing nesting (except that a
    pipeline's stage may be an inline `ensemble(...)`)."""
    if len(names) < 2:
        raise ValueError(f"a {what} needs two or more tools, got {list(names)}")
    inline = [parse_ensemble(n) if what == "pipeline" else None for n in names]
    nested = [n for n, e in zip(names, inline, strict=True)
              if e is None and (n in ("ensemble", "pipeline") or not n or "(" in n or ">" in n)]
    if nested:
        raise ValueError(f"a {what} cannot contain {nested[0]!r}; list registered tools directly")
    return tuple(
        Ensemble(members=e) if e is not None else get("tool", n)()
        for n, e in zip(names, inline, strict=True)
    )


@register("tool", "pipeline")
@dataclass(frozen=True)
class Pipeline(ToolBase):
    """Stages run in turn; each sees the previous finding as `view.prior` and its
    answers override the previous ones where it gives any. An attribution-only
    stage (no `discover`) turns into a finding by `attribution_prior`: where its
    maps concentrate on the training sample. Needs and answers are the union.
    When the last stage acts (edits or predicts), the stages before it get at most
    `find_share` of the case's time: a search that spends all it is given (hotflip
    on MiniLM took 58 of 60 s) would otherwise leave the repair nothing to run in."""

    kind = "combination"
    stages: tuple[str, ...] = ("integrated-gradients", "neural-cleanse")
    find_share: float = 0.5

    def __post_init__(self) -> None:
        if not 0 < self.find_share <= 1:
            raise ValueError(f"find_share must be in (0, 1] (the finding stages' share of the "
                             f"time when the last stage acts), got {self.find_share}")
        stages = tuple(self.stages)
        tools = _member_tools(stages, "pipeline")
        needs = frozenset().union(*(t.needs for t in tools))
        if any(not hasattr(t, "discover") for t in tools):
            needs |= {"clean_data", "train_data"}  # what attribution_prior looks at
        acting = sorted(tool_verbs(tools[-1]) & ACTING_VERBS)
        if acting:  # discover > ... > edit (a repair chain) or > predict (a rule from a finding)
            early = [s for s, t in zip(stages, tools[:-1], strict=False)
                     if not tool_verbs(t) & {"discover", "attribute"}]
            if early:
                raise ValueError(f"a pipeline's stages before the last must discover or attribute; "
                                 f"{early[0]!r} does neither (only the last stage may "
                                 f"{' or '.join(sorted(ACTING_VERBS))})")
            answers, verbs = frozenset(tools[-1].answers), frozenset(acting)
        else:
            answers = frozenset().union(*(t.answers for t in tools))
            verbs = frozenset({"discover", "attribute"})
        object.__setattr__(self, "stages", stages)
        object.__setattr__(self, "needs", needs)
        object.__setattr__(self, "answers", answers)
        object.__setattr__(self, "verbs", verbs)
        object.__setattr__(self, "blind_to", blind_to_all(tools))
        object.__setattr__(self, "modalities", shared_modalities(tools))
        object.__setattr__(self, "_tools", tools)

    def params(self) -> dict[str, Any]:
        return {"stages": list(self.stages), "find_share": self.find_share}

    def edit(self, view: CaseView) -> nn.Module:
        """The last stage repairs, starting from what the others found."""
        return self._act("edit", view)

    def predict(self, view: CaseView) -> Any:
        """The last stage builds a Predictor, starting from what the others found."""
        return self._act("predict", view)

    def _act(self, verb: str, view: CaseView) -> Any:
        if verb not in self.verbs:
            raise TypeError(f"pipeline {'>'.join(self.stages)} ends in no {verb} tool")
        found = self._find(view.time_share(self.find_share), self._tools[:-1])
        return getattr(self._tools[-1], verb)(replace(view, prior=found))

    def discover(self, view: CaseView) -> Finding:
        return self._find(view, self._tools)

    @staticmethod
    def _find(view: CaseView, tools: Sequence[Any]) -> Finding:
        found: Finding | None = None
        notes: dict[str, float] = {}
        for i, tool in enumerate(tools):
            stage_view = replace(view, prior=found)
            f = tool.discover(stage_view) if hasattr(tool, "discover") else attribution_prior(tool, stage_view)
            notes.update({f"{i}.{k}": v for k, v in f.notes.items()})
            found = f if found is None else Finding(
                trojan_probability=f.trojan_probability if f.trojan_probability is not None
                else found.trojan_probability,
                targets=f.targets or found.targets,
                trigger=f.trigger if f.trigger is not None else found.trigger,
            )
        assert found is not None
        return replace(found, notes=notes)

    def attribute(self, view: CaseView, inputs: torch.Tensor, targets: torch.Tensor) -> np.ndarray | None:
        for t in reversed(self._tools):
            if "attribution" in t.answers and hasattr(t, "attribute"):
                return t.attribute(view, inputs, targets)
        return None


def attribution_prior(tool: Any, view: CaseView) -> Finding:
    """Where an attribution tool looks, turned into a finding. Attribute each input of
    the training sample (poisoned inputs hide there) towards the class the model gives
    it and mark the 3x3 spot around each map's peak; rank classes by the largest
    excess, over all inputs, of the share of their inputs whose spot covers a pixel.
    Poisoned inputs of a fixed-place trigger all peak on it (measured: 97-100% of
    saliency peaks of triggered inputs fall in a 12-pixel footprint, 3-6% of clean
    inputs'); objects at random places spread their peaks. The trigger is that
    excess map as a mask over the class's mean input."""
    x = view.train_sample.x.to(view.device) if view.train_sample is not None else clean_inputs(view)
    with torch.no_grad():
        pred = torch.cat([view.model(x[i : i + 128]).argmax(1) for i in range(0, len(x), 128)])
    maps = np.abs(np.asarray(tool.attribute(view, x, pred), dtype=np.float64))
    maps = maps.sum(1) if maps.ndim == 4 else maps
    # Each input's hot spot: the 3x3 neighbourhood of its map's peak.
    flat = maps.reshape(len(maps), -1)
    peak = np.zeros_like(flat)
    peak[np.arange(len(flat)), flat.argmax(1)] = 1.0
    hot = F.max_pool2d(torch.from_numpy(peak.reshape(maps.shape))[:, None], 3, 1, 1)[:, 0].numpy()
    pred_np = pred.cpu().numpy()
    k = view.num_classes
    everyone = hot.mean(0)
    concentration = np.zeros(k)
    mean_maps = np.zeros((k, *maps.shape[1:]))
    for c in range(k):
        if (pred_np == c).sum() < 2:
            continue
        # How often this class's inputs look at each pixel, beyond how often all do.
        mean_maps[c] = np.clip(hot[pred_np == c].mean(0) - everyone, 0, None)
        concentration[c] = mean_maps[c].max()
    index = high_side_anomaly(concentration)
    order = tuple(int(c) for c in np.argsort(-concentration, kind="stable"))
    target = order[0]
    region = mean_maps[target]
    region = (region - region.min()) / max(region.max() - region.min(), 1e-12)
    chosen = torch.from_numpy(pred_np == target).to(x.device)
    pattern = (x[chosen] if chosen.any() else x).mean(0).cpu().numpy()
    return Finding(
        trojan_probability=index_to_probability(float(index[target])),
        targets=order,
        trigger=Trigger(mask=region.astype(np.float32), pattern=pattern.astype(np.float32)),
        notes={"concentration": float(concentration[target])},
    )

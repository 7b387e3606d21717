"""From stored cells to a leaderboard: per tool and metric, the mean over
subjects (seeds averaged within a subject first) with a 95% bootstrap CI, N and
the chance level; population metrics over trojaned and clean subjects together;
paired comparisons on the same subjects."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import yaml

from samecurve.api import (
    CellResult,
    MetricSpec,
    card_classes,
    is_program_card,
    task_accepts,
    task_applies,
)
from samecurve.run.cell import cell_config
from samecurve.run.stats import (
    Interval,
    PairedComparison,
    auroc_ci,
    mean_ci,
    paired_auroc_difference,
    paired_difference,
    stratified_ci,
)
from samecurve.run.store import Store
from samecurve.run.suite import Suite, make_task, make_tool
from samecurve.tasks.discover import LABEL, PROBABILITY

NAN = float("nan")


@dataclass(frozen=True)
class ToolSummary:
    tool: str
    kind: str
    answers: frozenset[str]
    intervals: dict[str, Interval]  # only metrics of questions the tool answers
    n_ok: int
    n_error: int
    n_timeout: int
    seconds_mean: float
    queries_mean: float
    outside_design: bool = False  # the board's family is one the tool's algorithm is blind to
    grad_steps_mean: float = NAN


@dataclass(frozen=True)
class Board:
    """One task's leaderboard over one slice of subjects (all, or one family)."""

    task: str
    family: str
    metrics: tuple[MetricSpec, ...]
    rows: list[ToolSummary]
    chance: dict[str, float]


@dataclass(frozen=True)
class RunData:
    """A run as the report sees it: the suite, its subjects' cards, its current cells."""

    suite: Suite
    cards: dict[str, dict]
    arrays: dict[str, dict[str, np.ndarray]]
    cells: dict[tuple[str, str], list[CellResult]]  # (task, tool) -> cells
    meta: dict[str, str]


def load_run(store: Store, with_artifacts: bool = False) -> RunData:
    """Read a run folder, keeping only cells that match its suite's current config."""
    meta = store.meta()
    if "suite" not in meta:
        raise ValueError(f"{store.folder} holds no samecurve run; run `samecurve run` into it first")
    suite = Suite.model_validate(yaml.safe_load(meta["suite"]))
    wanted_ids = {s.id for s in suite.subject_specs()}
    references = suite.reference_tag()
    configs = {
        (t.name, u.display): cell_config(t, u, references) for t in suite.tasks for u in suite.tools
    }
    subjects = store.subjects()
    cells: dict[tuple[str, str], list[CellResult]] = defaultdict(list)
    for config, cell in store.cells(with_artifacts=with_artifacts):
        k = cell.key
        if configs.get((k.task, k.tool)) == config and k.subject in wanted_ids:
            cells[(k.task, k.tool)].append(cell)
    return RunData(
        suite=suite,
        cards={i: c for i, (c, _) in subjects.items() if i in wanted_ids},
        arrays={i: a for i, (_, a) in subjects.items() if i in wanted_ids},
        cells=dict(cells),
        meta=meta,
    )


def per_subject(cells: Sequence[CellResult], metric: str) -> dict[str, float]:
    """Mean of a metric over seeds, per subject (subjects without the metric left out)."""
    acc: dict[str, list[float]] = defaultdict(list)
    for c in cells:
        v = c.metrics.get(metric)
        if v is not None and np.isfinite(v):
            acc[c.key.subject].append(float(v))
    return {s: float(np.mean(v)) for s, v in acc.items()}


def summarise_tool(
    task: Any, tool: Any, display: str, cells: Sequence[CellResult], subjects: set[str],
    family: str | None = None,
) -> ToolSummary:
    cells = [c for c in cells if c.key.subject in subjects]
    intervals: dict[str, Interval] = {}
    probs, labels = per_subject(cells, PROBABILITY), per_subject(cells, LABEL)
    ids = sorted(probs)
    for spec in task.metrics:
        if spec.question not in tool.answers:
            continue
        if spec.population:
            s = np.array([probs[i] for i in ids])
            y = np.array([int(labels[i]) for i in ids])
            if spec.name == "auroc":
                intervals[spec.name] = auroc_ci(s, y)
            else:
                batched = getattr(task, "population_batched", lambda _m: None)(spec.name)
                intervals[spec.name] = stratified_ci(
                    lambda a, b, m=spec.name: task.population(m, a, b), s, y, batched=batched
                )
        else:
            intervals[spec.name] = mean_ci(list(per_subject(cells, spec.name).values()))
    status = [c.status for c in cells]
    return ToolSummary(
        tool=display,
        kind=tool.kind,
        answers=frozenset(tool.answers),
        intervals=intervals,
        n_ok=status.count("ok"),
        n_error=status.count("error"),
        n_timeout=status.count("timeout"),
        seconds_mean=float(np.mean([c.seconds for c in cells])) if cells else NAN,
        queries_mean=float(np.mean([c.queries for c in cells])) if cells else NAN,
        outside_design=family in getattr(tool, "blind_to", frozenset()),
        grad_steps_mean=float(np.mean([c.grad_steps for c in cells])) if cells else NAN,
    )


def _order(rows: list[ToolSummary], metrics: Sequence[MetricSpec]) -> list[ToolSummary]:
    """Oracles first (never ranked), then by the first metric a tool attempts."""

    def key(r: ToolSummary) -> tuple:
        for m in metrics:
            if m.name in r.intervals and np.isfinite(r.intervals[m.name].mean):
                v = r.intervals[m.name].mean
                return (r.kind != "oracle", metrics.index(m), -v if m.higher_is_better else v)
        return (r.kind != "oracle", len(metrics), 0.0)

    return sorted(rows, key=key)


def boards(run: RunData) -> list[Board]:
    """The overall board of every task, then one per trojan family (that family's
    trojaned subjects against the clean ones of the same dataset), heldout-trigger
    subjects on boards of their own; with several datasets (tracks), one per
    dataset and family."""
    out: list[Board] = []
    # Tracks are the image datasets; hidden-program families are boards of their own.
    image_sets = {c["dataset"] for c in run.cards.values() if not is_program_card(c)}
    tracks = len(image_sets) > 1
    slices: list[tuple[str, set[str], str | None]] = [("all", set(run.cards), None)]
    groups: dict[str, set[str]] = defaultdict(set)
    for i, c in run.cards.items():
        groups[family_label(c, tracks)].add(i)
    if tracks:
        for d in sorted(image_sets):
            slices.append(
                (f"all · {d}", {i for i, c in run.cards.items() if c["dataset"] == d}, None)
            )
    for label in sorted(groups):
        card = run.cards[next(iter(groups[label]))]
        if card["family"] != "clean":
            twins = family_label({**card, "family": "clean", "recipe_params": {}}, tracks)
            slices.append((label, groups[label] | groups.get(twins, set()), card["family"]))
    for entry in run.suite.tasks:
        task = make_task(entry)
        tools = [(t, tool) for t in run.suite.tools if task_accepts(task, tool := make_tool(t))]
        graded = {i for i, c in run.cards.items() if task_applies(task, c)}
        for label, subjects, family in slices:
            subjects = subjects & graded
            if not subjects or (
                family is not None and all(run.cards[i]["family"] != family for i in subjects)
            ):
                continue  # a task that grades no subject of this family has no board for it
            rows = [
                summarise_tool(
                    task, tool, t.display, run.cells.get((entry.name, t.display), []),
                    subjects, family,
                )
                for t, tool in tools
            ]
            out.append(
                Board(
                    task=entry.name,
                    family=label,
                    metrics=task.metrics,
                    rows=_order(rows, task.metrics),
                    chance=chance_levels(task, rows, run, subjects),
                )
            )
    return out


def family_label(card: dict, tracks: bool) -> str:
    """A board's name: the family, "heldout" when its triggers come from the heldout
    vocabulary (so tuned-on and never-seen triggers are read apart), the dataset
    when a run has several."""
    label = card["family"]
    if is_program_card(card):
        return label
    if card.get("recipe_params", {}).get("heldout"):
        label += " · heldout"
    return f"{label} · {card['dataset']}" if tracks else label


def chance_levels(
    task: Any, rows: list[ToolSummary], run: RunData, subjects: set[str]
) -> dict[str, float]:
    """Analytic chance where it exists (averaged over the subjects, whose label counts
    differ among hidden-program networks); otherwise what the task's chance tool
    (`random`; `random-prune` for edits) measured."""
    labels = [int(run.cards[i]["answer_key"]["trojaned"]) for i in subjects]
    ks = [k for k in (card_classes(run.cards[i]) for i in sorted(subjects)) if k]
    chance_tool = getattr(task, "chance_tool", "random")
    random_row = next((r for r in rows if r.tool == chance_tool), None)
    out = {}
    for spec in task.metrics:
        v = float(np.mean([task.chance(spec.name, labels, k) for k in ks])) if ks else NAN
        if not np.isfinite(v) and random_row and spec.name in random_row.intervals:
            v = random_row.intervals[spec.name].mean
        out[spec.name] = v
    return out


def compare(
    run: RunData, task: str, tool_a: str, tool_b: str, metric: str, subjects: set[str] | None = None
) -> PairedComparison:
    """Tool a minus tool b on the same subjects (paired)."""
    entry = next((t for t in run.suite.tasks if t.name == task), None)
    if entry is None:
        raise ValueError(f"no task {task!r} in this run")
    metrics = make_task(entry).metrics
    spec = next((m for m in metrics if m.name == metric), None)
    if spec is None:
        names = ", ".join(m.name for m in metrics)
        raise ValueError(f"task {task!r} has no metric {metric!r}; use one of {names}")
    subjects = subjects if subjects is not None else set(run.cards)
    ca = [c for c in run.cells.get((task, tool_a), []) if c.key.subject in subjects]
    cb = [c for c in run.cells.get((task, tool_b), []) if c.key.subject in subjects]
    if spec.population:
        pa, pb, lab = per_subject(ca, PROBABILITY), per_subject(cb, PROBABILITY), per_subject(ca, LABEL)
        ids = sorted(set(pa) & set(pb))
        if metric != "auroc":
            raise ValueError(f"paired comparison of {metric} is not supported; use auroc")
        return paired_auroc_difference(
            [pa[i] for i in ids], [pb[i] for i in ids], [int(lab[i]) for i in ids]
        )
    va, vb = per_subject(ca, metric), per_subject(cb, metric)
    ids = sorted(set(va) & set(vb))
    return paired_difference([va[i] for i in ids], [vb[i] for i in ids])

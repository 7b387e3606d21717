"""One case of a real tool on a tiny subject, built the way the runner builds it:
the tests of every tool ask for their views and findings here."""

from __future__ import annotations

from typing import Any

from samecurve.api import Budget, CaseView, Finding, Meter, QueryOnly
from samecurve.registry import get
from samecurve.run.cell import CellJob, attach_meter, build_view
from samecurve.run.suite import TaskEntry, ToolEntry, make_task
from samecurve.zoo.builder import clean_split
from samecurve.zoo.train import predict


def case_view(tool: Any, subject: Any, cache: Any, references: tuple[str, ...] = (),
              seed: int = 0, seconds: float = 60, task: str = "discover") -> CaseView:
    """The view the runner would give `tool` on `subject` in `task` (references by
    subject id), with the runner's meter on its model."""
    entry = TaskEntry(name=task)
    job = CellJob(entry, ToolEntry(name=tool.name), subject.id, seed,
                  Budget(seconds=seconds), "cpu", str(cache.root), references)
    view = build_view(job, make_task(entry), tool, subject, Meter(job.budget))
    attach_meter(QueryOnly.unwrap(view.model), view.meter)
    return view


def discover(name: str, subject: Any, cache: Any, **params: Any) -> Finding:
    """A registered tool's finding on a subject, with these hyperparameters."""
    tool = get("tool", name)(**params)
    return tool.discover(case_view(tool, subject, cache))


def patch_findings(name: str, population: list, cache: Any) -> dict[str, tuple[Any, Finding]]:
    """A tool's finding on every patch subject of the tiny population, by subject id."""
    return {s.id: (s, discover(name, s, cache)) for s in population if s.family == "patch"}


def ranked_first(findings: dict[str, tuple[Any, Finding]]) -> list[tuple[Any, Finding]]:
    """The (subject, finding) pairs whose finding ranks the planted target first."""
    return [(s, f) for s, f in findings.values() if f.targets[0] == s.answer_key.target]


def hit_rate(subject: Any, stamp: Any = None, n: int = 256) -> float:
    """Share of held-out inputs of other classes than the subject's target that the
    model sends to the target, stamped with `stamp` (None: as they are)."""
    target = subject.answer_key.target
    held = clean_split(subject, "heldout", n)
    x = held.x[held.y != target]
    return (predict(subject.model, x if stamp is None else stamp.stamp(x)) == target).float().mean().item()

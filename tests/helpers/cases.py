"""One case of a real tool on a tiny subject, built the way the runner builds it:
the tests of every tool ask for their views and findings here."""

from __future__ import annotations

from typing import Any

from samecurve.api import Budget, CaseView, Finding, Meter
from samecurve.registry import get
from samecurve.run.cell import CellJob, build_view
from samecurve.run.suite import TaskEntry, ToolEntry, make_task


def case_view(tool: Any, subject: Any, cache: Any, references: tuple[str, ...] = (),
              seed: int = 0, seconds: float = 60) -> CaseView:
    """The view the runner would give `tool` on `subject` (references by subject id)."""
    task = make_task(TaskEntry(name="discover"))
    job = CellJob(TaskEntry(name="discover"), ToolEntry(name=tool.name), subject.id, seed,
                  Budget(seconds=seconds), "cpu", str(cache.root), references)
    return build_view(job, task, tool, subject, Meter(job.budget))


def discover(name: str, subject: Any, cache: Any, **params: Any) -> Finding:
    """A registered tool's finding on a subject, with these hyperparameters."""
    tool = get("tool", name)(**params)
    return tool.discover(case_view(tool, subject, cache))

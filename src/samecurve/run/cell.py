"""Running one cell: give the tool a metered copy of the model and only the data
it declared, call the task, and turn any failure into a floor-scored row."""

from __future__ import annotations

import copy
import hashlib
import json
import time
import traceback
from dataclasses import asdict, dataclass, is_dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from torch import nn

from samecurve.api import (
    Budget,
    BudgetExceeded,
    CaseView,
    CellKey,
    CellResult,
    Meter,
    QueryOnly,
    ReferenceModel,
    Subject,
    card_modality,
    is_program_card,
)
from samecurve.programs.domain import Domain
from samecurve.run.suite import TaskEntry, ToolEntry, make_task, make_tool
from samecurve.zoo.cache import Cache
from samecurve.zoo.seeding import derive

GRACE_SECONDS = 1.0  # a tool that returns this long after its budget has overrun it


def attach_meter(model: nn.Module, meter: Meter) -> list[Any]:
    """Count queries (inputs through the model) and gradient steps (backward passes)."""

    def before(_module: nn.Module, args: tuple) -> None:
        meter.count_queries(int(args[0].shape[0]) if args and hasattr(args[0], "shape") else 1)

    def after(_module: nn.Module, _args: tuple, output: Any) -> None:
        if isinstance(output, torch.Tensor) and output.requires_grad:
            output.register_hook(lambda g: (meter.count_grad_step(), g)[1])

    return [model.register_forward_pre_hook(before), model.register_forward_hook(after)]


def cell_config(task: TaskEntry, tool: ToolEntry, references: str = "") -> str:
    """Hash of everything that defines a cell's computation beside subject and seed,
    with defaults filled in, so changing a hyperparameter never reuses stale rows.
    `references` (Suite.reference_tag) counts only for tools that learn from
    reference models, so changing them re-runs those tools and no others."""
    task_obj, tool_obj = make_task(task), make_tool(tool)
    blob = {
        "task": task.name,
        "task_version": task_obj.version,
        "task_params": _params(task_obj),
        "tool": tool.name,
        "tool_params": _params(tool_obj),
    }
    if "references" in tool_obj.needs:
        blob["references"] = references
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _params(obj: Any) -> dict:
    return asdict(obj) if is_dataclass(obj) else {}


@dataclass(frozen=True)
class CellJob:
    task: TaskEntry
    tool: ToolEntry
    subject: str
    seed: int
    budget: Budget
    device: str
    cache_root: str
    references: tuple[str, ...] = ()
    support: tuple[str, ...] = ()  # ids of the task's own grader models (cached)

    @property
    def key(self) -> CellKey:
        return CellKey(self.task.name, self.tool.display, self.subject, self.seed)


def case_seed(seed: int, subject_id: str) -> int:
    """The seed a tool sees: fixed by (run seed, subject), so a tool is deterministic
    in a cell yet does not draw the same guess on every subject."""
    return derive(seed, subject_id) % 2**31


@lru_cache(maxsize=256)
def load_subject(cache_root: str, subject_id: str) -> Subject:
    """Subjects are read once per worker process and shared by its cells."""
    return Cache(cache_root).load(subject_id)


def build_view(job: CellJob, task: Any, tool: Any, subject: Subject, meter: Meter) -> CaseView:
    needs = tool.needs
    model = copy.deepcopy(subject.model).to(job.device).eval()
    white_box = bool({"weights", "gradients"} & needs)
    references: tuple[ReferenceModel, ...] = ()
    if "references" in needs:
        references = tuple(
            ReferenceModel(
                model=load_subject(job.cache_root, r).model,
                trojaned=load_subject(job.cache_root, r).answer_key.trojaned,
            )
            for r in job.references
        )
    data = task.view_data(subject, needs)
    return CaseView(
        model=model if white_box else QueryOnly(model),
        num_classes=subject.num_classes,
        input_shape=subject.input_shape,
        clean=data["clean"],
        train_sample=data["train_sample"],
        references=references,
        budget=job.budget,
        seed=case_seed(job.seed, job.subject),
        device=job.device,
        meter=meter,
        answer_key=subject.answer_key if "answer_key" in needs else None,
        domain=Domain.from_dict(subject.card["domain"]) if is_program_card(subject.card) else None,
        modality=card_modality(subject.card),
    )


def execute(job: CellJob) -> CellResult:
    """Run one cell in this process. Tool failures become rows, never exceptions."""
    subject = load_subject(job.cache_root, job.subject)
    task, tool = make_task(job.task), make_tool(job.tool)
    meter = Meter(job.budget)
    status, error, metrics, artifacts = "ok", "", {}, {}
    handles: list[Any] = []
    try:
        view = build_view(job, task, tool, subject, meter)
        support = tuple(load_subject(job.cache_root, s) for s in job.support)
        inner = QueryOnly.unwrap(view.model)
        handles = attach_meter(inner, meter)
        meter.started = time.monotonic()  # data preparation is not the tool's time
        torch.manual_seed(view.seed)
        np.random.seed(view.seed)
        metrics, artifacts = task.run(tool, view, subject, support)
        if meter.seconds > job.budget.seconds + GRACE_SECONDS:
            raise BudgetExceeded(f"took {meter.seconds:.1f}s > budget {job.budget.seconds:g}s")
    except BudgetExceeded as exc:
        status, error = "timeout", str(exc)
    except Exception as exc:  # a crashing tool is a result, not a crashed run
        tb = traceback.extract_tb(exc.__traceback__)[-1]
        status = "error"
        error = f"{type(exc).__name__}: {exc} (at {tb.filename.rsplit('/', 1)[-1]}:{tb.lineno})"
    finally:
        for h in handles:
            h.remove()
    if status != "ok":
        metrics, artifacts = task.floor(tool, subject), {}
    return CellResult(
        key=job.key,
        status=status,
        metrics=metrics,
        seconds=round(meter.seconds, 3),
        queries=meter.queries,
        grad_steps=meter.grad_steps,
        error=error[:500],
        artifacts=artifacts,
    )


def floor_result(job: CellJob, status: str, error: str, seconds: float) -> CellResult:
    """The row for a cell whose worker was killed (overran its hard limit or crashed)."""
    subject = load_subject(job.cache_root, job.subject)
    metrics = make_task(job.task).floor(make_tool(job.tool), subject)
    return CellResult(job.key, status, metrics, round(seconds, 3), 0, 0, error[:500])

"""The local runner: build (or load) every subject, run every cell that the
store does not hold yet, and write each row as it finishes. Running the same
command again after an interruption resumes: nothing is lost or repeated."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from samecurve.api import Trigger, is_program_card, task_accepts, task_applies
from samecurve.run.cell import CellJob, cell_config, floor_result
from samecurve.run.pool import Job, Outcome, Pool
from samecurve.run.store import Store
from samecurve.run.suite import Suite, TaskEntry, ToolEntry, make_task, make_tool
from samecurve.zoo.builder import SubjectSpec, build, clean_split
from samecurve.zoo.cache import Cache

# Seconds beyond a cell's budget before its worker is killed: the tool's own
# deadline checks should stop it first; this catches the ones that ignore them.
HARD_LIMIT_FACTOR, HARD_LIMIT_GRACE = 1.5, 30.0


class RunError(RuntimeError):
    """The run cannot go on (a subject that cannot be built, a device that is not there)."""


@dataclass(frozen=True)
class BuildJob:
    spec: SubjectSpec
    cache_root: str


def gallery_arrays(subject: Any) -> dict[str, np.ndarray]:
    """What the report shows of a subject: one clean held-out input its trigger
    applies to, its triggered twin, and the true trigger (mask and pattern; for a
    transform, its footprint on this input and the transformed input)."""
    held = clean_split(subject, "heldout", 64)
    key = subject.answer_key
    keep = np.ones(len(held), bool)
    if key.trojaned:
        keep = key.trojans[0].applies_to(held.y).numpy()
        if not keep.any():  # no input of the source class in the sample
            keep = (held.y != key.target).numpy()
    pick = int(np.flatnonzero(keep)[0])
    x = held.x[pick : pick + 1]
    out = {"clean_example": x[0].numpy()}
    if key.trigger is not None:
        stamped, footprint = key.trigger.stamp_with_footprint(x)
        out["triggered_example"] = stamped[0].numpy()
        if isinstance(key.trigger, Trigger):
            out["true_mask"] = key.trigger.mask
            out["true_pattern"] = key.trigger.pattern
        else:
            out["true_mask"] = np.asarray(footprint[0], np.float32)
            out["true_pattern"] = stamped[0].numpy()
    return out


def build_subject_job(job: BuildJob) -> tuple[dict, dict[str, np.ndarray]]:
    subject = build(job.spec, Cache(job.cache_root))
    if is_program_card(subject.card):  # no trigger to show; the card names the rule
        return dict(subject.card), {}
    return dict(subject.card), gallery_arrays(subject)


def check_device(device: str, here: bool = True) -> None:
    """A device name we know, and (if the cells run `here`, on this machine) one it has."""
    if here and device.startswith("cuda") and not torch.cuda.is_available():
        raise RunError("--device cuda was asked for but this machine has no CUDA; use --device cpu")
    if not (device == "cpu" or device.startswith("cuda")):
        raise RunError(f"unknown device {device!r}; use cpu or cuda")


class JobPool(Protocol):
    """What the runner needs of a backend: jobs in, (job, outcome) out as each finishes."""

    def run(self, jobs: Iterable[Job]) -> Iterator[tuple[Job, Outcome]]: ...

    def close(self) -> None: ...


def make_pool(backend: str, workers: int, device: str = "cpu", address: str | None = None) -> JobPool:
    """Worker processes on this machine (local), or tasks on a Ray cluster (ray)."""
    if backend == "local":
        if address:
            raise RunError("--address is for --backend ray")
        return Pool(workers)
    if backend == "ray":
        from samecurve.run.ray_pool import RayPool  # Ray is optional: imported only here

        return RayPool(workers, device=device, address=address)
    raise RunError(f"unknown backend {backend!r}; use local or ray")


def _progress(console: Console, enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[note]}"),
        console=console,
        disable=not enabled,
        transient=False,
    )


def run_suite(
    suite: Suite,
    out: str | Path,
    *,
    device: str = "cpu",
    workers: int = 1,
    cache: Cache | None = None,
    console: Console | None = None,
    progress: bool = True,
    backend: str = "local",
    address: str | None = None,
) -> Store:
    """Run a suite into `out` and return its store (open). Resumes what is there.
    `backend` picks where jobs run (see make_pool); the store is written here only."""
    # On Ray the cells run on the cluster's nodes, which RayPool checks for GPUs.
    check_device(device, here=backend != "ray")
    console = console or Console(stderr=True)
    cache = cache or Cache()
    store = Store(out)
    store.set_meta("suite", yaml.safe_dump(suite.model_dump(), sort_keys=False))
    store.set_meta("suite_name", suite.name)
    store.set_meta("device", device)
    started = time.monotonic()
    specs = suite.subject_specs()
    support = _support_specs(suite, specs)
    everything = specs + suite.reference_specs()
    pool = make_pool(backend, workers, device, address)
    with closing(pool), _progress(console, progress) as bar:
        known = store.subjects()
        todo = [s for s in everything if s.id not in known or not cache.has(s.id)]
        todo += [s for s in support if not cache.has(s.id)]
        total = len(everything) + len(support)
        t = bar.add_task("subjects", total=total, completed=total - len(todo), note="")
        jobs = [Job("build", BuildJob(s, str(cache.root))) for s in todo]
        failed: list[dict[str, Any]] = []
        support_ids = {s.id for s in support}
        for job, outcome in pool.run(jobs):
            spec = job.payload.spec
            if spec.id in support_ids:  # graders' own models: cached, never graded or shown
                if outcome.status != "ok":  # its cells go on without what it grades
                    why = outcome.error.strip().splitlines()[-1]
                    console.print(f"[yellow]grader model {spec.id} not built[/yellow] "
                                  f"(rediscovery not graded): {why}")
                bar.update(t, advance=1, note=f"grader model {spec.id}")
                continue
            if outcome.status != "ok":
                if "BuildFailed" not in outcome.error:
                    raise RunError(
                        f"could not build subject {spec.recipe} seed {spec.seed}: {outcome.error}"
                    )
                # A recipe that missed its gate on every attempt is left out and
                # named in the report; the other subjects still count.
                why = outcome.error.strip().splitlines()[-1].split(": ", 1)[-1]
                failed.append({"id": spec.id, "recipe": spec.recipe, "seed": spec.seed,
                               "error": why})
                console.print(f"[yellow]left out[/yellow] {spec.recipe} seed {spec.seed}: {why}")
                bar.update(t, advance=1)
                continue
            card, arrays = outcome.value
            store.put_subject(card, arrays)
            bar.update(t, advance=1, note=f"{card['id']} acc={card['clean_accuracy']:.2f}")
        store.set_meta("gate_failures", json.dumps(failed))
        specs = [s for s in specs if s.id not in {f["id"] for f in failed}]
        cell_jobs = _cell_jobs(suite, specs, device, cache, store)
        references = suite.reference_tag()
        # This suite's cells only: rows of other configs may share the store.
        cards = store.cards()
        total = len(suite.seeds) * sum(
            len(_graded_by(task, specs, cards)) for task, _tool in _pairs(suite)
        )
        c = bar.add_task("cells", total=total, completed=total - len(cell_jobs), note="")
        for job, outcome in pool.run(cell_jobs):
            cell: CellJob = job.payload
            config = cell_config(cell.task, cell.tool, references)
            if outcome.status == "ok":
                result = outcome.value
            else:
                status = "timeout" if outcome.status == "timeout" else "error"
                result = floor_result(cell, status, outcome.error, outcome.seconds)
            store.add(config, result)
            note = f"{cell.tool.display} on {cell.subject}: {result.status}"
            bar.update(c, advance=1, note=note)
    prior = float(store.meta().get("wall_seconds", 0.0))
    store.set_meta("wall_seconds", f"{prior + time.monotonic() - started:.1f}")
    return store


def _support_specs(suite: Suite, specs: list[SubjectSpec]) -> list[SubjectSpec]:
    """Models the tasks grade with (the rediscovery evaluator), one per distinct spec."""
    found: dict[str, SubjectSpec] = {}
    for entry in suite.tasks:
        task = make_task(entry)
        for spec in specs:
            for s in getattr(task, "support_specs", lambda _s: [])(spec):
                found.setdefault(s.id, s)
    return list(found.values())


def _references_for(spec: SubjectSpec, pool: list[SubjectSpec]) -> tuple[str, ...]:
    """The labelled models a subject's tools may learn from: those of the pool on the
    same data (a digits model cannot answer scene queries), never the subject itself,
    never a hidden-program network (it reads tokens or rules, not the track's images)."""
    if spec.hidden_program:
        return ()
    return tuple(
        r.id for r in pool
        if r.id != spec.id and not r.hidden_program
        and (r.dataset, dict(r.dataset_params)) == (spec.dataset, dict(spec.dataset_params))
    )


def _cell_jobs(
    suite: Suite, specs: list[SubjectSpec], device: str, cache: Cache, store: Store
) -> list[Job]:
    done = store.done()
    cards = store.cards()
    # Only references that were built: one that missed its gate is left out, not loaded.
    pool_of_references = [r for r in suite.reference_specs() or specs if cache.has(r.id)]
    references = suite.reference_tag()
    budget = suite.budget.budget()
    limit = budget.seconds * HARD_LIMIT_FACTOR + HARD_LIMIT_GRACE
    jobs = []
    for task, tool in _pairs(suite):
        graders = getattr(make_task(task), "support_specs", lambda _s: [])
        config = cell_config(task, tool, references)
        for spec in _graded_by(task, specs, cards):
            sid = spec.id
            for seed in suite.seeds:
                if (task.name, tool.display, config, sid, seed) in done:
                    continue
                refs = _references_for(spec, pool_of_references)
                support = tuple(s.id for s in graders(spec) if cache.has(s.id))
                cell = CellJob(task, tool, sid, seed, budget, device, str(cache.root), refs, support)
                jobs.append(Job("cell", cell, limit))
    return jobs


def _pairs(suite: Suite) -> list[tuple[TaskEntry, ToolEntry]]:
    """The (task, tool) pairs a suite runs: every task with each tool that has its verb."""
    return [
        (task, tool)
        for task in suite.tasks
        for tool in suite.tools
        if task_accepts(make_task(task), make_tool(tool))
    ]


def _graded_by(task: TaskEntry, specs: list[SubjectSpec], cards: dict[str, dict]) -> list[SubjectSpec]:
    """The subjects a task grades, read from their stored cards."""
    t = make_task(task)
    return [s for s in specs if s.id in cards and task_applies(t, cards[s.id])]


"""A pool of worker processes with a hard wall-clock limit per job. A job that
overruns is killed with its worker, which is replaced; a worker that dies
(segfault, out of memory) fails only its own job. With zero workers, jobs run
in this process (no hard limit: for debugging and small tests)."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import time
import traceback
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any


@dataclass(frozen=True)
class Job:
    kind: str  # "build" or "cell"
    payload: Any
    limit: float | None = None  # hard wall-clock seconds, None for no limit


@dataclass(frozen=True)
class Outcome:
    status: str  # ok | error | timeout | crash
    value: Any = None
    error: str = ""
    seconds: float = 0.0


def handle(kind: str, payload: Any) -> Any:
    """Run a job's work; imported lazily so workers import torch once."""
    if kind == "build":
        from samecurve.run.runner import build_subject_job

        return build_subject_job(payload)
    if kind == "cell":
        from samecurve.run.cell import execute

        return execute(payload)
    raise ValueError(f"unknown job kind {kind!r}")


def last_line(exc: BaseException) -> str:
    """What an error row keeps of a job's exception: its type and message."""
    return traceback.format_exception_only(type(exc), exc)[-1].strip()


def _worker(conn: Connection, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    while True:
        try:
            msg = conn.recv()
        except (EOFError, KeyboardInterrupt):
            return  # the driver is gone: nothing to report to
        if msg is None:
            return
        kind, payload = msg
        try:
            conn.send(("ok", handle(kind, payload), ""))
        except KeyboardInterrupt:
            return
        except Exception as exc:
            conn.send(("error", None, last_line(exc)))


class _Worker:
    def __init__(self, ctx: Any, threads: int) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(child, threads), daemon=True)
        self.proc.start()
        child.close()
        self.job: Job | None = None
        self.started = 0.0

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(timeout=5)
        self.conn.close()


class Pool:
    def __init__(self, workers: int, threads: int | None = None) -> None:
        self.workers = max(0, workers)
        cpus = os.cpu_count() or 1
        self.threads = threads or max(1, cpus // max(1, self.workers))
        self._ctx = mp.get_context("spawn")
        self._live: list[_Worker] = []

    def run(self, jobs: Iterable[Job]) -> Iterator[tuple[Job, Outcome]]:
        """Yield (job, outcome) as each job finishes, in completion order."""
        if self.workers == 0:
            yield from self._run_inline(jobs)
            return
        pending = deque(jobs)
        try:
            self._live = [
                _Worker(self._ctx, self.threads) for _ in range(min(self.workers, len(pending)))
            ]
            while pending or any(w.job for w in self._live):
                for w in self._live:
                    if w.job is None and pending:
                        w.job, w.started = pending.popleft(), time.monotonic()
                        w.conn.send((w.job.kind, w.job.payload))
                busy = [w for w in self._live if w.job is not None]
                deadlines = [w.started + w.job.limit for w in busy if w.job.limit]
                timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
                ready = wait([w.conn for w in busy] + [w.proc.sentinel for w in busy], timeout)
                for w in busy:
                    outcome = self._collect(w, ready)
                    if outcome is None:
                        continue
                    job = w.job
                    w.job = None
                    if outcome.status in ("timeout", "crash"):
                        self._replace(w)
                    yield job, outcome
        finally:
            self.close()

    def _collect(self, w: _Worker, ready: list[Any]) -> Outcome | None:
        assert w.job is not None
        elapsed = time.monotonic() - w.started
        if w.conn in ready:
            try:
                status, value, error = w.conn.recv()
                return Outcome(status, value, error, elapsed)
            except (EOFError, OSError):
                pass
        if w.proc.sentinel in ready or not w.proc.is_alive():
            return Outcome("crash", None, f"worker died (exit code {w.proc.exitcode})", elapsed)
        if w.job.limit and elapsed >= w.job.limit:
            return Outcome("timeout", None, f"killed after {elapsed:.0f}s (hard limit)", elapsed)
        return None

    def _replace(self, w: _Worker) -> None:
        w.kill()
        fresh = _Worker(self._ctx, self.threads)
        self._live[self._live.index(w)] = fresh

    def _run_inline(self, jobs: Iterable[Job]) -> Iterator[tuple[Job, Outcome]]:
        for job in jobs:
            t = time.monotonic()
            try:
                value = handle(job.kind, job.payload)
                yield job, Outcome("ok", value, "", time.monotonic() - t)
            except Exception as exc:
                yield job, Outcome("error", None, last_line(exc), time.monotonic() - t)

    def close(self) -> None:
        for w in self._live:
            if w.job is None and w.proc.is_alive():
                with contextlib.suppress(OSError):
                    w.conn.send(None)
                w.proc.join(timeout=2)
            w.kill()
        self._live = []


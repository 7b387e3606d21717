"""Jobs as tasks on a Ray cluster, with Pool's contract: `run(jobs)` yields
(job, outcome) as each job finishes, each held to its hard wall-clock limit, so
the runner neither knows nor cares which backend it has. Ray is optional: it is
imported only when this backend is chosen.

Subjects cross machines through Ray's object store. A build task sends back the
files it wrote, so the driver's cache ends up holding every subject (as after a
local run); the driver puts each subject's files into the object store once; a
cell task on a node whose cache lacks a subject writes it there from those bytes
before it runs. On one machine the cache is shared and nothing is rewritten.

The hard limit is timed from submission, and the driver never has more tasks in
flight than `workers` or than the cluster has CPUs (and GPUs, for CUDA cells),
so a task does not spend its limit waiting in Ray's queue."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

from samecurve.run.pool import Job, Outcome, handle, last_line
from samecurve.run.runner import RunError
from samecurve.zoo.cache import Cache, default_cache_root

RAY_MISSING = (
    '--backend ray needs Ray, which is not installed: pip install -c constraints.txt -e ".[ray]"'
)
LOOPBACK = "127.0.0.1"
CONNECT_SECONDS = 5.0  # an address that does not answer a TCP connect in this long is down
# Ray's own init logs its banner and notices at INFO; warnings and errors still show.
QUIET = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}

Work = Callable[[str, Any], Any]


class ClusterError(RunError):
    """The Ray backend cannot run: Ray missing, no cluster at the address, or no slot for the device."""


def import_ray() -> ModuleType:
    """Ray, or one line that says how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise ClusterError(RAY_MISSING) from exc
    return ray


# -- subjects as bytes ---------------------------------------------------------
def subject_files(cache: Cache, subject_id: str) -> dict[str, bytes]:
    """A cached subject as {file name: bytes}: what travels to a machine that lacks it."""
    folder = cache.path(subject_id)
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def materialise(cache: Cache, subject_id: str, files: Mapping[str, bytes]) -> None:
    """Write a subject's files into `cache` unless it is there already; atomic, as
    Cache.save is (a temporary folder renamed), so a killed task leaves no half entry."""
    if cache.has(subject_id):
        return
    for name in files:
        if Path(name).name != name or name.startswith("."):
            raise ValueError(f"subject {subject_id} ships a bad file name {name!r}")
    cache.subjects_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{subject_id}-", dir=cache.subjects_dir))
    try:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        try:
            os.rename(tmp, cache.path(subject_id))
        except OSError:
            if not cache.has(subject_id):  # not a lost race with another task
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def node_cache_root(root: str, needed: Sequence[str]) -> str:
    """The cache a task uses on its node: the driver's path if it already holds every
    subject needed or can be written here (one machine, or a shared file system),
    else this node's own default cache, else a temporary folder."""
    if all(Cache(root).has(s) for s in needed):
        return root
    fallback = os.path.join(tempfile.gettempdir(), "samecurve-cache")
    for candidate in (root, str(default_cache_root()), fallback):
        folder = Cache(candidate).subjects_dir
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(folder, os.W_OK):
            return candidate
    raise OSError(f"no writable subject cache on this node (tried {root} and {fallback})")


def _needed(kind: str, payload: Any) -> tuple[str, ...]:
    if kind == "cell":
        return tuple(dict.fromkeys((payload.subject, *payload.references, *payload.support)))
    if kind == "build":
        return (payload.spec.id,)
    return ()


def _localise(kind: str, payload: Any, shipped: Mapping[str, Any]) -> Any:
    """The payload pointed at a cache on this node that holds what the job reads."""
    needed = _needed(kind, payload)
    if not needed:
        return payload
    root = node_cache_root(payload.cache_root, needed)
    if kind == "cell":
        cache = Cache(root)
        missing = [s for s in needed if not cache.has(s) and s in shipped]
        if missing:
            import ray

            for sid, files in zip(missing, ray.get([shipped[s] for s in missing]), strict=True):
                materialise(cache, sid, files)
    return payload if root == payload.cache_root else replace(payload, cache_root=root)


def _task(
    kind: str, payload: Any, work: Work, threads: int, shipped: Mapping[str, Any]
) -> tuple[str, Any, str, dict[str, bytes] | None]:
    """One job on a Ray worker. A job's exception comes back as a value, so Ray
    retries only system failures (a dead worker), never a job that raised."""
    import torch

    torch.set_num_threads(threads)
    try:
        payload = _localise(kind, payload, shipped)
        value = work(kind, payload)
        files = subject_files(Cache(payload.cache_root), payload.spec.id) if kind == "build" else None
    except Exception as exc:
        return "error", None, last_line(exc), None
    return "ok", value, "", files


# -- the cluster ---------------------------------------------------------------
def check_address(address: str) -> None:
    """Fail in seconds, with one line, where ray.init would wait minutes on a dead address."""
    if address in ("auto", "local"):
        return
    host, sep, port = address.split("://", 1)[-1].rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ClusterError(f"--address {address!r} is not HOST:PORT (e.g. 10.0.0.5:6379) or auto")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_SECONDS).close()
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise ClusterError(
            f"no Ray cluster answers at {address} ({why}); start one there with "
            "`ray start --head`, or leave out --address to run on this machine"
        ) from None


def _good_news(record: logging.LogRecord) -> bool:
    """Drop Ray's notice that a new local cluster has token authentication on (it is
    the safe default, not a problem) so it does not sit above every progress bar."""
    return not record.getMessage().startswith("Token authentication is enabled")


def connect(ray: ModuleType, address: str | None, workers: int) -> bool:
    """Join the cluster at `address`, or start one sized to `workers` on this machine.
    Returns whether this process started it (and so must shut it down)."""
    if not address:
        auth = logging.getLogger("ray._private.authentication.authentication_token_setup")
        auth.addFilter(_good_news)
        try:
            # on loopback: a cluster of this machine talks to nothing but itself
            ray.init(address="local", num_cpus=workers, _node_ip_address=LOOPBACK, **QUIET)
        except (OSError, RuntimeError, ValueError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ClusterError(f"cannot start a local Ray cluster: {first}") from None
        finally:
            auth.removeFilter(_good_news)
        return True
    check_address(address)
    plugins = os.environ.get("SAMECURVE_PLUGINS")  # local clusters inherit the environment
    env = {"runtime_env": {"env_vars": {"SAMECURVE_PLUGINS": plugins}}} if plugins else {}
    host = address.rsplit(":", 1)[0]
    # a cluster on this machine's loopback: this driver's node is there too
    here = {"_node_ip_address": LOOPBACK} if host in (LOOPBACK, "localhost") else {}
    try:
        ray.init(address=address, **QUIET, **env, **here)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        hint = "" if os.environ.get("RAY_AUTH_MODE") else (
            " (a cluster from `ray start` wants its token: set RAY_AUTH_MODE=token, and "
            "RAY_AUTH_TOKEN unless ~/.ray/auth_token holds it)"
        )
        raise ClusterError(f"cannot join the Ray cluster at {address}: {first}{hint}") from None
    return False


class RayPool:
    """Pool's contract on a Ray cluster (see the module docstring)."""

    def __init__(
        self,
        workers: int,
        *,
        device: str = "cpu",
        address: str | None = None,
        threads: int | None = None,
        work: Work = handle,
    ) -> None:
        if workers < 1:
            raise ClusterError("--backend ray needs --workers 1 or more (the tasks kept in flight)")
        ray = self._ray = import_ray()
        # Already connected (a notebook, a test): use that cluster and leave it running.
        self._started = False if ray.is_initialized() else connect(ray, address, workers)
        resources = ray.cluster_resources()
        cpus, gpus = int(resources.get("CPU", 0)), int(resources.get("GPU", 0))
        self._gpu = device.startswith("cuda")
        if cpus < 1 or (self._gpu and gpus < 1):
            self.close()
            raise ClusterError(
                f"the Ray cluster has {cpus} CPUs and {gpus} GPUs: "
                + ("--device cuda needs a GPU node" if cpus else "it cannot run a task")
            )
        self.slots = min(workers, cpus)
        self.gpu_slots = min(self.slots, gpus)
        # One CPU per task; a cluster of our own shares this machine as Pool does.
        self.threads = threads or (max(1, (os.cpu_count() or 1) // workers) if self._started else 1)
        self._work = work
        task = ray.remote(_task)
        self._cpu_task = task.options(num_cpus=1, max_retries=1, retry_exceptions=False)
        self._gpu_task = task.options(num_cpus=1, num_gpus=1, max_retries=1, retry_exceptions=False)
        self._shipped: dict[str, Any] = {}  # subject id -> object ref of its files

    def run(self, jobs: Iterable[Job]) -> Iterator[tuple[Job, Outcome]]:
        """Yield (job, outcome) as each job finishes, in completion order."""
        ray = self._ray
        pending = deque(jobs)
        flying: dict[Any, tuple[Job, float]] = {}  # object ref -> (job, submitted at)
        try:
            while pending or flying:
                while pending and self._has_slot(pending[0], flying):
                    job = pending.popleft()
                    flying[self._submit(job)] = (job, time.monotonic())
                deadlines = [t + j.limit for j, t in flying.values() if j.limit]
                timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
                ready, _ = ray.wait(list(flying), num_returns=1, timeout=timeout)
                for ref in ready:
                    job, t = flying.pop(ref)
                    yield job, self._outcome(job, ref, time.monotonic() - t)
                now = time.monotonic()
                for ref, (job, t) in list(flying.items()):
                    if job.limit and now - t >= job.limit:
                        ray.cancel(ref, force=True)  # kills the worker process
                        del flying[ref]
                        yield job, Outcome("timeout", None, f"killed after {now - t:.0f}s (hard limit)",
                                           now - t)
        finally:
            for ref in flying:  # interrupted: stop what is still running
                ray.cancel(ref, force=True)

    def _needs_gpu(self, job: Job) -> bool:
        return self._gpu and job.kind == "cell"

    def _has_slot(self, job: Job, flying: Mapping[Any, tuple[Job, float]]) -> bool:
        if len(flying) >= self.slots:
            return False
        return not self._needs_gpu(job) or sum(self._needs_gpu(j) for j, _ in flying.values()) < self.gpu_slots

    def _submit(self, job: Job) -> Any:
        task = self._gpu_task if self._needs_gpu(job) else self._cpu_task
        shipped = self._ship(job.payload) if job.kind == "cell" else {}
        # `shipped` is nested in a dict, so Ray passes the refs and fetches no bytes
        # unless the task finds its node's cache lacking.
        return task.remote(job.kind, job.payload, self._work, self.threads, shipped)

    def _ship(self, cell: Any) -> dict[str, Any]:
        """Object refs of the subjects a cell reads, each put into the store once."""
        cache = Cache(cell.cache_root)
        out = {}
        for sid in _needed("cell", cell):
            if sid not in self._shipped:
                if not cache.has(sid):
                    continue  # the cell will report it missing, as it would locally
                self._shipped[sid] = self._ray.put(subject_files(cache, sid))
            out[sid] = self._shipped[sid]
        return out

    def _outcome(self, job: Job, ref: Any, seconds: float) -> Outcome:
        exceptions = self._ray.exceptions
        try:
            status, value, error, files = self._ray.get(ref)
        except exceptions.RayTaskError as exc:  # raised outside the job (e.g. its result would not pickle)
            return Outcome("error", None, last_line(exc.cause or exc), seconds)
        except exceptions.RayError as exc:  # the worker (or its node) died, on the retry too
            return Outcome("crash", None, f"worker died twice ({type(exc).__name__}; retried once)",
                           seconds)
        if files:  # a build on another machine: keep the subject in the driver's cache too
            materialise(Cache(job.payload.cache_root), job.payload.spec.id, files)
        return Outcome(status, value, error, seconds)

    def close(self) -> None:
        """Shut down the cluster if this pool started it; one we joined keeps running."""
        if self._started and self._ray.is_initialized():
            self._ray.shutdown()
        self._started = False

"""The Ray backend keeps Pool's contract: ok, error, timeout and crash outcomes
(a dead worker retried once, a raising job never), the same rows as the local
backend, resumes that neither lose nor repeat a cell, subjects that reach a node
without them, and one clear line when Ray or the cluster is not there."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import tiny_suite_text
from samecurve.api import Budget
from samecurve.run.cell import CellJob
from samecurve.run.pool import Job, handle
from samecurve.run.runner import RunError, check_device, make_pool, run_suite
from samecurve.run.store import Store
from samecurve.run.suite import TaskEntry, ToolEntry, parse_suite
from samecurve.zoo.cache import Cache

ray = pytest.importorskip("ray")

from samecurve.run.ray_pool import (  # noqa: E402  (after the skip: needs Ray)
    RAY_MISSING,
    ClusterError,
    RayPool,
    _task,
    check_address,
    materialise,
    node_cache_root,
    subject_files,
)

ONE_OF_EACH = "[{recipe: patch, count: 1}, {recipe: clean, count: 1}]"
TOOLS = '[oracle, "null", random, grad-cam, layer-norms]'


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    """One local two-CPU cluster for the module; RayPool joins it and leaves it up."""
    ray.init(address="local", num_cpus=2, _node_ip_address="127.0.0.1", include_dashboard=False,
             log_to_driver=False,
             logging_level=logging.WARNING)
    yield
    ray.shutdown()


def trivial_work():
    """Test-only job kinds. A nested function, so Ray ships it by value to workers,
    which cannot import this test module."""

    def work(kind: str, payload: object) -> object:
        import os
        import time

        if kind == "echo":
            return payload
        if kind == "sleep":
            time.sleep(payload)
            return payload
        with open(payload, "a") as f:  # payload: a file counting attempts
            f.write("x")
        if kind == "raise":
            raise ValueError("deliberate failure")
        if kind == "die":
            os._exit(1)
        if kind == "die-once":
            with open(payload) as f:
                if len(f.read()) == 1:
                    os._exit(1)
            return "survived"
        raise ValueError(f"unknown kind {kind}")

    return work


def test_ok_error_timeout_and_crash(cluster, tmp_path: Path) -> None:
    counts = {k: tmp_path / k for k in ("raise", "die", "die-once")}
    jobs = [
        Job("sleep", 60, limit=20),  # the limit counts worker start-up
        # generous limits: a Ray worker's start-up (torch import) on 2 busy cores counts
        Job("echo", "hello", limit=120),
        Job("raise", str(counts["raise"]), limit=120),
        Job("die", str(counts["die"]), limit=180),
        Job("die-once", str(counts["die-once"]), limit=180),
    ]
    pool = RayPool(2, work=trivial_work())
    t = time.monotonic()
    seen = list(pool.run(jobs))
    wall = time.monotonic() - t
    pool.close()
    got = {job.kind: outcome for job, outcome in seen}
    assert sorted(got) == sorted(j.kind for j in jobs)  # each job once
    assert got["echo"].status == "ok" and got["echo"].value == "hello"
    assert got["raise"].status == "error"
    assert got["raise"].error == "ValueError: deliberate failure"
    assert counts["raise"].read_text() == "x"  # a raising job is not retried
    assert got["sleep"].status == "timeout" and "hard limit" in got["sleep"].error
    assert 20 <= got["sleep"].seconds < 45
    assert got["die"].status == "crash" and "worker died" in got["die"].error
    assert counts["die"].read_text() == "xx"  # retried once, then reported
    assert got["die-once"].status == "ok" and got["die-once"].value == "survived"
    # Streamed in completion order: the quick job came back before the sleeper's limit.
    assert [j.kind for j, _ in seen].index("echo") < [j.kind for j, _ in seen].index("sleep")
    assert wall < 150  # the sleeper (60 s) was cut off, not waited for


def test_a_cancelled_worker_is_replaced(cluster) -> None:
    pool = RayPool(1, work=trivial_work())
    seen = list(pool.run([Job("sleep", 60, limit=1), Job("echo", 7, limit=120)]))
    assert [(j.kind, o.status) for j, o in seen] == [("sleep", "timeout"), ("echo", "ok")]


def _rows(folder: Path) -> list[tuple]:
    """Every stored cell without its timings (seconds, created): what must agree."""
    db = sqlite3.connect(folder / "results.sqlite")
    rows = db.execute(
        "SELECT task, tool, config, subject, seed, status, metrics, queries, grad_steps, error, "
        "artifacts FROM cells ORDER BY task, tool, subject, seed"
    ).fetchall()
    db.close()
    return rows


def test_ray_rows_equal_local_rows(cluster, cache: Cache, tmp_path: Path) -> None:
    """Builds (if the session has not made them yet) go through Ray first; then the
    same suite on the local pool gives the same rows, metric for metric."""
    suite = parse_suite(tiny_suite_text(TOOLS, ONE_OF_EACH))
    run_suite(suite, tmp_path / "ray", workers=2, cache=cache, progress=False,
              backend="ray").close()
    run_suite(suite, tmp_path / "local", workers=2, cache=cache, progress=False).close()
    ray_rows, local_rows = _rows(tmp_path / "ray"), _rows(tmp_path / "local")
    assert len(ray_rows) == 10
    assert ray_rows == local_rows
    assert {r[5] for r in ray_rows} == {"ok"}
    with Store(tmp_path / "ray") as a, Store(tmp_path / "local") as b:
        assert a.cards() == b.cards()  # the subjects' cards reached the driver's store


def test_an_interrupted_ray_run_resumes_without_loss_or_duplicates(
    cluster, cache: Cache, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    suite = parse_suite(tiny_suite_text(TOOLS, ONE_OF_EACH))
    out = tmp_path / "run"
    add = Store.add
    written = []

    def add_then_interrupt(self: Store, config: str, result: object) -> bool:
        if len(written) == 4:  # Ctrl-C with cells still in flight
            raise KeyboardInterrupt
        written.append(result)
        return add(self, config, result)

    monkeypatch.setattr(Store, "add", add_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_suite(suite, out, workers=2, cache=cache, progress=False, backend="ray")
    monkeypatch.setattr(Store, "add", add)
    assert len(_rows(out)) == 4
    run_suite(suite, out, workers=2, cache=cache, progress=False, backend="ray").close()
    keys = [r[:5] for r in _rows(out)]
    assert len(keys) == len(set(keys)) == 10  # every cell exactly once
    run_suite(suite, out, workers=2, cache=cache, progress=False, backend="ray").close()
    assert len(_rows(out)) == 10  # nothing left to do


def test_a_node_without_the_subject_materialises_it(
    cluster, cache: Cache, tmp_path: Path
) -> None:
    """A cell task whose cache is empty (another machine's) writes the subject there
    from the bytes the driver put into the object store, then runs the cell."""
    suite = parse_suite(tiny_suite_text('["oracle"]', ONE_OF_EACH))
    run_suite(suite, tmp_path / "run", workers=0, cache=cache, progress=False).close()
    subject, other = (s.id for s in suite.subject_specs())
    node = tmp_path / "node-cache"
    cell = CellJob(TaskEntry(name="discover"), ToolEntry(name="oracle"), subject, 0,
                   Budget(seconds=60), "cpu", str(node), references=(other,))
    shipped = {s: ray.put(subject_files(cache, s)) for s in (subject, other)}
    status, result, error, _ = ray.get(ray.remote(_task).remote("cell", cell, handle, 1, shipped))
    assert (status, error) == ("ok", "")
    assert result.status == "ok" and result.metrics["probability"] == 1.0
    for s in (subject, other):
        assert subject_files(Cache(node), s) == subject_files(cache, s)
    assert not [p for p in (node / "subjects").iterdir() if p.name.startswith(".")]  # no temp left


def test_materialise_keeps_an_entry_that_is_there(tmp_path: Path) -> None:
    target, sid = Cache(tmp_path), "patch-0123"
    files = {"card.json": b'{"id": "patch-0123"}', "model.safetensors": b"weights"}
    materialise(target, sid, files)
    assert target.has(sid)
    materialise(target, sid, {"card.json": b"not json"})  # already there: untouched
    assert subject_files(target, sid) == files
    with pytest.raises(ValueError, match="bad file name"):
        materialise(Cache(tmp_path / "x"), sid, {"../escape": b""})


def test_a_node_that_cannot_write_the_drivers_path_uses_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("SAMECURVE_CACHE", str(tmp_path / "own"))
    assert node_cache_root(str(blocker / "cache"), ["some-id"]) == str(tmp_path / "own")
    assert node_cache_root(str(tmp_path / "ok"), ["some-id"]) == str(tmp_path / "ok")


def test_missing_ray_is_one_line_naming_the_fix(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from samecurve.cli import app

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails
    with pytest.raises(ClusterError, match=r'pip install -c constraints.txt -e "\.\[ray\]"'):
        RayPool(2)
    suite = tmp_path / "suite.yaml"
    suite.write_text(tiny_suite_text('["null"]', ONE_OF_EACH))
    result = CliRunner().invoke(app, ["run", str(suite), "--out", str(tmp_path / "out"),
                                      "--backend", "ray", "--quiet"])
    assert result.exit_code == 2
    assert RAY_MISSING in " ".join(result.output.split())


def test_bad_addresses_and_backends_fail_in_one_line() -> None:
    t = time.monotonic()
    with pytest.raises(ClusterError, match=r"no Ray cluster answers at 127\.0\.0\.1:1"):
        check_address("127.0.0.1:1")
    assert time.monotonic() - t < 10
    with pytest.raises(ClusterError, match="is not HOST:PORT"):
        check_address("nowhere")
    with pytest.raises(RunError, match="--address is for --backend ray"):
        make_pool("local", 2, address="10.0.0.5:6379")
    with pytest.raises(RunError, match="unknown backend"):
        make_pool("dask", 2)
    with pytest.raises(ClusterError, match="--workers 1 or more"):
        RayPool(0)
    check_device("cuda", here=False)  # a CPU-only driver may send CUDA cells to a cluster
    with pytest.raises(RunError, match="unknown device"):
        check_device("tpu", here=False)


def test_cuda_cells_need_a_gpu_in_the_cluster(cluster) -> None:
    if ray.cluster_resources().get("GPU"):
        pytest.skip("this cluster has a GPU")
    with pytest.raises(ClusterError, match="needs a GPU node"):
        RayPool(2, device="cuda")
    assert ray.is_initialized()  # a cluster it joined is left running


@pytest.mark.slow
def test_cli_joins_a_cluster_started_with_ray_start(cache: Cache, tmp_path: Path) -> None:
    """`--address` end to end: a head from `ray start` (token auth on), the CLI as a
    separate driver, the same rows as the local backend."""
    if not shutil.which("ray"):
        pytest.skip("no `ray` command")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    head = subprocess.Popen(
        ["ray", "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
         "--include-dashboard=false", "--node-ip-address=127.0.0.1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        suite_file = tmp_path / "suite.yaml"
        suite_file.write_text(tiny_suite_text(TOOLS, ONE_OF_EACH))
        cmd = [sys.executable, "-m", "samecurve", "run", str(suite_file), "--cache",
               str(cache.root), "--workers", "2", "--quiet", "--out", str(tmp_path / "ray"),
               "--backend", "ray", "--address", f"127.0.0.1:{port}"]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
    finally:
        head.terminate()  # `ray start --block` stops its cluster on SIGTERM
        head.wait(timeout=60)
        # ...but leaves its address behind, where a plain ray.init() would look for it.
        current = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
        if current.is_file() and current.read_text().strip().endswith(f":{port}"):
            current.unlink()
    run_suite(parse_suite(suite_file.read_text()), tmp_path / "local", workers=2, cache=cache,
              progress=False).close()
    assert _rows(tmp_path / "ray") == _rows(tmp_path / "local")
    assert len(_rows(tmp_path / "ray")) == 10

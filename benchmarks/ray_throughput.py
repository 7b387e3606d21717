"""Cells per minute on this machine: the same small suite on the local pool and on a
local Ray cluster, and each backend's per-cell overhead measured with the `null` tool.

    python benchmarks/ray_throughput.py [--workers 2] [--seeds 3] [--cache DIR]

Subjects are built (or found in the cache) first and not timed. Each timed run uses
a fresh run folder, so it costs what `samecurve run` costs from start to end (worker
start-up, and for Ray the cluster's, included). The null-tool suite is run at two
sizes: the difference gives the marginal wall time of one cell, the rest is fixed
start-up. Last, the bare dispatch round trip: jobs of a kind no worker knows, which
come straight back as errors, through each pool."""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from samecurve.run.pool import Job
from samecurve.run.runner import make_pool, run_suite
from samecurve.run.suite import Suite, parse_suite
from samecurve.zoo.cache import Cache

# The tests' tiny zoo: one trojaned and one clean subject that train in under a minute.
ZOO = ("zoo: {train: {train_size: 3000, test_size: 400, epochs: 8, asr_gate: 0.9, "
       "min_clean_accuracy: 0.4}}")
SUBJECTS = "[{recipe: patch, count: 1}, {recipe: clean, count: 1}]"
MIXED = '[oracle, "null", random, grad-cam, {name: neural-cleanse, params: {steps: 40}}]'
BACKENDS = ("local", "ray")


def small_suite(tools: str, seeds: int) -> Suite:
    return parse_suite(
        f"name: throughput\n{ZOO}\nsubjects: {SUBJECTS}\ntasks: [discover]\n"
        f"tools: {tools}\nseeds: {list(range(seeds))}\nbudget: {{seconds: 60}}\n"
    )


def timed(suite: Suite, backend: str, workers: int, cache: Cache) -> tuple[float, int]:
    """Wall seconds of one fresh run, and the cells it wrote."""
    out = Path(tempfile.mkdtemp(prefix=f"bench-{backend}-"))
    try:
        t = time.perf_counter()
        store = run_suite(suite, out, workers=workers, cache=cache, progress=False, backend=backend)
        seconds = time.perf_counter() - t
        cells = store.count()
        store.close()
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return seconds, cells


def dispatch_seconds(backend: str, workers: int, jobs: int = 300) -> float:
    """Wall seconds per job, in steady state, for jobs that do nothing: timed from
    the first outcome to the last, so worker start-up is left out."""
    pool = make_pool(backend, workers)
    try:
        stamps = []
        for _, outcome in pool.run([Job("no-op", None)] * jobs):
            assert outcome.status == "error" and "unknown job kind" in outcome.error
            stamps.append(time.perf_counter())
    finally:
        pool.close()
    return (stamps[-1] - stamps[0]) / (jobs - 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--workers", type=int, default=2, help="parallel jobs, for both backends")
    ap.add_argument("--seeds", type=int, default=3, help="seeds of the mixed suite")
    ap.add_argument("--null-seeds", type=int, nargs=2, default=(10, 30),
                    help="seeds of the two null-tool runs")
    ap.add_argument("--cache", default=None, help="subject cache (default: the user cache)")
    args = ap.parse_args()
    cache = Cache(args.cache)

    t = time.perf_counter()  # builds (or cache hits), not timed below
    warm = Path(tempfile.mkdtemp(prefix="bench-warm-"))
    run_suite(small_suite('["null"]', 1), warm, workers=args.workers, cache=cache,
              progress=False).close()
    shutil.rmtree(warm, ignore_errors=True)
    print(f"subjects ready in {time.perf_counter() - t:.0f} s (cache {cache.root}); "
          f"{args.workers} workers per backend")

    mixed = small_suite(MIXED, args.seeds)
    rate = {}
    print(f"\nmixed suite ({MIXED}), {args.seeds} seeds:")
    for backend in BACKENDS:
        seconds, cells = timed(mixed, backend, args.workers, cache)
        rate[backend] = cells / seconds * 60
        print(f"  {backend:5s}: {cells} cells in {seconds:6.1f} s = {rate[backend]:6.1f} cells/min")
    print(f"  ray / local: {rate['ray'] / rate['local']:.2f}x")

    small, large = args.null_seeds
    print(f"\nnull tool, {small} and {large} seeds (marginal = extra wall per extra cell):")
    for backend in BACKENDS:
        w1, n1 = timed(small_suite('["null"]', small), backend, args.workers, cache)
        w2, n2 = timed(small_suite('["null"]', large), backend, args.workers, cache)
        marginal = (w2 - w1) / (n2 - n1)
        print(f"  {backend:5s}: {n1} cells {w1:5.1f} s, {n2} cells {w2:5.1f} s; "
              f"{w2 / n2 * 1000:5.0f} ms/cell overall, marginal {marginal * 1000:5.0f} ms/cell, "
              f"fixed {w1 - n1 * marginal:4.1f} s")

    print("\ndispatch round trip of a job that does nothing (300 jobs, steady state):")
    for backend in BACKENDS:
        print(f"  {backend:5s}: {dispatch_seconds(backend, args.workers) * 1000:6.2f} ms/job")


if __name__ == "__main__":
    main()

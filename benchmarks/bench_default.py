"""Time the default suite end to end and Neural Cleanse per subject.

Neural Cleanse is timed two ways on the same subjects, with the same steps and
batch: samecurve's batched optimisation (all K candidate labels in one forward
pass) and the per-label loop of the original implementation (K separate
optimisations). Prints the figures and their ratio.

    python benchmarks/bench_default.py [--subjects 4] [--suite default] [--skip-suite]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.nn import functional as F

from samecurve.api import Budget, Meter
from samecurve.run.cell import CellJob, build_view
from samecurve.run.runner import run_suite
from samecurve.run.suite import TaskEntry, ToolEntry, load_suite, make_task
from samecurve.tools.neural_cleanse import NeuralCleanse
from samecurve.zoo.builder import build
from samecurve.zoo.cache import Cache


def per_label_loop(view, steps: int, batch: int) -> None:
    """The peer: one mask/pattern optimisation per candidate label, one after another."""
    x_all = view.clean.x
    k = view.num_classes
    c, h, w = view.input_shape
    g = view.generator()
    for label in range(k):
        m = (torch.rand(1, 1, h, w, generator=g) * 2 - 3).requires_grad_()
        p = (torch.randn(1, c, h, w, generator=g) * 0.1).requires_grad_()
        opt = torch.optim.Adam([m, p], lr=0.1, betas=(0.5, 0.9))
        target = torch.full((batch,), label)
        for _ in range(steps):
            x = x_all[torch.randint(len(x_all), (batch,), generator=g)]
            mask, pattern = torch.sigmoid(m), torch.sigmoid(p)
            loss = F.cross_entropy(view.model((1 - mask) * x + mask * pattern), target)
            loss = loss + 1e-3 * mask.sum()
            grads = torch.autograd.grad(loss, [m, p])
            m.grad, p.grad = grads
            opt.step()


def time_neural_cleanse(n_subjects: int, suite_name: str, cache: Cache) -> None:
    suite = load_suite(suite_name)
    specs = [s for s in suite.subject_specs() if s.recipe == "patch"][:n_subjects]
    tool = NeuralCleanse()
    task = make_task(TaskEntry(name="discover"))
    batched, looped = [], []
    for spec in specs:
        subject = build(spec, cache)
        job = CellJob(TaskEntry(name="discover"), ToolEntry(name="neural-cleanse"), subject.id, 0,
                      Budget(seconds=10_000), "cpu", str(cache.root))
        view = build_view(job, task, tool, subject, Meter(job.budget))
        t = time.perf_counter()
        tool.discover(view)
        batched.append(time.perf_counter() - t)
        t = time.perf_counter()
        per_label_loop(view, tool.steps, tool.batch_size)
        looped.append(time.perf_counter() - t)
    mb, ml = statistics.mean(batched), statistics.mean(looped)
    print(f"neural-cleanse, {tool.steps} steps x batch {tool.batch_size}, "
          f"{len(specs)} subjects, torch threads {torch.get_num_threads()}:")
    print(f"  batched (samecurve): {mb:6.2f} s/subject  (min {min(batched):.2f}, max {max(batched):.2f})")
    print(f"  per-label loop     : {ml:6.2f} s/subject  (min {min(looped):.2f}, max {max(looped):.2f})")
    print(f"  speed-up           : {ml / mb:6.2f}x")


def time_suite(suite_name: str, cache: Cache, workers: int) -> None:
    suite = load_suite(suite_name)
    out = Path(tempfile.mkdtemp(prefix="bench-run-"))
    try:
        t = time.perf_counter()
        run_suite(suite, out, workers=workers, cache=cache, progress=False).close()
        total = time.perf_counter() - t
    finally:
        shutil.rmtree(out, ignore_errors=True)
    n_cells = len(suite.tools) * len(suite.subject_specs()) * len(suite.seeds)
    print(f"suite {suite_name!r}: {total:.0f} s wall with {workers} workers, "
          f"{len(suite.subject_specs())} subjects, {n_cells} cells "
          f"(cache at {cache.root}: a warm cache skips the subject builds)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--subjects", type=int, default=4)
    ap.add_argument("--suite", default="default")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--skip-suite", action="store_true")
    ap.add_argument("--cache", default=None, help="subject cache (default: the user cache)")
    args = ap.parse_args()
    cache = Cache(args.cache)
    if not args.skip_suite:
        time_suite(args.suite, cache, args.workers)
    torch.set_num_threads(1)
    time_neural_cleanse(args.subjects, args.suite, cache)


if __name__ == "__main__":
    main()

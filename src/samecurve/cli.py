"""The `samecurve` command: run a suite, list plug-ins, re-render a report,
export results. Every expected failure is one line on stderr and exit code 2."""

from __future__ import annotations

import csv
import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from samecurve.registry import KINDS, UnknownName, get, names

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Grade interpretability tools, baselines and adversaries on models with planted flaws.",
)
err = Console(stderr=True)
out = Console()


def fail(message: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/bold red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@app.command()
def run(
    suite: Annotated[str, typer.Argument(help="suite YAML file, or a built-in: default, smoke")] = "default",
    out_dir: Annotated[Path, typer.Option("--out", help="run folder (results + report)")] = Path("runs/default"),
    device: Annotated[str, typer.Option(help="cpu or cuda")] = "cpu",
    workers: Annotated[int, typer.Option(help="worker processes (0 = run in this process)")] = 2,
    cache: Annotated[Path | None, typer.Option(help="subject cache (default: $SAMECURVE_CACHE or the user cache)")] = None,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
) -> None:
    """Build the suite's subjects, run every cell (resuming), print the leaderboard, write the report."""
    from samecurve.report.build import write_report
    from samecurve.run.runner import RunError, run_suite
    from samecurve.run.store import StoreError
    from samecurve.run.suite import SuiteError, load_suite
    from samecurve.zoo.cache import Cache, CorruptSubject

    if workers < 0:
        fail("--workers must be 0 or more")
    try:
        s = load_suite(suite)
        store = run_suite(s, out_dir, device=device, workers=workers,
                          cache=Cache(cache) if cache else None, progress=not quiet)
        store.close()
        path, boards = write_report(out_dir)
    except KeyboardInterrupt:
        fail(f"interrupted; finished cells are saved in {out_dir}: run the same command to resume",
             130)
    except (SuiteError, StoreError, RunError, CorruptSubject) as exc:
        fail(str(exc))
    _print_boards(boards)
    out.print(f"report: [bold]{path}[/bold]")


def _print_boards(boards: list) -> None:
    from samecurve.report.build import leakage_verdict, print_board

    for b in boards:
        if b.family == "all":
            print_board(b, out)
            leak = leakage_verdict(b)
            if leak:
                out.print(f"leakage check: {leak}")


@app.command()
def ls(what: Annotated[str, typer.Argument(help="tools, tasks, recipes, archs or datasets")] = "tools") -> None:
    """List what is registered (built in, or added by installed packages)."""
    kind = what.rstrip("s")
    if kind not in KINDS:
        fail(f"cannot list {what!r}; use one of {', '.join(k + 's' for k in KINDS)}")
    for name in names(kind):
        obj = get(kind, name)
        doc = (obj.__doc__ or "").strip().splitlines()
        extra = ""
        if kind == "tool":
            extra = f" [dim]({obj.kind}; answers {', '.join(sorted(obj.answers))}; needs {', '.join(sorted(obj.needs)) or 'queries only'})[/dim]"
        out.print(f"[bold]{name}[/bold]{extra}  {doc[0] if doc else ''}", highlight=False)


@app.command()
def report(folder: Annotated[Path, typer.Argument(help="a run folder")]) -> None:
    """Re-render the HTML report of a run folder from its stored results."""
    from samecurve.report.build import write_report
    from samecurve.run.store import StoreError

    if not (folder / "results.sqlite").is_file():
        fail(f"{folder} holds no results.sqlite; give the --out folder of a `samecurve run`")
    try:
        path, boards = write_report(folder)
    except (StoreError, ValueError) as exc:
        fail(str(exc))
    _print_boards(boards)
    out.print(f"report: [bold]{path}[/bold]")


class Format(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


@app.command()
def results(
    folder: Annotated[Path, typer.Argument(help="a run folder")],
    format: Annotated[Format, typer.Option("--format")] = Format.table,
    family: Annotated[str, typer.Option(help="all, or one trojan family")] = "all",
) -> None:
    """Print the leaderboard (table), or every summary row as JSON or CSV."""
    from samecurve.report.build import print_board
    from samecurve.run.aggregate import boards, load_run
    from samecurve.run.store import Store

    if not (folder / "results.sqlite").is_file():
        fail(f"{folder} holds no results.sqlite; give the --out folder of a `samecurve run`")
    with Store(folder) as store:
        try:
            run_data = load_run(store)
        except ValueError as exc:
            fail(str(exc))
    every = boards(run_data)
    known = sorted({b.family for b in every})
    if family not in known:
        fail(f"no family {family!r} in this run; use one of {', '.join(known)}")
    chosen = every if family == "all" else [b for b in every if b.family == family]
    if format is Format.table:
        for b in chosen:
            if b.family == family:
                print_board(b, out)
        return
    rows = [
        {"task": b.task, "family": b.family, "tool": r.tool, "kind": r.kind, "metric": m,
         "mean": iv.mean, "lo": iv.lo, "hi": iv.hi, "n": iv.n, "chance": b.chance.get(m),
         "errors": r.n_error, "timeouts": r.n_timeout}
        for b in chosen for r in b.rows for m, iv in r.intervals.items()
    ]
    if format is Format.json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
    else:
        writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]) if rows else ["task"])
        writer.writeheader()
        writer.writerows(rows)


@app.command()
def compare(
    folder: Annotated[Path, typer.Argument(help="a run folder")],
    tool_a: Annotated[str, typer.Argument(help="tool label")],
    tool_b: Annotated[str, typer.Argument(help="tool label to compare against")],
    metric: Annotated[str, typer.Option(help="a metric name, e.g. auroc, target_top1")] = "auroc",
    task: Annotated[str, typer.Option(help="task name")] = "discover",
) -> None:
    """Paired comparison of two tools on the same subjects: difference, 95% CI, p-value."""
    from samecurve.run.aggregate import compare as paired
    from samecurve.run.aggregate import load_run
    from samecurve.run.store import Store

    if not (folder / "results.sqlite").is_file():
        fail(f"{folder} holds no results.sqlite; give the --out folder of a `samecurve run`")
    with Store(folder) as store:
        run_data = load_run(store)
    labels = {t.display for t in run_data.suite.tools}
    for t in (tool_a, tool_b):
        if t not in labels:
            fail(f"no tool {t!r} in this run; it has {', '.join(sorted(labels))}")
    try:
        c = paired(run_data, task, tool_a, tool_b, metric)
    except ValueError as exc:
        fail(str(exc))
    out.print(f"{tool_a} - {tool_b} on {metric}: {c}")


def main() -> None:  # pragma: no cover - console entry point
    try:
        app()
    except UnknownName as exc:
        fail(str(exc))

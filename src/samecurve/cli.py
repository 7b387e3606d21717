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


class Backend(StrEnum):
    local = "local"
    ray = "ray"


@app.command()
def run(
    suite: Annotated[str, typer.Argument(help="suite YAML file, or a built-in: default, smoke")] = "default",
    out_dir: Annotated[Path, typer.Option("--out", help="run folder (results + report)")] = Path("runs/default"),
    device: Annotated[str, typer.Option(help="cpu or cuda")] = "cpu",
    workers: Annotated[int, typer.Option(help="jobs run in parallel: worker processes, or Ray tasks (0 = in this process, local only)")] = 2,
    cache: Annotated[Path | None, typer.Option(help="subject cache (default: $SAMECURVE_CACHE or the user cache)")] = None,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
    backend: Annotated[Backend, typer.Option(help="local worker processes, or a Ray cluster")] = Backend.local,
    address: Annotated[str | None, typer.Option(help="Ray cluster address (default: start a local one)")] = None,
) -> None:
    """Build the suite's subjects, run every cell (resuming), print the leaderboard, write the report."""
    from rich.markup import escape

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
                          cache=Cache(cache) if cache else None, progress=not quiet,
                          backend=backend.value, address=address)
        store.close()
        path, boards = write_report(out_dir)
    except KeyboardInterrupt:
        fail(f"interrupted; finished cells are saved in {out_dir}: run the same command to resume",
             130)
    except (SuiteError, StoreError, RunError, CorruptSubject) as exc:
        fail(escape(str(exc)))  # printed as text: `pip install -e ".[ray]"` keeps its brackets
    _print_boards(boards)
    out.print(f"report: [bold]{path}[/bold]")


def _print_boards(boards: list) -> None:
    from samecurve.report.build import leakage_lines, print_board

    for b in boards:
        if b.family == "all":
            print_board(b, out)
    for where, line in leakage_lines(boards).items():
        out.print(f"{where}: {line}", highlight=False)


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
        if kind == "tool" and obj.kind == "combination":
            extra = " [dim](combination; answers and needs: its members')[/dim]"
        elif kind == "tool":
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
         "errors": r.n_error, "timeouts": r.n_timeout, "outside_design": r.outside_design}
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


zoo_app = typer.Typer(no_args_is_help=True, help="Build, list and inspect populations of subjects.")
app.add_typer(zoo_app, name="zoo")


def _key_values(pairs: list[str], what: str) -> dict:
    """`k=v` options; values are read as YAML, so numbers, lists and booleans work."""
    import yaml

    out = {}
    for pair in pairs:
        if "=" not in pair:
            fail(f"{what} {pair!r} is not KEY=VALUE (e.g. {what} size=16)")
        k, v = pair.split("=", 1)
        out[k] = yaml.safe_load(v)
    return out


@zoo_app.command("build")
def zoo_build(
    recipe: Annotated[str, typer.Option(help="a recipe: see `samecurve ls recipes`")],
    count: Annotated[int, typer.Option(min=1, help="how many subjects")] = 4,
    first_seed: Annotated[int, typer.Option(min=0)] = 0,
    population: Annotated[str, typer.Option(help="dev (for tuning tools) or test (for reports)")] = "test",
    heldout: Annotated[bool, typer.Option(help="triggers from the heldout vocabulary")] = False,
    param: Annotated[list[str], typer.Option("--param", help="recipe param KEY=VALUE")] = [],  # noqa: B006
    suite: Annotated[str | None, typer.Option(help="take dataset, architectures and training from this suite")] = None,
    dataset: Annotated[str | None, typer.Option(help="a dataset (default: the suite's, or scenes)")] = None,
    dataset_param: Annotated[list[str], typer.Option("--dataset-param", help="KEY=VALUE")] = [],  # noqa: B006
    arch: Annotated[list[str], typer.Option("--arch", help="architecture(s), taken in turn by seed")] = [],  # noqa: B006
    workers: Annotated[int, typer.Option(min=0)] = 2,
    cache: Annotated[Path | None, typer.Option(help="subject cache")] = None,
    retry_failed: Annotated[bool, typer.Option(help="try again subjects that missed their gate before")] = False,
) -> None:
    """Build a population into the cache in parallel, skipping subjects already there
    (and, unless --retry-failed, subjects that missed their gate on every attempt)."""
    from rich.progress import Progress

    from samecurve.run.suite import SuiteError, load_suite
    from samecurve.zoo.cache import Cache
    from samecurve.zoo.population import build_population, population_specs
    from samecurve.zoo.train import TrainConfig

    if population not in ("dev", "test"):
        fail(f"--population must be dev or test, got {population!r}")
    zoo = None
    if suite:
        try:
            zoo = load_suite(suite).zoo
        except SuiteError as exc:
            fail(str(exc))
    ds = dataset or (zoo.dataset if zoo else "scenes")
    ds_params = {**(zoo.dataset_params if zoo and not dataset else {}), **_key_values(dataset_param, "--dataset-param")}
    archs = tuple(arch) or (tuple(zoo.archs) if zoo else ("small-cnn",))
    train = TrainConfig(**zoo.train.model_dump()) if zoo else TrainConfig()
    try:
        get("recipe", recipe)
        get("dataset", ds)(**ds_params)
        for a in archs:
            get("arch", a)
        specs = population_specs(
            recipe, count, first_seed=first_seed, params=_key_values(param, "--param"),
            population=population, heldout=heldout, dataset=ds, dataset_params=ds_params,
            archs=archs, train=train,
        )
        for spec in specs:
            spec.make_recipe()
    except (TypeError, ValueError, KeyError) as exc:
        fail(f"bad zoo build arguments: {exc}")
    c = Cache(cache) if cache else Cache()
    if retry_failed:
        for spec in specs:
            c.forget_failure(spec.id)
    failed = []
    with Progress(console=err) as bar:
        t = bar.add_task(f"{recipe} x{count}", total=len(specs))

        def done(b) -> None:
            if b.card is None:
                failed.append(b)
                bar.console.print(f"[red]failed[/red] {b.spec.recipe} seed {b.spec.seed}: {b.error}")
            else:
                how = "cached" if b.cached else f"{b.card['build_seconds']:.0f}s"
                asr = b.card.get("attack_success")
                asr_text = "" if asr is None else f" asr={asr:.3f}"
                bar.console.print(f"{b.card['id']}  acc={b.card['clean_accuracy']:.3f}{asr_text}  ({how})")
            bar.advance(t)

        build_population(specs, c, workers=workers, on_done=done)
    out.print(f"{len(specs) - len(failed)} of {len(specs)} subjects in {c.root}")
    if failed:
        raise typer.Exit(1)


@zoo_app.command("ls")
def zoo_ls(
    recipe: Annotated[str | None, typer.Option(help="only this recipe")] = None,
    cache: Annotated[Path | None, typer.Option(help="subject cache")] = None,
) -> None:
    """List cached subjects with the figures on their cards."""
    from rich.table import Table

    from samecurve.zoo.cache import Cache, CorruptSubject
    from samecurve.zoo.population import cached_cards

    c = Cache(cache) if cache else Cache()
    table = Table(title=f"subjects in {c.root}", title_justify="left")
    for col in ("id", "family", "population", "dataset", "arch", "clean acc", "attack success", "build s"):
        table.add_column(col, justify="right" if col[0] in "cab" and col != "arch" else "left")
    try:
        for card in cached_cards(c):
            if recipe and card["recipe"] != recipe:
                continue
            asr = card.get("attack_success")
            table.add_row(
                card["id"], card["family"], card.get("population", "test"), card["dataset"],
                card["arch"], f"{card['clean_accuracy']:.3f}", "—" if asr is None else f"{asr:.3f}",
                f"{card['build_seconds']:.0f}",
            )
    except CorruptSubject as exc:
        fail(str(exc))
    out.print(table)


@zoo_app.command("show")
def zoo_show(
    subject_id: Annotated[str, typer.Argument(help="a subject id from `samecurve zoo ls`")],
    image: Annotated[Path | None, typer.Option(help="where to write the example PNG (default: ID.png)")] = None,
    cache: Annotated[Path | None, typer.Option(help="subject cache")] = None,
) -> None:
    """Print a subject's card and write its example image (clean, triggered, footprint)."""
    from samecurve.api import card_modality, is_program_card
    from samecurve.zoo.cache import Cache, CorruptSubject
    from samecurve.zoo.population import text_example, write_example

    c = Cache(cache) if cache else Cache()
    if not c.has(subject_id):
        fail(f"no subject {subject_id!r} in {c.root}; list them with `samecurve zoo ls`")
    try:
        card = c.load_card(subject_id)
        if is_program_card(card):  # nothing to draw: the card holds the hidden program
            out.print_json(json.dumps(card))
            return
        if card_modality(card) == "text":  # an example sentence, without and with the trigger
            out.print_json(json.dumps(card))
            for line in text_example(c, subject_id):
                out.print(line, markup=False)
            return
        path = write_example(c, subject_id, image or Path(f"{subject_id}.png"))
    except CorruptSubject as exc:
        fail(str(exc))
    out.print_json(json.dumps(card))
    out.print(f"example image: [bold]{path}[/bold]")


@app.command()
def submit(
    subject_id: Annotated[str, typer.Argument(help="a hidden-program subject id from `samecurve zoo ls`")],
    program: Annotated[Path, typer.Argument(help="a .py file defining the function (restricted Python)")],
    entry: Annotated[str, typer.Option(help="the function's name")] = "f",
    cache: Annotated[Path | None, typer.Option(help="subject cache")] = None,
    seconds: Annotated[float, typer.Option(help="time limit for running the program")] = 120.0,
    memory_mb: Annotated[int, typer.Option(help="memory limit for running the program")] = 1024,
) -> None:
    """Score your own program against a hidden-program subject, exactly as the
    replace task scores a distiller's (the sandbox checks and limits it)."""
    from samecurve.api import Program, is_program_card
    from samecurve.programs.sandbox import ProgramFailed
    from samecurve.programs.source import ProgramRejected
    from samecurve.tasks.replace import ReplaceTask
    from samecurve.zoo.cache import Cache, CorruptSubject

    c = Cache(cache) if cache else Cache()
    if not c.has(subject_id):
        fail(f"no subject {subject_id!r} in {c.root}; list them with `samecurve zoo ls`")
    try:
        source = program.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read program {program} ({exc}); give a UTF-8 .py file")
    try:
        subject = c.load(subject_id)
        if not is_program_card(subject.card):
            fail(f"subject {subject_id} is an image classifier with planted trojans, not a "
                 "hidden-program subject; pick a grid-rule, image-rule, sequence-task or "
                 "tracr subject")
        metrics = ReplaceTask(program_seconds=seconds, memory_mb=memory_mb).grade(
            Program(source, entry=entry), subject)
    except (ProgramRejected, ProgramFailed, CorruptSubject) as exc:
        fail(f"{program}: {exc}")
    from rich.table import Table

    table = Table(title=f"{program.name} on {subject_id} ({subject.card['family']})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in metrics.items():
        if value == value:  # NaN: does not apply to this subject
            table.add_row(name, f"{value:.4f}")
    out.print(table)


@app.command()
def audit(
    model: Annotated[Path, typer.Option("--model", help="safetensors, TorchScript, or a torch.save state dict")],
    data: Annotated[str, typer.Option("--data", help="clean data: .npz, an ImageFolder folder, or IDX as IMAGES,LABELS")],
    arch: Annotated[str | None, typer.Option(help="architecture of a weights file: a registered name or module:Class")] = None,
    from_run: Annotated[Path | None, typer.Option("--from", help="run folder whose leaderboards choose the tools (default: newest under runs/)")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="report folder (default: audits/MODEL-STEM)")] = None,
    fix: Annotated[bool, typer.Option("--fix", help="also run the best repair chain and save the repaired model")] = False,
    budget: Annotated[float, typer.Option(help="seconds for all tools together (each gets a share)")] = 240.0,
    device: Annotated[str, typer.Option(help="cpu or cuda")] = "cpu",
    seed: Annotated[int, typer.Option(help="seed of the tools' randomness")] = 0,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
) -> None:
    """Aim the tools the latest benchmark run ranks best at your own model: verdict, target, trigger, affected inputs, and with --fix a repaired model."""
    from rich.markup import escape

    from samecurve.audit import AuditError
    from samecurve.audit.report import print_summary, write_all
    from samecurve.audit.run import AuditConfig
    from samecurve.audit.run import audit as run_audit

    config = AuditConfig(model=model, data=data, arch=arch, from_run=from_run, out=out_dir, fix=fix,
                         budget=budget, device=device, seed=seed, progress=not quiet)
    try:
        result = run_audit(config, err)
        written = write_all(result)
    except AuditError as exc:
        fail(escape(str(exc)))  # printed as text: a message may quote [brackets]
    except KeyboardInterrupt:
        fail("interrupted; the audit did not finish", 130)
    print_summary(result, out)
    out.print(f"report: [bold]{escape(str(written[-1]))}[/bold]")


def main() -> None:  # pragma: no cover - console entry point
    try:
        app()
    except UnknownName as exc:
        fail(str(exc))

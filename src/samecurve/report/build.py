"""Turns a stored run into what people read: the HTML report's data and the
terminal leaderboard. Kept apart from rendering so each can be tested alone."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from samecurve import __version__
from samecurve.registry import get
from samecurve.report.html import render_report
from samecurve.report.model import (
    Cell,
    Comparison,
    GalleryItem,
    MetricColumn,
    ReportData,
    ToolOutput,
    ToolRow,
)
from samecurve.run.aggregate import Board, RunData, ToolSummary, boards, compare, load_run
from samecurve.run.store import Store

REPORT_NAME = "report.html"
LABELS = {
    "auroc": "Detection AUROC",
    "aupr": "Detection AUPR",
    "fpr95": "FPR @ 95% TPR",
    "brier": "Brier",
    "target_top1": "Target top-1",
    "trigger_efficacy": "Trigger efficacy",
    "trigger_iou": "Trigger IoU",
    "attribution_corr": "Attribution corr.",
    "pointing_game": "Pointing game",
}


def _rows(board: Board) -> list[ToolRow]:
    out = []
    for r in board.rows:
        cells = {}
        for m in board.metrics:
            iv = r.intervals.get(m.name)
            cells[m.name] = (
                Cell(iv.mean, iv.lo, iv.hi, iv.n, True)
                if iv is not None
                else Cell(float("nan"), float("nan"), float("nan"), 0, False)
            )
        out.append(
            ToolRow(r.tool, r.kind, cells, r.n_ok, r.n_error, r.n_timeout, r.seconds_mean,
                    r.queries_mean, r.outside_design)
        )
    return out


def _comparisons(run: RunData, board: Board) -> list[Comparison]:
    """Every ranked tool against the `random` tool, on each per-subject metric and AUROC."""
    names = {r.tool for r in board.rows}
    if "random" not in names:
        return []
    out = []
    for r in board.rows:
        if r.kind in ("oracle",) or r.tool in ("random", "null"):
            continue
        for m in board.metrics:
            if m.name not in r.intervals or (m.population and m.name != "auroc"):
                continue
            c = compare(run, board.task, r.tool, "random", m.name)
            out.append(Comparison(r.tool, "random", m.name, c.mean_diff, c.lo, c.hi, c.n,
                                  c.p_value))
    return out


def _gallery(run: RunData, task: str, limit: int = 12) -> list[GalleryItem]:
    dataset = get("dataset", run.suite.zoo.dataset)(**run.suite.zoo.dataset_params)
    names = getattr(dataset, "class_names", ())
    seed = run.suite.seeds[0]
    items = []
    trojaned = [i for i, c in run.cards.items() if c["answer_key"]["trojaned"]]
    for sid in sorted(trojaned, key=lambda i: (run.cards[i]["family"], i))[:limit]:
        card, arrays = run.cards[sid], run.arrays[sid]
        target = int(card["answer_key"]["target"])
        outputs = []
        for t in run.suite.tools:
            cell = next(
                (c for c in run.cells.get((task, t.display), [])
                 if c.key.subject == sid and c.key.seed == seed),
                None,
            )
            art = cell.artifacts if cell else {}
            prob = cell.metrics.get("probability") if cell else None
            chosen = cell.metrics.get("rediscovery") if cell else None
            targets = art.get("targets")
            outputs.append(
                ToolOutput(
                    tool=t.display,
                    probability=prob,
                    target=int(targets[0]) if targets is not None and len(targets) else None,
                    trigger_mask=art.get("trigger_mask"),
                    trigger_pattern=art.get("trigger_pattern"),
                    attribution=art.get("attribution"),
                    rediscovered=None if chosen is None else bool(chosen),
                )
            )
        items.append(
            GalleryItem(
                subject=sid,
                family=card["family"],
                target=target,
                target_name=names[target] if target < len(names) else str(target),
                clean_example=arrays["clean_example"],
                triggered_example=arrays["triggered_example"],
                true_mask=arrays["true_mask"],
                true_pattern=arrays["true_pattern"],
                outputs=outputs,
            )
        )
    return items


def twin_gaps(cards: Sequence[dict], clean: Sequence[dict]) -> list[float]:
    """Each subject's clean accuracy minus the mean of the clean twins that share its
    architecture and dataset (a ResNet is not compared with CNN twins); subjects
    with no such twin are left out."""
    by_kind: dict[tuple, list[float]] = {}
    for c in clean:
        by_kind.setdefault((c["arch"], c["dataset"]), []).append(c["clean_accuracy"])
    return [
        c["clean_accuracy"] - float(np.mean(by_kind[k]))
        for c in cards
        if (k := (c["arch"], c["dataset"])) in by_kind
    ]


def _summary(run: RunData) -> dict[str, str]:
    fam: dict[str, list[dict]] = {}
    for c in run.cards.values():
        fam.setdefault(c["family"], []).append(c)
    facts = {"samecurve": __version__, "device": run.meta.get("device", "?"),
             "seeds": ", ".join(map(str, run.suite.seeds)),
             "budget per cell": f"{run.suite.budget.seconds:g} s",
             "wall time": f"{float(run.meta.get('wall_seconds', 'nan')):.0f} s"}
    for f in json.loads(run.meta.get("gate_failures", "[]")):
        facts[f"left out: {f['recipe']} seed {f['seed']}"] = f["error"][:300]
    for f, cards in sorted(fam.items()):
        acc = [c["clean_accuracy"] for c in cards]
        text = f"{len(cards)} subjects, clean accuracy {np.mean(acc):.3f} ({min(acc):.3f}–{max(acc):.3f})"
        gaps = twin_gaps(cards, fam.get("clean", [])) if f != "clean" else []
        if gaps:
            text += (f" ({100 * np.mean(gaps):+.1f} points vs clean twins of the same "
                     f"architecture; {100 * min(gaps):+.1f} to {100 * max(gaps):+.1f})")
        asr = [c["attack_success"] for c in cards if c["attack_success"] is not None]
        if asr:
            text += f", attack success {np.mean(asr):.3f} ({min(asr):.3f}–{max(asr):.3f})"
        facts[f"subjects: {f}"] = text
    return facts


# Detectors that see only incidental weight properties. If one beats chance, clean
# and trojaned subjects differ in something other than the trojan's behaviour.
LEAKAGE_PROBES = ("weight-stats", "layer-norms")
LEAKAGE_MIN_EACH = 5


def leakage_verdict(board: Board, probe: str = "weight-stats") -> str | None:
    """The leakage check on one board, in words: a probe passes when its AUROC is
    consistent with chance (95% CI contains 0.5) or below 0.6. With fewer than
    LEAKAGE_MIN_EACH subjects in either class the bootstrap interval means little
    (two trojaned subjects above every clean one give [1.00, 1.00]), so it says so."""
    row = next((r for r in board.rows if r.tool == probe), None)
    iv = row.intervals.get("auroc") if row else None
    if iv is None or not np.isfinite(iv.mean):
        return None
    pos = iv.positives if iv.positives is not None else 0
    counts = f"n={iv.n} ({pos} trojaned, {iv.n - pos} clean)"
    if min(pos, iv.n - pos) < LEAKAGE_MIN_EACH:
        verdict = f"too few subjects to tell (the check needs {LEAKAGE_MIN_EACH} of each)"
    elif iv.lo <= 0.5 or iv.mean < 0.6:
        verdict = "consistent with chance"
    else:
        verdict = ("ABOVE CHANCE: clean and trojaned subjects differ in their weights beyond "
                   "chance, so detection scores here may be flattered")
    return f"{probe} AUROC {iv.mean:.2f} [{iv.lo:.2f}, {iv.hi:.2f}] {counts}: {verdict}"


def leakage_lines(all_boards: Sequence[Board]) -> dict[str, str]:
    """The leakage check for every probe in the run, overall and per family."""
    out = {}
    for board in all_boards:
        for probe in LEAKAGE_PROBES:
            line = leakage_verdict(board, probe)
            if line:
                out[f"leakage · {board.family} · {probe}"] = line
    return out


def report_data(run: RunData, all_boards: Sequence[Board]) -> ReportData:
    main = next(b for b in all_boards if b.family == "all")
    summary = {**_summary(run), **leakage_lines(all_boards)}
    columns = [
        MetricColumn(m.name, LABELS.get(m.name, m.name), m.question, m.higher_is_better,
                     m.description)
        for m in main.metrics
    ]
    return ReportData(
        title=f"samecurve — {run.suite.name} suite",
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        suite=run.suite.name,
        summary=summary,
        metrics=columns,
        chance=main.chance,
        rows=_rows(main),
        comparisons=_comparisons(run, main),
        gallery=_gallery(run, main.task),
        families=[(b.family, _rows(b)) for b in all_boards if b.family != "all"],
    )


def write_report(folder: str | Path) -> tuple[Path, list[Board]]:
    """(Re-)render the HTML report of a run folder from its store alone."""
    with Store(folder) as store:
        run = load_run(store, with_artifacts=True)
    all_boards = boards(run)
    path = render_report(report_data(run, all_boards), Path(folder) / REPORT_NAME)
    return path, all_boards


def _fmt(summary: ToolSummary, metric: str) -> str:
    iv = summary.intervals.get(metric)
    if iv is None:
        return "[dim]—[/dim]"
    if not np.isfinite(iv.mean):
        return "n/a"
    return f"{iv.mean:.2f} [dim][{iv.lo:.2f},{iv.hi:.2f}][/dim]"


def print_board(board: Board, console: Console) -> None:
    """Two compact tables (detection; localisation) that fit a terminal."""
    groups = [
        ("detection", [m for m in board.metrics if m.question == "detect"]),
        ("target, trigger, attribution", [m for m in board.metrics if m.question != "detect"]),
    ]
    for title, metrics in groups:
        table = Table(title=f"{board.task} · {board.family} · {title}", title_justify="left")
        table.add_column("tool")
        for m in metrics:
            arrow = "↑" if m.higher_is_better else "↓"
            table.add_column(f"{LABELS.get(m.name, m.name)} {arrow}", justify="right")
        table.add_column("N", justify="right")
        table.add_column("err/to", justify="right")
        for r in board.rows:
            ns = [iv.n for m in metrics if (iv := r.intervals.get(m.name)) is not None]
            name = f"[italic]{r.tool} (oracle)[/italic]" if r.kind == "oracle" else r.tool
            if r.outside_design:
                name += " [dim]†[/dim]"
            table.add_row(name, *[_fmt(r, m.name) for m in metrics],
                          str(max(ns)) if ns else "—", f"{r.n_error}/{r.n_timeout}")
        table.add_row("[dim]chance[/dim]", *[
            "[dim]n/a[/dim]" if not np.isfinite(board.chance[m.name])
            else f"[dim]{board.chance[m.name]:.2f}[/dim]" for m in metrics], "", "")
        console.print(table)
    console.print("[dim]mean [95% bootstrap CI] over subjects; N = subjects; crashes and "
                  "timeouts score at the floor; — = not attempted"
                  + ("; † = a family outside the tool's design (it ran and is scored)"
                     if any(r.outside_design for r in board.rows) else "") + "[/dim]")

"""Turns a stored run into what people read: the HTML report's data and the
terminal leaderboard. Kept apart from rendering so each can be tested alone."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from samecurve import __version__
from samecurve.api import MetricSpec, card_modality, is_program_card, task_accepts
from samecurve.registry import get
from samecurve.report.html import count, fmt, render_report
from samecurve.report.model import (
    Cell,
    Comparison,
    GalleryItem,
    Leaderboard,
    MetricColumn,
    ProgramItem,
    RecoveredProgram,
    ReportData,
    TaskSection,
    TextTriggerItem,
    ToolOutput,
    ToolRow,
)
from samecurve.run.aggregate import Board, RunData, ToolSummary, boards, compare, load_run
from samecurve.run.store import Store
from samecurve.run.suite import make_task, make_tool
from samecurve.tasks.replace import program_text

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
    "rediscovery": "Rediscovery",
    "asr_after": "Attack success after",
    "acc_drop": "Clean acc. drop",
    "repaired": "Repaired (<2% ASR, <1 pt)",
    "robust_acc": "Robust acc.",
    "der": "DER",
    "relapse": "Relapse",
    "unforeseen": "Unforeseen attack",
    "clean_acc_after": "Clean acc. after",
    "asr_before": "Attack success before",
    "edit_success": "Edit success",
    "side_effects": "Side effects",
    "steer_acc_drop": "Clean acc. drop",
    "agree_clean": "Agree: clean",
    "agree_triggered": "Agree: triggered",
    "agree_variant": "Agree: fainter trigger",
    "agree_shifted": "Agree: shifted",
    "agree_background": "Agree: new backgrounds",
    "agree_boundary": "Agree: boundary",
    "agree_adversarial": "Agree: adversarial",
    "agree_heldout": "Agree: held-out",
    "agree_ood": "Agree: OOD / longer",
    "agree_departures": "Agree: network's departures",
    "target_recall": "Target recall",
    "target_false_alarm": "Target false alarm",
    "solved": "Solved",
    "wrong": "Wrong",
    "no_answer": "No answer",
    "confident_wrong": "Confident-wrong (controls)",
    "fidelity_train": "Fidelity: train",
    "fidelity_heldout": "Fidelity: held-out",
    "fidelity_ood": "Fidelity: OOD / longer",
    "fidelity_errors": "Fidelity: network's errors",
    "truth_agreement": "Agrees with hidden program",
    "size_ratio": "Size / hidden program's",
}
TITLES = {
    "discover": "Discover · find the planted flaw",
    "edit": "Edit · remove a trojan",
    "steer": "Edit · steer one behaviour",
    "predict": "Predict · say what the model will do",
    "predict-programs": "Predict · say what a hidden-program network will do",
    "replace": "Replace · abandon the network for a program",
}
MAIN_TASK = "discover"  # drawn first, with charts and the gallery, when the suite has it
TABLE_METRICS = 5  # metric columns per terminal table, so a board fits a terminal


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
                    r.queries_mean, r.outside_design, r.grad_steps_mean)
        )
    return out


def _task(run: RunData, name: str) -> Any:
    """The task object of the suite entry a board was made for."""
    return make_task(next(e for e in run.suite.tasks if e.name == name))


def _comparisons(run: RunData, board: Board) -> list[Comparison]:
    """Every ranked tool against the task's baseline (`random` for discover, `null`, the
    unchanged model, for edits), on each per-subject metric and AUROC. Oracles, the
    baseline, the chance tool and `null` are yardsticks, not contenders, so they are left out."""
    task = _task(run, board.task)
    baseline = getattr(task, "baseline_tool", "random")
    if baseline not in {r.tool for r in board.rows}:
        return []
    yardsticks = {baseline, getattr(task, "chance_tool", "random"), "null"}
    out = []
    for r in board.rows:
        if r.kind == "oracle" or r.tool in yardsticks:
            continue
        for m in board.metrics:
            if m.name not in r.intervals or (m.population and m.name != "auroc"):
                continue
            c = compare(run, board.task, r.tool, baseline, m.name)
            out.append(Comparison(r.tool, baseline, m.name, c.mean_diff, c.lo, c.hi, c.n,
                                  c.p_value))
    return out


def _gallery(run: RunData, task: str, limit: int = 12) -> list[GalleryItem]:
    dataset = get("dataset", run.suite.zoo.dataset)(**run.suite.zoo.dataset_params)
    names = getattr(dataset, "class_names", ())
    seed = run.suite.seeds[0]
    items = []
    trojaned = [i for i, c in run.cards.items()
                if c["answer_key"]["trojaned"] and card_modality(c) == "image"]
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


TEXT_TASK = "discover-text"


def _text_triggers(run: RunData) -> list[TextTriggerItem]:
    """Per trojaned text subject: the planted trigger in a sentence beside every
    tool's recovered trigger (the text track's gallery)."""
    from samecurve.data.text import decode

    items = []
    seed = run.suite.seeds[0]
    for sid, card in sorted(run.cards.items(), key=lambda kv: (kv[1]["family"], kv[0])):
        if card_modality(card) != "text" or not card["answer_key"]["trojaned"]:
            continue
        arrays = run.arrays.get(sid, {})
        if "clean_example" not in arrays:
            continue
        names = getattr(get("dataset", card["dataset"])(**card["dataset_params"]), "class_names", ())
        target = int(card["answer_key"]["target"])
        recovered = []
        for t in run.suite.tools:
            cell = next((c for c in run.cells.get((TEXT_TASK, t.display), [])
                         if c.key.subject == sid and c.key.seed == seed), None)
            if cell is None or "token_exact" not in cell.metrics:
                continue  # the tool does not recover triggers, or did not run here
            tokens = cell.artifacts.get("trigger_tokens")
            chosen = cell.metrics.get("rediscovery")
            text = decode(tokens[None])[0] if tokens is not None and len(tokens) else None
            recovered.append((t.display, text, None if chosen is None else bool(chosen)))
        clean, triggered = decode(np.stack([arrays["clean_example"], arrays["triggered_example"]]))
        items.append(TextTriggerItem(
            subject=sid, family=card["family"],
            target_name=names[target] if target < len(names) else str(target),
            true_trigger=str((card["answer_key"]["trigger"] or {}).get("text", "")),
            clean_example=clean, triggered_example=triggered, recovered=recovered,
        ))
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
        what = "held-out accuracy on its rule" if is_program_card(cards[0]) else "clean accuracy"
        text = f"{len(cards)} subjects, {what} {np.mean(acc):.3f} ({min(acc):.3f}–{max(acc):.3f})"
        gaps = twin_gaps(cards, fam.get("clean", [])) if f != "clean" else []
        if gaps:
            text += (f" ({100 * np.mean(gaps):+.1f} points vs clean twins of the same "
                     f"architecture; {100 * min(gaps):+.1f} to {100 * max(gaps):+.1f})")
        asr = [c["attack_success"] for c in cards if c.get("attack_success") is not None]
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


def label_of(metric: MetricSpec) -> str:
    """A metric's column heading: its own, else the shared one for its name."""
    return metric.label or LABELS.get(metric.name, metric.name)


def _section(run: RunData, task_boards: Sequence[Board]) -> TaskSection:
    """One task's columns, boards ("all" first) and comparisons on its overall board."""
    overall = next(b for b in task_boards if b.family == "all")
    ordered = [overall, *(b for b in task_boards if b is not overall)]
    return TaskSection(
        task=overall.task,
        title=TITLES.get(overall.task, overall.task),
        metrics=[
            MetricColumn(m.name, label_of(m), m.question, m.higher_is_better,
                         m.description)
            for m in overall.metrics
        ],
        boards=[Leaderboard(b.family, _rows(b), b.chance) for b in ordered],
        comparisons=_comparisons(run, overall),
    )


def _outcome(cell: Any, control: bool) -> str:
    if cell is None:
        return "not run"
    if cell.status != "ok":
        return cell.status
    if control:
        return "confident-wrong" if cell.metrics.get("confident_wrong") == 1.0 else "right to abstain"
    for name in ("solved", "wrong", "no_answer"):
        if cell.metrics.get(name) == 1.0:
            return name.replace("_", " ")
    return "?"


def _programs(run: RunData, task: str = "replace") -> list[ProgramItem]:
    """Every hidden-program subject with each distiller's program and outcome."""
    entry = next((e for e in run.suite.tasks if e.name == task), None)
    if entry is None:
        return []
    replace_task = make_task(entry)
    tools = [t for t in run.suite.tools if task_accepts(replace_task, make_tool(t))]
    seed = run.suite.seeds[0]
    items = []
    cards = [c for c in run.cards.values() if is_program_card(c)]
    for card in sorted(cards, key=lambda c: (c["family"], c["rule"], c["id"])):
        control = bool(card["answer_key"]["incompressible"])
        answers = []
        for t in tools:
            cell = next((c for c in run.cells.get((task, t.display), [])
                         if c.key.subject == card["id"] and c.key.seed == seed), None)
            metrics = cell.metrics if cell else {}
            answers.append(RecoveredProgram(
                tool=t.display, outcome=_outcome(cell, control),
                size_ratio=float(metrics.get("size_ratio", float("nan"))),
                fidelity=float(metrics.get("fidelity_heldout", float("nan"))),
                source=program_text(cell.artifacts) if cell else None,
            ))
        items.append(ProgramItem(
            subject=card["id"], family=card["family"], rule=card["rule"],
            description=card["description"], network_accuracy=float(card["clean_accuracy"]),
            hidden_source=card["answer_key"]["program"], hidden_size=int(card["program_size"]),
            answers=answers,
        ))
    return items


def report_data(run: RunData, all_boards: Sequence[Board]) -> ReportData:
    """Every task of the suite in suite order, discover first when present (it has the
    charts and the gallery); a task that grades no subject has no boards and no section."""
    sections = [
        _section(run, [b for b in all_boards if b.task == e.name])
        for e in run.suite.tasks
        if any(b.task == e.name and b.family == "all" for b in all_boards)
    ]
    sections.sort(key=lambda s: s.task != MAIN_TASK)  # stable: the rest keep suite order
    has_main = bool(sections) and sections[0].task == MAIN_TASK
    return ReportData(
        title=f"samecurve — {run.suite.name} suite",
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        suite=run.suite.name,
        summary={**_summary(run), **leakage_lines(all_boards)},
        tasks=sections,
        gallery=_gallery(run, MAIN_TASK) if has_main else [],
        programs=_programs(run),
        text_triggers=_text_triggers(run),
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


def _table_groups(metrics: Sequence[MetricSpec]) -> list[tuple[str, list[MetricSpec]]]:
    """Discover's two tables (detection; localisation), or any other task's metrics in
    suite order, TABLE_METRICS at a time."""
    if any(m.question == "detect" for m in metrics):
        return [
            ("detection", [m for m in metrics if m.question == "detect"]),
            ("target, trigger, attribution", [m for m in metrics if m.question != "detect"]),
        ]
    chunks = [list(metrics[i : i + TABLE_METRICS]) for i in range(0, len(metrics), TABLE_METRICS)]
    out = []
    for i, chunk in enumerate(chunks, 1):
        title = ", ".join(dict.fromkeys(m.question for m in chunk))
        out.append((f"{title} ({i}/{len(chunks)})" if len(chunks) > 1 else title, chunk))
    return out


def print_board(board: Board, console: Console) -> None:
    """Compact tables that fit a terminal, each with the cost of every tool."""
    for title, metrics in _table_groups(board.metrics):
        table = Table(title=f"{board.task} · {board.family} · {title}", title_justify="left")
        table.add_column("tool")
        for m in metrics:
            arrow = "↑" if m.higher_is_better else "↓"
            table.add_column(f"{label_of(m)} {arrow}", justify="right")
        for name in ("N", "err/to", "s", "grad steps"):
            table.add_column(name, justify="right")
        for r in board.rows:
            ns = [iv.n for m in metrics if (iv := r.intervals.get(m.name)) is not None]
            name = f"[italic]{r.tool} (oracle)[/italic]" if r.kind == "oracle" else r.tool
            if r.outside_design:
                name += " [dim]†[/dim]"
            table.add_row(name, *[_fmt(r, m.name) for m in metrics],
                          str(max(ns)) if ns else "—", f"{r.n_error}/{r.n_timeout}",
                          fmt(r.seconds_mean, 1), count(r.grad_steps_mean))
        table.add_row("[dim]chance[/dim]", *[
            "[dim]n/a[/dim]" if not np.isfinite(board.chance.get(m.name, np.nan))
            else f"[dim]{board.chance[m.name]:.2f}[/dim]" for m in metrics], "", "", "", "")
        console.print(table)
    console.print("[dim]mean [95% bootstrap CI] over subjects; N = subjects; crashes and "
                  "timeouts score at the floor; — = not attempted; s = seconds per cell"
                  + ("; † = a family outside the tool's design (it ran and is scored)"
                     if any(r.outside_design for r in board.rows) else "") + "[/dim]")

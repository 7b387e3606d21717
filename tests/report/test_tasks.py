"""Every task of a suite gets its own part of the report: its columns, boards,
chance, comparisons against its own baseline, and (for edits) the trade-off figure."""

from __future__ import annotations

import re
import struct

import pytest
from rich.console import Console

from samecurve.api import CellKey, CellResult
from samecurve.report import figures
from samecurve.report.build import LABELS, print_board, report_data
from samecurve.report.html import render_html
from samecurve.report.model import Leaderboard
from samecurve.run.aggregate import Board, RunData, ToolSummary
from samecurve.run.stats import Interval
from samecurve.run.suite import Suite
from samecurve.tasks.discover import METRICS
from samecurve.tasks.edit import REMOVE_METRICS, STEER_METRICS
from samecurve.tasks.predict import PREDICT_METRICS

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TROJANED = ("p0", "p1", "p2")
# Per-subject attack success after each edit: nc-unlearn removes most of it, null none.
ASR_AFTER = {"nc-unlearn": (0.1, 0.0, 0.2), "null": (0.9, 0.95, 1.0),
             "random-prune": (0.8, 0.9, 0.95), "oracle-edit": (0.0, 0.0, 0.0)}
KINDS = {"nc-unlearn": "interpretability", "null": "baseline", "random-prune": "baseline",
         "oracle-edit": "oracle"}


def _summary(tool: str, metrics: dict[str, float], question: str) -> ToolSummary:
    intervals = {m: Interval(v, v - 0.05, v + 0.05, 3) for m, v in metrics.items()}
    return ToolSummary(tool, KINDS.get(tool, "interpretability"), frozenset({question}),
                       intervals, 3, 0, 0, 2.5, 0.0, grad_steps_mean=1234.0)


def _edit_board(family: str, chance_asr: float) -> Board:
    rows = [
        _summary(t, {"asr_after": sum(v) / 3, "acc_drop": 0.004 if t != "null" else 0.0,
                     "repaired": 0.0, "unforeseen": 0.3, "asr_before": 0.97}, "remove")
        for t, v in ASR_AFTER.items()
    ]
    chance = {m.name: float("nan") for m in REMOVE_METRICS} | {"asr_after": chance_asr}
    return Board("edit", family, REMOVE_METRICS, rows, chance)


def _steer_board() -> Board:
    rows = [_summary(t, {"edit_success": s, "side_effects": 0.01, "steer_acc_drop": 0.0}, "steer")
            for t, s in (("rome-like", 0.81), ("null", 0.0))]
    return Board("steer", "all", STEER_METRICS, rows, {m.name: float("nan") for m in STEER_METRICS})


def _run(tasks: list[str]) -> RunData:
    suite = Suite(name="edits", subjects=[{"recipe": "patch", "count": 3}], tasks=tasks,
                  tools=list(ASR_AFTER))

    def card(family: str) -> dict:
        return {"family": family, "clean_accuracy": 0.9, "arch": "small-cnn", "dataset": "scenes",
                "attack_success": 0.97 if family != "clean" else None,
                "answer_key": {"trojaned": family != "clean"}}

    cells = {
        ("edit", tool): [
            CellResult(CellKey("edit", tool, s, 0), "ok", {"asr_after": v, "acc_drop": 0.0},
                       1.0, 0, 10)
            for s, v in zip(TROJANED, values, strict=True)
        ]
        for tool, values in ASR_AFTER.items()
    }
    return RunData(suite=suite, cards={s: card("patch") for s in TROJANED} | {"c0": card("clean")},
                   arrays={}, cells=cells, meta={"device": "cpu", "wall_seconds": "5"})


@pytest.fixture(scope="module")
def edit_only() -> tuple[RunData, list[Board]]:
    return _run(["edit", "steer"]), [_edit_board("all", 0.88), _edit_board("patch", 0.777),
                                     _steer_board()]


def test_a_suite_without_discover_has_a_section_per_task_and_no_gallery(edit_only) -> None:
    data = report_data(*edit_only)
    assert [s.task for s in data.tasks] == ["edit", "steer"]
    assert [s.title for s in data.tasks] == ["Edit · remove a trojan", "Edit · steer one behaviour"]
    assert [b.family for b in data.tasks[0].boards] == ["all", "patch"]
    assert list(data.gallery) == []
    html = render_html(data)
    for label in ("Attack success after", "Clean acc. drop", "Repaired (&lt;2% ASR, &lt;1 pt)",
                  "Unforeseen attack", "Attack success before", "Edit success", "Side effects"):
        assert label in html, label
    assert 'id="task-edit"' in html and 'id="task-steer"' in html
    assert 'href="#task-steer"' in html  # the second task is in the nav
    assert 'id="gallery"' not in html


def test_edit_comparisons_are_against_null_on_the_same_subjects(edit_only) -> None:
    run, boards = edit_only
    comparisons = report_data(run, boards).tasks[0].comparisons
    assert comparisons, "no comparisons for the edit board"
    assert {c.baseline for c in comparisons} == {"null"}
    # The oracle, the baseline and the chance tool are yardsticks, not contenders.
    assert {c.tool for c in comparisons} == {"nc-unlearn"}
    asr = next(c for c in comparisons if c.metric == "asr_after")
    assert asr.n == 3
    assert asr.mean_diff == pytest.approx((0.1 + 0.0 + 0.2 - 0.9 - 0.95 - 1.0) / 3)
    html = render_html(report_data(run, boards))
    assert re.search(r"<td class=\"tool\">nc-unlearn</td>\s*<td>null</td>", html)


def test_each_board_shows_its_own_chance_and_grad_steps(edit_only) -> None:
    html = render_html(report_data(*edit_only))
    assert "0.880" in html  # overall chance, measured by random-prune
    assert "0.777" in html  # the patch family's own chance, not the overall one
    assert "grad steps / cell" in html
    assert "1,234" in html


def _png_width(png: bytes) -> int:
    assert png[:8] == PNG_SIGNATURE
    return struct.unpack(">I", png[16:20])[0]


def test_the_edit_section_embeds_one_frontier_figure(edit_only) -> None:
    html = render_html(report_data(*edit_only))
    frontiers = re.findall(
        r'<figure class="frontier"><img src="data:image/png;base64,[A-Za-z0-9+/=]+"', html)
    assert len(frontiers) == 1  # edit has one; steer has no asr_after / acc_drop
    assert html.index('class="frontier"') < html.index('id="task-steer"')


def test_frontier_has_one_panel_per_board(edit_only) -> None:
    rows = report_data(*edit_only).tasks[0].boards[0].rows
    one = figures.frontier_chart([Leaderboard("all", rows, {})])
    three = figures.frontier_chart([Leaderboard(f, rows, {}) for f in ("all", "patch", "blend")])
    assert _png_width(three) > 2 * _png_width(one)
    assert _png_width(figures.frontier_chart([Leaderboard("all", [], {})])) > 0  # nobody attempted


def test_discover_comes_first_and_keeps_its_charts(edit_only, monkeypatch) -> None:
    run, boards = edit_only
    run = RunData(_run(["edit", "discover", "steer"]).suite, run.cards, run.arrays, run.cells,
                  run.meta)
    monkeypatch.setattr("samecurve.report.build._gallery", lambda run, task: [])
    discover = Board("discover", "all", METRICS,
                     [_summary("null", {"auroc": 0.5}, "detect")], {"auroc": 0.5})
    data = report_data(run, [*boards, discover])
    assert [s.task for s in data.tasks] == ["discover", "edit", "steer"]
    html = render_html(data)
    assert html.index('id="task-discover"') < html.index('id="task-edit"')
    assert html.count('id="charts"') == 1 and 'id="edit-charts"' not in html
    assert 'id="edit-frontier"' in html


def test_every_edit_and_predict_metric_has_a_label() -> None:
    missing = [m.name for m in (*REMOVE_METRICS, *STEER_METRICS, *PREDICT_METRICS)
               if m.name not in LABELS]
    assert missing == []


def _printed(board: Board) -> str:
    console = Console(record=True, width=250, color_system=None)
    print_board(board, console)
    return console.export_text()


def test_print_board_splits_an_edit_board_into_narrow_tables() -> None:
    text = _printed(_edit_board("all", 0.88))
    for label in ("Attack success after", "Clean acc. drop", "Repaired (<2% ASR, <1 pt)",
                  "Unforeseen attack", "Attack success before", "grad steps"):
        assert label in text, label
    assert "edit · all · remove (1/2)" in text and "edit · all · remove (2/2)" in text
    assert "1,234" in text and "0.88" in text
    first, second = text.split("(2/2)")
    assert "Attack success after" in first and "Attack success after" not in second
    assert "Attack success before" in second
    assert "mean [95% bootstrap CI]" in text


def test_print_board_keeps_discovers_two_tables_and_prints_steer() -> None:
    discover = Board("discover", "all", METRICS, [_summary("null", {"auroc": 0.5}, "detect")],
                     {m.name: 0.5 for m in METRICS})
    text = _printed(discover)
    assert "discover · all · detection" in text
    assert "discover · all · target, trigger, attribution" in text
    steer = _printed(_steer_board())
    assert "steer · all · steer" in steer and "(1/" not in steer
    assert "Edit success" in steer and "Side effects" in steer and "rome-like" in steer

"""Render a `ReportData` to one self-contained HTML file.

The file embeds its images as data: URIs and its CSS inline, and links to no
external URL, so it can be mailed, archived or opened offline and still show
exactly what was measured.
"""

from __future__ import annotations

import base64
import contextlib
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from samecurve.report import figures
from samecurve.report.model import (
    Cell,
    Comparison,
    Leaderboard,
    MetricColumn,
    ReportData,
    TaskSection,
    ToolRow,
)

__all__ = ["count", "fmt", "render_report"]

_TEMPLATES = Path(__file__).resolve().parent / "templates"


def fmt(x: float | None, digits: int = 3) -> str:
    """A number with fixed decimals; None, nan and inf read "n/a" rather than a fake value."""
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"{x:.{digits}f}"


def _fmt_p(p: float) -> str:
    if not math.isfinite(p):
        return "n/a"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def count(x: float) -> str:
    """A mean count per cell (queries, gradient steps) with thousands separators."""
    return f"{x:,.0f}" if math.isfinite(x) else "n/a"


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


@dataclass(frozen=True)
class _CellView:
    text: str  # "0.810" or "—" / "n/a"
    ci: str  # "[0.700, 0.900]" or ""
    n: str  # "n=12" or ""
    title: str  # tooltip
    css: str  # space-separated classes


@dataclass(frozen=True)
class _RowView:
    tool: str
    kind: str
    oracle: bool
    cells: Sequence[_CellView]
    n_ok: int
    n_error: int
    n_timeout: int
    seconds: str
    queries: str
    grad_steps: str
    outside_design: bool = False


def _best(rows: Sequence[ToolRow], metric: MetricColumn) -> float | None:
    """Best displayed value among ranked (non-oracle) attempted cells; None if there is none.

    Compared after rounding to the shown precision so that values that read the
    same are all marked.
    """
    values = [
        round(c.mean, 3)
        for r in rows
        if r.kind != "oracle"
        and (c := r.cells.get(metric.name)) is not None
        and c.attempted
        and math.isfinite(c.mean)
    ]
    if not values:
        return None
    return max(values) if metric.higher_is_better else min(values)


def _cell_view(
    cell: Cell | None, metric: MetricColumn, best: float | None, oracle: bool
) -> _CellView:
    if cell is None:
        return _CellView("n/a", "", "", "no result for this metric", "num missing")
    if not cell.attempted:
        return _CellView("—", "", "", "not attempted", "num na")
    ci = ""
    if math.isfinite(cell.mean) and (math.isfinite(cell.lo) or math.isfinite(cell.hi)):
        ci = f"[{fmt(cell.lo)}, {fmt(cell.hi)}]"
    is_best = (
        not oracle and best is not None and math.isfinite(cell.mean) and round(cell.mean, 3) == best
    )
    title = f"{metric.label}: mean {fmt(cell.mean)}, 95% CI {ci or 'n/a'}, {cell.n} subjects"
    return _CellView(fmt(cell.mean), ci, f"n={cell.n}", title, "num best" if is_best else "num")


def _table_view(rows: Sequence[ToolRow], metrics: Sequence[MetricColumn]) -> list[_RowView]:
    best = {m.name: _best(rows, m) for m in metrics}
    out = []
    for r in rows:
        oracle = r.kind == "oracle"
        out.append(
            _RowView(
                tool=r.tool,
                kind=r.kind,
                oracle=oracle,
                cells=[_cell_view(r.cells.get(m.name), m, best[m.name], oracle) for m in metrics],
                n_ok=r.n_ok,
                n_error=r.n_error,
                n_timeout=r.n_timeout,
                seconds=fmt(r.seconds_mean, 1),
                queries=count(r.queries_mean),
                grad_steps=count(r.grad_steps_mean),
                outside_design=r.outside_design,
            )
        )
    return out


def _verdict(c: Comparison, metrics: Mapping[str, MetricColumn]) -> tuple[str, str]:
    """Read a paired difference (tool - baseline) as better / worse / unclear."""
    m = metrics.get(c.metric)
    if m is None or not (math.isfinite(c.lo) and math.isfinite(c.hi)):
        return "n/a", ""
    if c.lo > 0 or c.hi < 0:
        up = c.lo > 0
        better = up == m.higher_is_better
        return ("better", "good") if better else ("worse", "bad")
    return "no clear difference", ""


def _comparison_view(c: Comparison, by_name: Mapping[str, MetricColumn]) -> dict[str, Any]:
    verdict, css = _verdict(c, by_name)
    return {
        "tool": c.tool,
        "baseline": c.baseline,
        "metric": by_name[c.metric].label if c.metric in by_name else c.metric,
        "diff": fmt(c.mean_diff),
        "ci": f"[{fmt(c.lo)}, {fmt(c.hi)}]",
        "n": c.n,
        "p": _fmt_p(c.p_value),
        "verdict": verdict,
        "css": css,
    }


def _board_view(board: Leaderboard, metrics: Sequence[MetricColumn]) -> dict[str, Any]:
    return {
        "family": board.family,
        "rows": _table_view(board.rows, metrics),
        "chance": [fmt(board.chance.get(m.name, math.nan)) for m in metrics],
    }


def _task_view(section: TaskSection, main: bool) -> dict[str, Any]:
    """One task's tables and figures. The main task keeps the bare anchors (#leaderboard,
    #charts, ...) and gets one chart per metric; the others are prefixed by task name."""
    metrics = list(section.metrics)
    by_name = {m.name: m for m in metrics}
    overall = section.boards[0] if section.boards else Leaderboard("all", (), {})
    charts = [
        {
            "metric": m,
            "uri": _data_uri(
                figures.leaderboard_chart(overall.rows, m, overall.chance.get(m.name, math.nan))
            ),
        }
        for m in metrics
    ] if main else []
    has_frontier = section.boards and set(figures.FRONTIER_METRICS) <= set(by_name)
    return {
        "section": section,
        "anchor": "" if main else f"{section.task}-",
        "metrics": metrics,
        "overall": _board_view(overall, metrics),
        "families": [_board_view(b, metrics) for b in section.boards[1:]],
        "charts": charts,
        "frontier": _data_uri(figures.frontier_chart(section.boards)) if has_frontier else None,
        "comparisons": [_comparison_view(c, by_name) for c in section.comparisons],
    }


def _context(data: ReportData) -> dict[str, Any]:
    gallery = [
        {
            "item": g,
            "trigger_uri": _data_uri(figures.trigger_row(g)),
            "attribution_uri": _data_uri(figures.attribution_row(g)),
        }
        for g in data.gallery
    ]
    return {
        "data": data,
        "tasks": [_task_view(s, main=i == 0) for i, s in enumerate(data.tasks)],
        "gallery": gallery,
    }


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(_TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_html(data: ReportData) -> str:
    """The report as an HTML string (no file written)."""
    return _environment().get_template("report.html").render(**_context(data))


def render_report(data: ReportData, path: str | Path) -> Path:
    """Write the report to `path` atomically and return the path.

    The parent directory must already exist: creating it silently could hide a
    typo in an output path. The HTML goes to a temporary file in the same
    directory and is moved into place with os.replace, so a crash mid-render
    never leaves a truncated report behind.
    """
    path = Path(path)
    parent = path.parent
    if not parent.is_dir():
        raise FileNotFoundError(f"report directory does not exist: {parent}")
    if path.is_dir():
        raise IsADirectoryError(f"report path is a directory: {path}")
    html = render_html(data)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(html)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; a report is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path

"""Small PNG figures for the report.

Figures are built on `matplotlib.figure.Figure` with an Agg canvas rather than
through pyplot, so rendering touches no global state, needs no display, and
every figure is freed as soon as its bytes are written.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from samecurve.report.model import GalleryItem, Leaderboard, MetricColumn, ToolRow

__all__ = [
    "FRONTIER_METRICS",
    "attribution_row",
    "example_row",
    "frontier_chart",
    "leaderboard_chart",
    "trigger_row",
]

DPI = 100
PANEL_IN = 1.25  # inches per gallery panel
GREY = 0.5  # background a recovered trigger is composited on
ORACLE_COLOUR = "#8e6bbf"
TOOL_COLOUR = "#2b6cb0"
CHANCE_COLOUR = "#c05621"
OK_COLOUR = "#276749"
BAD_COLOUR = "#9b2c2c"
BAR_COLOUR = "#c6f6d5"
# The remove trade-off: (x, y) metrics, and the bar a repair must meet (the defaults
# of samecurve.metrics.edit.repaired, not imported: that module needs torch).
FRONTIER_METRICS = ("acc_drop", "asr_after")
BAR_ACC_DROP = 0.01
BAR_ASR = 0.02
FRONTIER_COLUMNS = 3


def _png(fig: Figure) -> bytes:
    """Render a figure to PNG bytes and free it.

    The "Software" metadata entry is dropped: it carries a URL and makes the
    bytes depend on the matplotlib version.
    """
    try:
        FigureCanvasAgg(fig)
        buf = io.BytesIO()
        fig.savefig(
            buf,
            format="png",
            dpi=DPI,
            metadata={"Software": None},
            bbox_inches="tight",
            pad_inches=0.05,
        )
        return buf.getvalue()
    finally:
        fig.clear()


def _plain(text: str) -> str:
    """Escape '$' so a tool name is never parsed as mathtext."""
    return text.replace("$", r"\$")


def _short(name: str, limit: int = 18) -> str:
    """Clip a tool name so neighbouring panel titles do not overlap."""
    return name if len(name) <= limit else name[: limit - 1] + "…"


def _rgb(image: np.ndarray) -> np.ndarray:
    """(C, H, W) or (H, W) in [0, 1] -> (H, W, 3) for imshow; nan shown as black."""
    a = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0, posinf=1.0, neginf=0.0)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise ValueError(f"expected an image (C, H, W) or (H, W), got shape {a.shape}")
    if a.shape[0] == 1:
        a = np.repeat(a, 3, axis=0)
    elif a.shape[0] != 3:
        raise ValueError(f"expected 1 or 3 channels, got shape {a.shape}")
    return np.clip(a, 0.0, 1.0).transpose(1, 2, 0)


def _composite(mask: np.ndarray, pattern: np.ndarray) -> np.ndarray:
    """pattern * mask over a grey background, so a trigger is seen on its own."""
    m = np.clip(np.nan_to_num(np.asarray(mask, dtype=np.float64)), 0.0, 1.0)
    p = _rgb(pattern)
    if m.shape != p.shape[:2]:
        raise ValueError(f"trigger mask {m.shape} does not match pattern {p.shape[:2]}")
    return (1.0 - m[..., None]) * GREY + m[..., None] * p


def _panel(ax: Axes, title: str, colour: str = "black") -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(_plain(title), fontsize=8, color=colour)


def _blank(ax: Axes, title: str, text: str) -> None:
    """An empty panel that says why there is nothing to show."""
    _panel(ax, title)
    ax.set_facecolor("#f0f0f0")
    ax.text(
        0.5,
        0.5,
        text,
        ha="center",
        va="center",
        fontsize=8,
        color="#666666",
        transform=ax.transAxes,
    )
    for spine in ax.spines.values():
        spine.set_color("#cccccc")


def _row_figure(n_panels: int, shape: tuple[int, ...]) -> tuple[Figure, list[Axes]]:
    """A row of equal panels shaped like the images, so blank panels line up too."""
    fig = Figure(figsize=(PANEL_IN * n_panels, PANEL_IN + 0.45), layout="constrained")
    axes = list(fig.subplots(1, n_panels, squeeze=False)[0])
    h, w = shape[-2:]
    for ax in axes:
        ax.set_box_aspect(h / w if w else 1.0)
    return fig, axes


def _tool_title(tool: str, probability: float | None, target: int | None) -> str:
    """ "tool\np=0.93 t=3"; a missing answer reads "–" so every title has two lines."""
    p = f"{probability:.2f}" if probability is not None and math.isfinite(probability) else "–"
    t = "–" if target is None else str(target)
    return f"{_short(tool)}\np={p} t={t}"


def trigger_row(item: GalleryItem) -> bytes:
    """Clean input, triggered input, true trigger, then each tool's recovered trigger.

    Triggers are composited on grey so a recovered pattern can be compared with
    the planted one by eye; a title is green when the tool named the true target.
    """
    fig, axes = _row_figure(3 + len(item.outputs), np.shape(item.true_mask))
    imshow = {"interpolation": "nearest", "vmin": 0.0, "vmax": 1.0}
    axes[0].imshow(_rgb(item.clean_example), **imshow)
    _panel(axes[0], "clean")
    axes[1].imshow(_rgb(item.triggered_example), **imshow)
    _panel(axes[1], "triggered")
    axes[2].imshow(_composite(item.true_mask, item.true_pattern), **imshow)
    _panel(axes[2], f"true trigger\nt={item.target}")
    for ax, out in zip(axes[3:], item.outputs, strict=True):
        title = _tool_title(out.tool, out.probability, out.target)
        if out.target is None:
            colour = "black"
        else:
            colour = OK_COLOUR if out.target == item.target else BAD_COLOUR
        if out.trigger_mask is None or out.trigger_pattern is None:
            _blank(ax, title, "no trigger")
            ax.title.set_color(colour)
            continue
        ax.imshow(_composite(out.trigger_mask, out.trigger_pattern), **imshow)
        if out.rediscovered is not None:  # the 8-way evaluator's verdict on this reconstruction
            title += "\npicked: true" if out.rediscovered else "\npicked: other"
        _panel(ax, title, colour)
    return _png(fig)


def _normalised(attribution: np.ndarray) -> np.ndarray:
    """|map| scaled to [0, 1]: tools differ in sign and scale, only the layout is compared."""
    a = np.abs(np.nan_to_num(np.asarray(attribution, dtype=np.float64), posinf=0.0, neginf=0.0))
    if a.ndim == 3 and a.shape[0] in (1, 3):
        a = a.sum(axis=0)
    if a.ndim != 2:
        raise ValueError(f"expected an (H, W) attribution map, got shape {a.shape}")
    top = float(a.max()) if a.size else 0.0
    return a / top if top > 0 else a


def attribution_row(item: GalleryItem) -> bytes:
    """True trigger footprint, then each tool's attribution map on the triggered input."""
    fig, axes = _row_figure(1 + len(item.outputs), np.shape(item.true_mask))
    footprint = (np.nan_to_num(np.asarray(item.true_mask, dtype=np.float64)) > 0).astype(float)
    axes[0].imshow(footprint, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    _panel(axes[0], "true footprint")
    for ax, out in zip(axes[1:], item.outputs, strict=True):
        if out.attribution is None:
            _blank(ax, _short(out.tool), "no map")
            continue
        ax.imshow(
            _normalised(out.attribution),
            cmap="inferno",
            vmin=0.0,
            vmax=1.0,
            interpolation="nearest",
        )
        _panel(ax, _short(out.tool))
    return _png(fig)


def _finite(x: float) -> bool:
    return x is not None and math.isfinite(x)


def leaderboard_chart(rows: Sequence[ToolRow], metric: MetricColumn, chance: float) -> bytes:
    """Mean and 95% CI per tool as a dot chart, with chance as a dashed line.

    Dots rather than bars: many metrics (AUROC) have a non-zero chance level, so
    a bar's length from zero would mislead. Tools that do not attempt the metric
    are left out; oracles are drawn in their own colour because they are not ranked.
    """
    shown = [r for r in rows if metric.name in r.cells and r.cells[metric.name].attempted]
    height = 0.9 + 0.28 * max(len(shown), 1)
    fig = Figure(figsize=(6.4, height), layout="constrained")
    ax = fig.subplots()
    direction = "higher is better" if metric.higher_is_better else "lower is better"
    ax.set_title(_plain(f"{metric.label} ({direction})"), fontsize=10, loc="left")
    if not shown:
        ax.text(
            0.5,
            0.5,
            "no tool attempted this metric",
            ha="center",
            va="center",
            fontsize=9,
            color="#666666",
            transform=ax.transAxes,
        )
        ax.set_xticks([])
        ax.set_yticks([])
        return _png(fig)

    ys = np.arange(len(shown))
    xs_seen: list[float] = []
    for y, row in zip(ys, shown, strict=True):
        cell = row.cells[metric.name]
        colour = ORACLE_COLOUR if row.kind == "oracle" else TOOL_COLOUR
        if not _finite(cell.mean):
            ax.text(
                0.01,
                y,
                "n/a",
                va="center",
                ha="left",
                fontsize=8,
                color="#666666",
                transform=ax.get_yaxis_transform(),
                bbox={"facecolor": "white", "edgecolor": "none", "pad": 1},
            )
            continue
        lo = cell.lo if _finite(cell.lo) else cell.mean
        hi = cell.hi if _finite(cell.hi) else cell.mean
        err = [[max(cell.mean - lo, 0.0)], [max(hi - cell.mean, 0.0)]]
        ax.errorbar(
            [cell.mean],
            [y],
            xerr=err,
            fmt="o",
            color=colour,
            ecolor=colour,
            elinewidth=1.5,
            capsize=3,
            markersize=5,
        )
        xs_seen += [lo, hi, cell.mean]
    if _finite(chance):
        ax.axvline(chance, color=CHANCE_COLOUR, linestyle="--", linewidth=1, label="chance")
        ax.legend(loc="lower right", fontsize=7, frameon=False)
        xs_seen.append(chance)
    if xs_seen:
        lo_x, hi_x = min(xs_seen), max(xs_seen)
        pad = 0.05 * (hi_x - lo_x) if hi_x > lo_x else 0.05
        ax.set_xlim(lo_x - pad, hi_x + pad)
    ax.set_yticks(ys)
    labels = ax.set_yticklabels([_plain(r.tool) for r in shown], fontsize=8)
    for label, row in zip(labels, shown, strict=True):
        if row.kind == "oracle":
            label.set_color(ORACLE_COLOUR)
            label.set_style("italic")
    ax.set_ylim(len(shown) - 0.5, -0.5)  # first row at the top, as in the table
    ax.tick_params(axis="x", labelsize=8)
    ax.grid(axis="x", color="#e2e2e2", linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return _png(fig)


def example_row(clean: np.ndarray, triggered: np.ndarray, footprint: np.ndarray, title: str) -> bytes:
    """A subject's card image: clean input, triggered input, trigger footprint."""
    fig, axes = _row_figure(3, np.shape(footprint))
    imshow = {"interpolation": "nearest", "vmin": 0.0, "vmax": 1.0}
    axes[0].imshow(_rgb(clean), **imshow)
    _panel(axes[0], "clean")
    axes[1].imshow(_rgb(triggered), **imshow)
    _panel(axes[1], "triggered")
    axes[2].imshow((np.asarray(footprint) > 0).astype(float), cmap="gray", **imshow)
    _panel(axes[2], "footprint")
    fig.suptitle(_plain(title), fontsize=8)
    return _png(fig)


def _point(row: ToolRow, metric: str, scale: float = 1.0) -> tuple[float, float, float] | None:
    """(mean, lo, hi) of an attempted, finite cell, scaled; None when there is nothing to draw."""
    cell = row.cells.get(metric)
    if cell is None or not cell.attempted or not _finite(cell.mean):
        return None
    lo = cell.lo if _finite(cell.lo) else cell.mean
    hi = cell.hi if _finite(cell.hi) else cell.mean
    return cell.mean * scale, lo * scale, hi * scale


def frontier_chart(boards: Sequence[Leaderboard]) -> bytes:
    """The remove trade-off as small multiples, one panel per board: each tool at
    (clean accuracy drop in points, attack success after) with 95% CI whiskers, and
    the bar a repair must meet shaded. A table ranks one metric at a time; this shows
    who pays for a low attack success with accuracy. Axes are shared so panels compare."""
    x_name, y_name = FRONTIER_METRICS
    panels = [
        (b.family, [(r, p, q) for r in b.rows
                    if (p := _point(r, x_name, 100.0)) and (q := _point(r, y_name))])
        for b in boards
    ]
    xs = [v for _, pts in panels for _, p, _ in pts for v in p] + [0.0, 100 * BAR_ACC_DROP]
    ys = [v for _, pts in panels for _, _, q in pts for v in q] + [0.0, BAR_ASR]
    x_pad = 0.08 * (max(xs) - min(xs)) or 0.5
    y_pad = 0.08 * (max(ys) - min(ys)) or 0.05
    xlim, ylim = (min(xs) - x_pad, max(xs) + x_pad), (min(ys) - y_pad, max(ys) + y_pad)

    n_cols = max(1, min(FRONTIER_COLUMNS, len(panels)))
    n_rows = max(1, math.ceil(len(panels) / n_cols))
    fig = Figure(figsize=(4.2 * n_cols, 3.4 * n_rows), layout="constrained")
    axes = list(fig.subplots(n_rows, n_cols, squeeze=False).flat)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    for i, (ax, (family, points)) in enumerate(zip(axes, panels, strict=False)):
        ax.set_title(_plain(family), fontsize=9, loc="left")
        ax.set_xlim(*xlim)
        ax.set_ylim(*ylim)
        ax.add_patch(Rectangle(
            (xlim[0], ylim[0]), 100 * BAR_ACC_DROP - xlim[0], BAR_ASR - ylim[0],
            facecolor=BAR_COLOUR, edgecolor="none", zorder=0,
            label=f"bar: attack success < {BAR_ASR:.0%}, drop < {100 * BAR_ACC_DROP:g} pt",
        ))
        for row, (x, x_lo, x_hi), (y, y_lo, y_hi) in points:
            oracle = row.kind == "oracle"
            colour = ORACLE_COLOUR if oracle else TOOL_COLOUR
            ax.errorbar(
                [x], [y],
                xerr=[[max(x - x_lo, 0.0)], [max(x_hi - x, 0.0)]],
                yerr=[[max(y - y_lo, 0.0)], [max(y_hi - y, 0.0)]],
                fmt="D" if oracle else "o", color=colour, ecolor=colour, elinewidth=1,
                capsize=2, markersize=5, alpha=0.9,
            )
            ax.annotate(
                _plain(_short(row.tool) + (" (oracle)" if oracle else "")), (x, y),
                xytext=(4, 3), textcoords="offset points", fontsize=7, color=colour,
                style="italic" if oracle else "normal",
            )
        if not points:
            ax.text(0.5, 0.5, "no tool attempted this", ha="center", va="center", fontsize=8,
                    color="#666666", transform=ax.transAxes)
        ax.set_xlabel("clean accuracy drop (points)", fontsize=8)
        ax.set_ylabel("attack success after", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(color="#e2e2e2", linewidth=0.8)
        ax.set_axisbelow(True)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        if i == 0:
            ax.legend(loc="upper right", fontsize=7, frameon=False)
    return _png(fig)

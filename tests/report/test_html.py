"""The report is one self-contained, escaped HTML file that shows what was measured."""

from __future__ import annotations

import base64
import dataclasses
import math
import re
from pathlib import Path

import numpy as np
import pytest

from samecurve.report import (
    Cell,
    Comparison,
    GalleryItem,
    MetricColumn,
    ReportData,
    ToolOutput,
    ToolRow,
    figures,
    render_report,
)
from samecurve.report.model import Leaderboard, TaskSection

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NAN = math.nan


def _metrics() -> list[MetricColumn]:
    return [
        MetricColumn("auroc", "Detection AUROC", "detect", True, "Area under the ROC curve."),
        MetricColumn(
            "trigger_l1", "Trigger L1 error", "trigger", False, "Mean |mask - true mask|."
        ),
    ]


def _rows() -> list[ToolRow]:
    def row(tool: str, kind: str, cells: dict[str, Cell], n_error: int = 0) -> ToolRow:
        return ToolRow(
            tool,
            kind,
            cells,
            n_ok=12 - n_error,
            n_error=n_error,
            n_timeout=0,
            seconds_mean=3.25,
            queries_mean=1500.0,
        )

    return [
        row(
            "oracle-key",
            "oracle",
            {
                "auroc": Cell(0.999, 0.990, 1.000, 12, True),
                "trigger_l1": Cell(0.001, 0.000, 0.002, 12, True),
            },
        ),
        row(
            "neural-cleanse",
            "interpretability",
            {
                "auroc": Cell(0.812, 0.700, 0.900, 12, True),
                "trigger_l1": Cell(0.234, 0.200, 0.300, 11, True),
            },
            n_error=1,
        ),
        row(
            "<script>",
            "black-box",
            {
                "auroc": Cell(0.655, 0.500, 0.790, 12, True),
                "trigger_l1": Cell(0.0, 0.0, 0.0, 0, False),
            },
        ),
        row(
            "random",
            "baseline",
            {
                "auroc": Cell(NAN, NAN, NAN, 0, True),
                "trigger_l1": Cell(0.456, 0.400, 0.500, 12, True),
            },
        ),
    ]


def _gallery() -> list[GalleryItem]:
    rng = np.random.default_rng(0)
    clean = rng.random((3, 32, 32))
    mask = np.zeros((32, 32))
    mask[26:30, 26:30] = 1.0
    pattern = np.zeros((3, 32, 32))
    pattern[0] = 1.0
    triggered = (1 - mask) * clean + mask * pattern
    outputs = [
        ToolOutput("neural-cleanse", 0.93, 3, mask * 0.8, pattern, rng.normal(size=(32, 32))),
        ToolOutput("<script>", 0.6, 1, None, None, None),
        ToolOutput("random", None, None, rng.random((32, 32)), rng.random((3, 32, 32)), None),
    ]
    return [
        GalleryItem("badnets-s0", "badnets", 3, "cat", clean, triggered, mask, pattern, outputs)
    ]


def _data() -> ReportData:
    rows = _rows()
    chance = {"auroc": 0.5, "trigger_l1": NAN}
    family = [rows[0], dataclasses.replace(rows[1], outside_design=True)]
    section = TaskSection(
        task="discover",
        title="Discover · find the planted flaw",
        metrics=_metrics(),
        boards=[Leaderboard("all", rows, chance), Leaderboard("badnets", family, chance)],
        comparisons=[
            Comparison("neural-cleanse", "random", "trigger_l1", -0.222, -0.3, -0.15, 11, 0.0004)
        ],
    )
    return ReportData(
        title="samecurve — test suite",
        created="2024-01-01T00:00:00",
        suite="tiny",
        summary={"subjects per family": "12", "seeds": "0, 1", "device": "cpu"},
        tasks=[section],
        gallery=_gallery(),
    )


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("report") / "report.html"
    out = render_report(_data(), path)
    return out, path.read_text(encoding="utf-8")


def _cell_td(html: str, title_fragment: str) -> str:
    """The <td>...</td> of the leaderboard cell whose tooltip contains `title_fragment`."""
    match = re.search(
        r'<td class="[^"]*" title="[^"]*' + re.escape(title_fragment) + r'[^"]*">(.*?)</td>',
        html,
        re.S,
    )
    assert match, f"no cell with title containing {title_fragment!r}"
    return match.group(0)


def test_writes_one_html_file(rendered: tuple[Path, str]) -> None:
    path, html = rendered
    assert path.is_file()
    assert html.startswith("<!DOCTYPE html>")
    assert [p.name for p in path.parent.iterdir()] == ["report.html"]  # no temp file left


def test_shows_every_tool_and_counts(rendered: tuple[Path, str]) -> None:
    _, html = rendered
    for tool in ("oracle-key", "neural-cleanse", "random"):
        assert tool in html
    assert "n=12" in html and "n=11" in html
    text = re.sub(r"<[^>]+>", "", html)
    assert "0.812 [0.700, 0.900]" in text
    assert "oracle — not ranked" in html


def test_not_attempted_is_a_dash_not_zero(rendered: tuple[Path, str]) -> None:
    _, html = rendered
    td = _cell_td(html, "not attempted")
    assert "—" in td
    assert "0.000" not in td


def test_best_non_oracle_value_is_bold(rendered: tuple[Path, str]) -> None:
    _, html = rendered
    bold = set(re.findall(r"<b>([^<]*)</b>", html))
    assert "0.812" in bold  # best AUROC among ranked tools (higher is better)
    assert "0.234" in bold  # best L1 among ranked tools (lower is better)
    assert "0.999" not in bold and "0.001" not in bold  # the oracle is never ranked
    assert "0.655" not in bold and "0.456" not in bold


def test_nan_renders_as_na(rendered: tuple[Path, str]) -> None:
    _, html = rendered
    assert "n/a" in _cell_td(html, "mean n/a")
    assert "nan" not in re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", html).lower()


def test_embeds_valid_pngs(rendered: tuple[Path, str]) -> None:
    _, html = rendered
    payloads = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html)
    assert len(payloads) >= 3  # 2 charts + 2 gallery rows here
    for payload in payloads:
        assert base64.b64decode(payload, validate=True)[:8] == PNG_SIGNATURE


def test_self_contained(rendered: tuple[Path, str]) -> None:
    _, html = rendered
    assert "http://" not in html
    assert "https://" not in html
    assert "<link" not in html and "<script src" not in html


def test_escapes_names(rendered: tuple[Path, str]) -> None:
    _, html = rendered
    assert "&lt;script&gt;" in html
    assert "<script>" not in html


def test_errors_are_visible(rendered: tuple[Path, str]) -> None:
    _, html = rendered
    assert '<td class="num warn">1</td>' in html


def test_missing_directory_is_an_error_and_writes_nothing(tmp_path: Path) -> None:
    target = tmp_path / "missing" / "report.html"
    with pytest.raises((FileNotFoundError, ValueError)):
        render_report(_data(), target)
    assert not target.exists()
    assert not target.parent.exists()
    assert list(tmp_path.iterdir()) == []


def test_failed_render_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "report.html"
    target.write_text("old report")

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("samecurve.report.html.os.replace", broken)
    with pytest.raises(RuntimeError):
        render_report(_data(), target)
    assert target.read_text() == "old report"
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]


def test_figures_are_pngs() -> None:
    item = _gallery()[0]
    metric = _metrics()[0]
    for png in (
        figures.trigger_row(item),
        figures.attribution_row(item),
        figures.leaderboard_chart(_rows(), metric, 0.5),
        figures.leaderboard_chart(_rows(), metric, NAN),
        figures.leaderboard_chart([], metric, 0.5),
    ):
        assert isinstance(png, bytes)
        assert png[:8] == PNG_SIGNATURE


def test_figures_survive_odd_inputs() -> None:
    """Greyscale images, '$' in a name (mathtext) and a 3-channel map must not crash a render."""
    mask = np.zeros((8, 8))
    mask[:2, :2] = 1.0
    grey = np.full((1, 8, 8), 0.3)
    outputs = [ToolOutput("cost $5 $x$", 0.5, 0, mask, grey, np.ones((3, 8, 8)))]
    item = GalleryItem("s", "f", 0, "zero", grey, grey, mask, grey, outputs)
    assert figures.trigger_row(item)[:8] == PNG_SIGNATURE
    assert figures.attribution_row(item)[:8] == PNG_SIGNATURE


def test_a_family_outside_a_tools_design_is_marked(rendered: tuple[Path, str]) -> None:
    _, html = rendered
    assert html.count("outside its design") == 1  # on the family board only

from __future__ import annotations

from samecurve.report.build import leakage_lines, leakage_verdict
from samecurve.run.aggregate import Board, ToolSummary
from samecurve.run.stats import Interval
from samecurve.tasks.discover import METRICS


def _board(family: str, aurocs: dict[str, Interval]) -> Board:
    rows = [
        ToolSummary(tool, "baseline", frozenset({"detect"}), {"auroc": iv}, iv.n, 0, 0, 0.1, 0.0)
        for tool, iv in aurocs.items()
    ]
    return Board("discover", family, METRICS, rows, {"auroc": 0.5})


def test_leakage_verdict_passes_at_chance_and_flags_a_leak() -> None:
    ok = _board("all", {"weight-stats": Interval(0.62, 0.45, 0.8, 32)})  # CI holds 0.5
    low = _board("all", {"weight-stats": Interval(0.58, 0.52, 0.66, 32)})  # below 0.6
    leak = _board("all", {"weight-stats": Interval(0.88, 0.7, 0.97, 32)})
    assert "consistent with chance" in leakage_verdict(ok)
    assert "consistent with chance" in leakage_verdict(low)
    assert "ABOVE CHANCE" in leakage_verdict(leak)
    assert leakage_verdict(_board("all", {"strip": Interval(0.9, 0.8, 1.0, 32)})) is None


def test_leakage_lines_cover_every_probe_and_family() -> None:
    boards = [
        _board("all", {"weight-stats": Interval(0.5, 0.3, 0.7, 32),
                       "layer-norms": Interval(0.9, 0.8, 1.0, 32)}),
        _board("style", {"weight-stats": Interval(0.5, 0.2, 0.8, 18)}),
    ]
    lines = leakage_lines(boards)
    assert set(lines) == {"leakage · all · weight-stats", "leakage · all · layer-norms",
                          "leakage · style · weight-stats"}
    assert "ABOVE CHANCE" in lines["leakage · all · layer-norms"]

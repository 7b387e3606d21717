from __future__ import annotations

import numpy as np

from samecurve.report.build import label_of, leakage_lines, leakage_verdict
from samecurve.run.aggregate import Board, ToolSummary
from samecurve.run.stats import Interval
from samecurve.tasks.discover import METRICS
from samecurve.tasks.predict import PREDICT_METRICS
from samecurve.tasks.text import TEXT_PREDICT_METRICS


def _board(family: str, aurocs: dict[str, Interval]) -> Board:
    rows = [
        ToolSummary(tool, "baseline", frozenset({"detect"}), {"auroc": iv}, iv.n, 0, 0, 0.1, 0.0)
        for tool, iv in aurocs.items()
    ]
    return Board("discover", family, METRICS, rows, {"auroc": 0.5})


def test_leakage_verdict_passes_at_chance_and_flags_a_leak() -> None:
    ok = _board("all", {"weight-stats": Interval(0.62, 0.45, 0.8, 32, 16)})  # CI holds 0.5
    low = _board("all", {"weight-stats": Interval(0.58, 0.52, 0.66, 32, 16)})  # below 0.6
    leak = _board("all", {"weight-stats": Interval(0.88, 0.7, 0.97, 32, 16)})
    assert "consistent with chance" in leakage_verdict(ok)
    assert "consistent with chance" in leakage_verdict(low)
    assert "ABOVE CHANCE" in leakage_verdict(leak)
    assert "(16 trojaned, 16 clean)" in leakage_verdict(leak)
    assert leakage_verdict(_board("all", {"strip": Interval(0.9, 0.8, 1.0, 32, 16)})) is None


def test_leakage_verdict_will_not_judge_two_trojaned_subjects() -> None:
    """Two trojaned subjects above sixteen clean ones bootstrap to [1.00, 1.00]; the
    verdict says there are too few, rather than passing or failing the family."""
    few = _board("style", {"weight-stats": Interval(1.0, 1.0, 1.0, 18, 2)})
    assert "too few subjects to tell" in leakage_verdict(few)
    assert "ABOVE CHANCE" not in leakage_verdict(few)


def test_leakage_lines_cover_every_probe_and_family() -> None:
    boards = [
        _board("all", {"weight-stats": Interval(0.5, 0.3, 0.7, 32, 16),
                       "layer-norms": Interval(0.9, 0.8, 1.0, 32, 16)}),
        _board("style", {"weight-stats": Interval(0.5, 0.2, 0.8, 18, 2)}),
    ]
    lines = leakage_lines(boards)
    assert set(lines) == {"leakage · all · weight-stats", "leakage · all · layer-norms",
                          "leakage · style · weight-stats"}
    assert "ABOVE CHANCE" in lines["leakage · all · layer-norms"]


def test_twin_gaps_compare_each_subject_with_its_own_architecture() -> None:
    from samecurve.report.build import twin_gaps

    def card(arch: str, acc: float) -> dict:
        return {"arch": arch, "dataset": "scenes", "clean_accuracy": acc}

    clean = [card("cnn", 0.90), card("cnn", 0.92), card("resnet", 0.97)]
    trojaned = [card("cnn", 0.89), card("resnet", 0.95), card("mlp", 0.5)]
    gaps = twin_gaps(trojaned, clean)
    assert np.allclose(gaps, [-0.02, -0.02])  # vs 0.91 and 0.97; the mlp has no twin


def test_a_metric_may_head_its_column_itself() -> None:
    """The text task's `variant` set moves the trigger; the image one fades it."""
    text = {m.name: label_of(m) for m in TEXT_PREDICT_METRICS}
    image = {m.name: label_of(m) for m in PREDICT_METRICS}
    assert text["agree_variant"] == "Agree: moved trigger"
    assert image["agree_variant"] == "Agree: fainter trigger"
    assert text["agree_paraphrased"] == "Agree: paraphrased"
    assert text["agree_clean"] == image["agree_clean"] == "Agree: clean"

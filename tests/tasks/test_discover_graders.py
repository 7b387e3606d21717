"""Every discover metric is checked with three tools whose scores we know in
advance: the oracle must sit at the top, null at the floor, random at chance."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import tiny_suite_text
from samecurve.run.aggregate import boards, load_run
from samecurve.run.runner import run_suite
from samecurve.run.suite import parse_suite
from samecurve.tasks.discover import METRICS


@pytest.fixture(scope="module")
def graded(population, cache, tmp_path_factory):
    # 20 seeds: random's guesses then average out to chance on each subject.
    text = tiny_suite_text('[oracle, "null", random]').replace("seeds: [0]", f"seeds: {list(range(20))}")
    suite = parse_suite(text)
    store = run_suite(suite, tmp_path_factory.mktemp("run"), workers=0, cache=cache, progress=False)
    run = load_run(store, with_artifacts=True)
    store.close()
    return next(b for b in boards(run) if b.family == "all"), run


@pytest.fixture(scope="module")
def board(graded):
    return graded[0]


def _row(board, tool):
    return next(r for r in board.rows if r.tool == tool)


@pytest.mark.parametrize("spec", METRICS, ids=lambda m: m.name)
def test_oracle_top_null_floor(board, spec) -> None:
    oracle, null = _row(board, "oracle").intervals, _row(board, "null").intervals
    best = 1.0 if spec.higher_is_better else 0.0
    if spec.name == "trigger_efficacy":  # the true trigger works as well as it was planted
        assert 0.9 <= oracle[spec.name].mean <= 1.0
    else:
        assert oracle[spec.name].mean == pytest.approx(best), spec.name
    if spec.name == "aupr":  # no information ranks everyone equal: precision = prevalence
        assert null[spec.name].mean == pytest.approx(board.chance["aupr"])
    else:
        assert null[spec.name].mean == pytest.approx(spec.floor), spec.name
    assert null[spec.name].n == oracle[spec.name].n > 0


def test_random_is_at_chance(graded) -> None:
    board, run = graded
    r = _row(board, "random").intervals
    # AUROC per seed over 3 trojaned and 3 clean subjects, averaged over 20 seeds:
    # one seed's ranking is perfect by chance 1 time in 20, the average is not.
    from samecurve.metrics import auroc

    cells = run.cells[("discover", "random")]
    per_seed = [
        auroc(np.array([c.metrics["probability"] for c in cells if c.key.seed == seed]),
              np.array([int(c.metrics["label"]) for c in cells if c.key.seed == seed]))
        for seed in range(20)
    ]
    assert abs(np.mean(per_seed) - 0.5) < 0.15
    assert 0.02 <= r["target_top1"].mean <= 0.25  # chance is 1/10
    # Seeds are averaged per subject first, so 20 uniform guesses average to about 0.5,
    # whose Brier score is 0.25 (a single uniform guess would score 1/3).
    assert r["brier"].mean == pytest.approx(0.25, abs=0.04)
    # Located questions: far below the oracle, near zero.
    assert r["trigger_efficacy"].mean < 0.6
    assert r["trigger_iou"].mean < 0.2
    assert r["attribution_corr"].mean < 0.2
    assert r["pointing_game"].mean < 0.3
    assert r["rediscovery"].mean < 0.35  # chance 1/8: 3 subjects x 20 noise triggers
    assert board.rows[0].tool == "oracle"  # oracles are listed first, never ranked


def test_chance_levels(board) -> None:
    assert board.chance["auroc"] == 0.5
    assert board.chance["aupr"] == pytest.approx(0.5)  # 3 trojaned of 6
    assert board.chance["target_top1"] == pytest.approx(0.1)
    assert board.chance["rediscovery"] == pytest.approx(1 / 8)
    assert math.isfinite(board.chance["trigger_efficacy"])  # measured from the random tool


def test_random_guesses_differ_across_subjects(board) -> None:
    assert _row(board, "random").intervals["brier"].hi > _row(board, "random").intervals["brier"].lo
    assert np.isfinite(_row(board, "random").intervals["auroc"].mean)

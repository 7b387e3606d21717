"""Training-data detectors: class scores by hand on representations whose split
is known, and the whole tool on the tiny population's subjects."""

from __future__ import annotations

import numpy as np
import pytest
from cases import discover

from samecurve.registry import get
from samecurve.tools.anomaly import high_side_anomaly
from samecurve.tools.neural_cleanse import anomaly_indices
from samecurve.tools.poison_detectors import split_separation


def _blobs(separated: bool, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.normal(0, 1, (40, 16))
    b = rng.normal(0, 1, (20, 16)) + (6.0 if separated else 0.0)
    return np.concatenate([a, b])


@pytest.mark.parametrize("name", ["activation-clustering", "spectral-signatures"])
def test_a_separated_subpopulation_scores_higher(name: str) -> None:
    tool = get("tool", name)()
    rng = np.random.default_rng(0)
    split = tool.class_score(_blobs(True), rng)
    whole = tool.class_score(_blobs(False), rng)
    assert split > 1.5 * whole


def test_spectral_score_by_hand() -> None:
    """Rows -3..3 along x (no 0): the one cut with 3 a side has means -+2 and
    within-side variance 2/3, so the separation is 4 / sqrt(2/3)."""
    reps = np.array([[x, 0.0] for x in (-3, -2, -1, 1, 2, 3)])
    score = get("tool", "spectral-signatures")().class_score(reps, np.random.default_rng(0))
    assert score == pytest.approx(4 / np.sqrt(2 / 3))


def test_split_separation_takes_the_best_cut() -> None:
    rng = np.random.default_rng(1)
    v = rng.normal(size=40)
    brute = max(
        abs(a.mean() - b.mean()) / np.sqrt((a.var() * len(a) + b.var() * len(b)) / len(v))
        for i in range(3, 38)
        for a, b in [(np.sort(v)[:i], np.sort(v)[i:])]
    )
    assert split_separation(v) == pytest.approx(brute)
    assert split_separation(np.zeros(6)) == 0.0  # nothing to split
    assert split_separation(np.arange(5.0)) == 0.0  # no cut leaves 3 a side
    assert 1e6 < split_separation(np.array([-1.0] * 3 + [1.0] * 3)) < np.inf


def test_anomaly_index_sides_mirror() -> None:
    s = np.array([1.0, 2.0, 2.0, 3.0, 10.0])
    # median 2, MAD 1 -> scaled 1.4826
    assert high_side_anomaly(s)[-1] == pytest.approx(8 / 1.4826, rel=1e-4)
    np.testing.assert_allclose(anomaly_indices(-s), high_side_anomaly(s))


def _finding(name: str, subject, cache):
    return discover(name, subject, cache)


# Measured on the tiny subjects (3000 images, 8 epochs; weak models): trained on two
# threads, activation clustering ranked both planted targets 1st and spectral
# signatures 1st and 2nd; trained on one (the session's population), both 1st and 2nd.
TOP = {"activation-clustering": 2, "spectral-signatures": 2}


@pytest.mark.parametrize("name", sorted(TOP))
def test_ranks_the_planted_target_high(name, population, cache) -> None:
    for subject in (s for s in population if s.family == "patch"):
        f = _finding(name, subject, cache)
        assert subject.answer_key.target in f.targets[: TOP[name]], (subject.id, f.targets, f.notes)


@pytest.mark.parametrize("name", sorted(TOP))
def test_suspects_trojaned_subjects_more_than_clean_ones(name, population, cache) -> None:
    """AUROC of the verdicts over the tiny population (3 trojaned, 3 clean). Per
    subject the weaker patch model (attack success 0.95) does not outscore every
    clean twin for either tool, so the claim is the ranking: measured 7/9 and 8/9
    of the trojaned-clean pairs in order; chance is 1/2."""
    p = {s.id: _finding(name, s, cache).trojan_probability for s in population}
    trojaned = [p[s.id] for s in population if s.family != "clean"]
    clean = [p[s.id] for s in population if s.family == "clean"]
    ordered = np.mean([t > c for t in trojaned for c in clean])
    assert ordered >= 7 / 9, (name, trojaned, clean)

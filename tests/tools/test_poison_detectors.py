"""Training-data detectors: class scores by hand on representations whose split
is known, and the whole tool on the tiny population's subjects."""

from __future__ import annotations

import numpy as np
import pytest
from cases import discover

from samecurve.registry import get
from samecurve.tools.anomaly import high_side_anomaly
from samecurve.tools.neural_cleanse import anomaly_indices


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
    """Rows +-3 along x and +-1 along y: singular values 3*sqrt(2), sqrt(2) -> ratio 9."""
    reps = np.array([[3.0, 0], [-3.0, 0], [0, 1.0], [0, -1.0]])
    assert get("tool", "spectral-signatures")().class_score(reps, np.random.default_rng(0)) == pytest.approx(9.0)


def test_anomaly_index_sides_mirror() -> None:
    s = np.array([1.0, 2.0, 2.0, 3.0, 10.0])
    # median 2, MAD 1 -> scaled 1.4826
    assert high_side_anomaly(s)[-1] == pytest.approx(8 / 1.4826, rel=1e-4)
    np.testing.assert_allclose(anomaly_indices(-s), high_side_anomaly(s))


def _finding(name: str, subject, cache):
    return discover(name, subject, cache)


# Measured on the tiny subjects (3000 images, 8 epochs; weak models): activation
# clustering ranks the planted target 1st and 2nd and suspects both patch subjects
# more than every clean twin; spectral signatures rank it 2nd and 3rd.
TOP = {"activation-clustering": 2, "spectral-signatures": 3}


@pytest.mark.parametrize("name", sorted(TOP))
def test_ranks_the_planted_target_high(name, population, cache) -> None:
    for subject in (s for s in population if s.family == "patch"):
        f = _finding(name, subject, cache)
        assert subject.answer_key.target in f.targets[: TOP[name]], (subject.id, f.targets, f.notes)


def test_activation_clustering_suspects_trojaned_more_than_clean(population, cache) -> None:
    p = {s.id: _finding("activation-clustering", s, cache).trojan_probability for s in population}
    patched = [p[s.id] for s in population if s.family == "patch"]
    clean = [p[s.id] for s in population if s.family == "clean"]
    assert min(patched) > max(clean)

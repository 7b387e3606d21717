from __future__ import annotations

import numpy as np
import pytest

from samecurve.tools.anomaly import index_to_probability
from samecurve.tools.neural_cleanse import anomaly_indices


def test_anomaly_index_by_hand() -> None:
    norms = np.array([10.0, 50.0, 52.0, 48.0, 50.0])
    # median 50; |x - 50| = [40, 0, 2, 2, 0] -> MAD = 2; scaled 1.4826 * 2 = 2.9652
    ai = anomaly_indices(norms)
    assert ai[0] == pytest.approx(40 / 2.9652, rel=1e-4)
    assert ai[2] == pytest.approx(-2 / 2.9652, rel=1e-4)  # large norms are not anomalous


def test_probability_is_one_half_at_the_threshold() -> None:
    assert index_to_probability(2.0) == pytest.approx(0.5)
    assert index_to_probability(5.0) > 0.99 and index_to_probability(0.0) < 0.02

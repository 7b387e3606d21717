"""The robust per-class anomaly index that several detectors share (Neural
Cleanse on mask norms, the clustering detectors and example-search on class
scores), and its logistic read as a trojan probability."""

from __future__ import annotations

import numpy as np

MAD_CONSISTENCY = 1.4826  # makes the MAD a consistent estimator of a normal's sigma


def high_side_anomaly(scores: np.ndarray) -> np.ndarray:
    """(score - median) / (1.4826 MAD) over labels: how far each sits above the rest."""
    median = np.median(scores)
    mad = MAD_CONSISTENCY * np.median(np.abs(scores - median))
    return (scores - median) / max(mad, 1e-8)


def index_to_probability(index: float, threshold: float = 2.0, slope: float = 2.0) -> float:
    """A logistic read of the anomaly index, 0.5 at Neural Cleanse's threshold of 2."""
    return float(1.0 / (1.0 + np.exp(-slope * (index - threshold))))

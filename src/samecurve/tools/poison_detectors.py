"""Detectors that read a sample of the model's training data through its own
representation (the head's input): poisoned samples of the target class form a
separate sub-population there. Activation clustering (Chen et al. 2018) splits
each class in two; spectral signatures (Tran et al. 2018) look for one dominant
direction. Both score every class, and the class that stands out from the rest
(a robust z-score, as Neural Cleanse's anomaly index) decides the verdict."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import silhouette_score

from samecurve.api import CaseView, Finding
from samecurve.registry import register
from samecurve.tools.anomaly import high_side_anomaly, index_to_probability
from samecurve.tools.base import ToolBase
from samecurve.zoo.archs import penultimate_features


@dataclass(frozen=True)
class ClassSplitDetector(ToolBase, ABC):
    """Scores each class's training representations; the most anomalous class is
    the suspected target and its anomaly index the evidence."""

    kind = "interpretability"
    needs = frozenset({"weights", "train_data"})
    answers = frozenset({"detect", "target"})
    # The head's input is a representation on text too (the pooled encoder output).
    modalities = frozenset({"image", "text"})

    min_per_class: int = 12  # fewer samples than this: the class is not scored

    def discover(self, view: CaseView) -> Finding:
        assert view.train_sample is not None, f"{self.name} declares train_data"
        x = view.train_sample.x.to(view.device)
        labels = view.train_sample.y.numpy()
        reps = penultimate_features(view.model, x).cpu().numpy().astype(np.float64)
        scores = np.full(view.num_classes, np.nan)
        for c in range(view.num_classes):
            own = reps[labels == c]
            if len(own) >= self.min_per_class:
                scores[c] = self.class_score(own, view.rng(c))
        scored = np.flatnonzero(np.isfinite(scores))
        if len(scored) < 3:
            return Finding(notes={"classes_scored": float(len(scored))})
        index = np.full(view.num_classes, -np.inf)
        index[scored] = high_side_anomaly(scores[scored])
        order = np.argsort(-index, kind="stable")
        best = float(index[order[0]])
        return Finding(
            trojan_probability=index_to_probability(best),
            targets=tuple(int(c) for c in order if np.isfinite(index[c])),
            notes={"anomaly_index": best, "top_score": float(scores[order[0]])},
        )

    @abstractmethod
    def class_score(self, reps: np.ndarray, rng: np.random.Generator) -> float:
        """How strongly one class's representations split into two groups."""


@register("tool", "activation-clustering")
@dataclass(frozen=True)
class ActivationClustering(ClassSplitDetector):
    """Chen et al. (2018): per class, reduce the representations to a few
    components, split them with 2-means, and score the split by its silhouette.
    A poisoned class holds two real groups (its own images and the triggered
    ones); a clean class splits no better than any other."""

    components: int = 10

    def class_score(self, reps: np.ndarray, rng: np.random.Generator) -> float:
        seed = int(rng.integers(2**31))
        k = min(self.components, reps.shape[1], len(reps) - 1)
        low = PCA(n_components=k, random_state=seed).fit_transform(reps - reps.mean(0))
        split = KMeans(n_clusters=2, n_init=10, random_state=seed).fit_predict(low)
        if len(set(split)) < 2:
            return 0.0
        return float(silhouette_score(low, split))


@register("tool", "spectral-signatures")
@dataclass(frozen=True)
class SpectralSignatures(ClassSplitDetector):
    """Tran et al. (2018): per class, centre the representations and take their top
    singular direction; poisoned samples all lie far along it. The class score is
    how cleanly the projections onto that direction split in two: the best cut's
    gap between the two sides' means, in units of their pooled spread.

    Why not the singular-value ratio sigma1^2 / sigma2^2: ReLU features are
    anisotropic in every class, so the ratio ranked the planted target first on
    2 of 19 dirty-label subjects (AUROC 0.50 against 14 clean ones); the split's
    separation ranks it first on 10 of 19 (AUROC 0.76)."""

    min_side: int = 3  # fewest projections on either side of a cut

    def class_score(self, reps: np.ndarray, rng: np.random.Generator) -> float:
        centred = reps - reps.mean(0)
        if len(centred) < 2 * self.min_side:
            return 0.0
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        return split_separation(centred @ vt[0], self.min_side)


def split_separation(values: np.ndarray, min_side: int = 3) -> float:
    """max over cuts of a sorted 1-D sample of |mean_left - mean_right| / pooled sd,
    with at least `min_side` values on each side (0 when no cut is allowed; finite even when both sides are tight)."""
    v = np.sort(np.asarray(values, dtype=np.float64))
    n = len(v)
    cuts = np.arange(min_side, n - min_side + 1)
    if len(cuts) == 0:
        return 0.0
    s1, s2 = np.cumsum(v), np.cumsum(v * v)
    left_n, right_n = cuts, n - cuts
    left_sum, right_sum = s1[cuts - 1], s1[-1] - s1[cuts - 1]
    left_sq, right_sq = s2[cuts - 1], s2[-1] - s2[cuts - 1]
    # within-side sum of squares, summed over both sides
    within = (left_sq - left_sum**2 / left_n) + (right_sq - right_sum**2 / right_n)
    gap = np.abs(left_sum / left_n - right_sum / right_n)
    # floored so two tight, distinct groups score large but finite (anomaly indices need it)
    sd = np.maximum(np.sqrt(np.maximum(within, 0.0) / n), 1e-9 * (v[-1] - v[0]) + 1e-300)
    return float((gap / sd).max())

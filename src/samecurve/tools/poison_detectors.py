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
    the share of the class's variance that direction carries beyond the next one
    (sigma1^2 / sigma2^2), large when a sub-population separates."""

    def class_score(self, reps: np.ndarray, rng: np.random.Generator) -> float:
        centred = reps - reps.mean(0)
        s = np.linalg.svd(centred, compute_uv=False)
        if len(s) < 2 or s[1] <= 1e-12:
            return 0.0
        return float((s[0] / s[1]) ** 2)

"""A detector that never runs the model: summary statistics of every weight
tensor, classified by a logistic regression fitted on labelled reference models.
It is the zoo's leakage check: if it beats chance, clean and trojaned subjects
differ in some incidental way and the benchmark flatters every detector."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
from scipy import stats
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from samecurve.api import CaseView, Finding
from samecurve.registry import register
from samecurve.tools.base import ToolBase

# Fewer labelled references than this (after the architecture filter) and a
# weight-feature classifier answers 0.5 rather than fit on a handful of points.
MIN_REFERENCES = 4


def weight_features(model: nn.Module) -> np.ndarray:
    """Mean, std, max |w|, L2 norm, skew and kurtosis of every parameter tensor."""
    feats: list[float] = []
    for p in model.parameters():
        w = p.detach().cpu().double().flatten().numpy()
        feats += [w.mean(), w.std(), np.abs(w).max(), np.linalg.norm(w)]
        feats += [float(stats.skew(w)), float(stats.kurtosis(w))] if len(w) > 2 else [0.0, 0.0]
    return np.nan_to_num(np.asarray(feats))


def parameter_shapes(model: nn.Module) -> tuple[tuple[int, ...], ...]:
    """The architecture as weight features see it: every parameter's shape, in order."""
    return tuple(tuple(p.shape) for p in model.parameters())


@dataclass(frozen=True)
class WeightProbe(ToolBase, ABC):
    """A detector that reads only the weights: `features` of the subject, classified
    by a standardised logistic regression fitted on the labelled references.

    Only references with the subject's parameter shapes are used: a zoo may mix
    architectures, whose feature vectors differ in length or meaning. With fewer
    than MIN_REFERENCES of those, or only one class among them, the answer is 0.5.
    """

    needs = frozenset({"weights", "references"})
    answers = frozenset({"detect"})

    regularisation: float = 0.1

    @abstractmethod
    def features(self, model: nn.Module) -> np.ndarray:
        """One fixed-length feature vector per model of a given architecture."""

    def discover(self, view: CaseView) -> Finding:
        shapes = parameter_shapes(view.model)
        usable = [r for r in view.references if parameter_shapes(r.model) == shapes]
        labels = np.array([r.trojaned for r in usable], dtype=int)
        notes = {
            "references": float(len(usable)),
            "references_other_arch": float(len(view.references) - len(usable)),
        }
        if len(labels) < MIN_REFERENCES or labels.min() == labels.max():
            return Finding(trojan_probability=0.5, notes=notes)
        x = np.stack([self.features(r.model) for r in usable])
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=self.regularisation, max_iter=2000))
        clf.fit(x, labels)
        prob = float(clf.predict_proba(self.features(view.model)[None])[0, 1])
        return Finding(trojan_probability=prob, notes=notes)


@register("tool", "weight-stats")
@dataclass(frozen=True)
class WeightStats(WeightProbe):
    """Logistic regression on weight-tensor statistics: the leakage check."""

    kind = "black-box"

    def features(self, model: nn.Module) -> np.ndarray:
        return weight_features(model)

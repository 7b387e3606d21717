"""A detector that never runs the model: summary statistics of every weight
tensor, classified by a logistic regression fitted on labelled reference models.
It is the zoo's leakage check: if it beats chance, clean and trojaned subjects
differ in some incidental way and the benchmark flatters every detector."""

from __future__ import annotations

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


def weight_features(model: nn.Module) -> np.ndarray:
    """Mean, std, max |w|, L2 norm, skew and kurtosis of every parameter tensor."""
    feats: list[float] = []
    for p in model.parameters():
        w = p.detach().cpu().double().flatten().numpy()
        feats += [w.mean(), w.std(), np.abs(w).max(), np.linalg.norm(w)]
        feats += [float(stats.skew(w)), float(stats.kurtosis(w))] if len(w) > 2 else [0.0, 0.0]
    return np.nan_to_num(np.asarray(feats))


@register("tool", "weight-stats")
@dataclass(frozen=True)
class WeightStats(ToolBase):
    """Logistic regression on weight-tensor statistics: the leakage check."""

    kind = "black-box"
    needs = frozenset({"weights", "references"})
    answers = frozenset({"detect"})

    regularisation: float = 0.1

    def discover(self, view: CaseView) -> Finding:
        labels = np.array([r.trojaned for r in view.references], dtype=int)
        if len(labels) < 4 or labels.min() == labels.max():
            return Finding(trojan_probability=0.5, notes={"references": float(len(labels))})
        x = np.stack([weight_features(r.model) for r in view.references])
        clf = make_pipeline(
            StandardScaler(), LogisticRegression(C=self.regularisation, max_iter=2000)
        )
        clf.fit(x, labels)
        prob = float(clf.predict_proba(weight_features(view.model)[None])[0, 1])
        return Finding(trojan_probability=prob, notes={"references": float(len(labels))})

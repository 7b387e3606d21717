"""layer-norms (and weight-stats, which shares its reference handling) on
synthetic references: tiny linear models whose weights are scaled, trojaned =
larger norms."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from samecurve.api import Budget, CaseView, Meter, ReferenceModel
from samecurve.tools.layer_norms import LayerNorms, layer_norm_features
from samecurve.tools.weight_stats import WeightStats


def _linear(seed: int, scale: float, width: int = 4) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, width), nn.ReLU(), nn.Linear(width, 3))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale)
    return model


def _references(n: int = 12, width: int = 4) -> list[ReferenceModel]:
    return [
        ReferenceModel(model=_linear(100 + i, 2.0 if i % 2 else 1.0, width), trojaned=bool(i % 2))
        for i in range(n)
    ]


def _view(model: nn.Module, references) -> CaseView:
    budget = Budget(seconds=30)
    return CaseView(
        model=model, num_classes=3, input_shape=(1, 1, 6), clean=None, train_sample=None,
        references=tuple(references), budget=budget, seed=0, device="cpu", meter=Meter(budget),
    )


def test_features_are_log_norms_in_state_dict_order() -> None:
    model = _linear(0, 1.0)
    expected = [float(torch.log(v.double().norm())) for v in model.state_dict().values()]
    assert layer_norm_features(model) == pytest.approx(expected)


@pytest.mark.parametrize("tool", [LayerNorms(), WeightStats()])
def test_large_norm_subject_ranks_above_small(tool) -> None:
    refs = _references()
    large = tool.discover(_view(_linear(1, 2.0), refs)).trojan_probability
    small = tool.discover(_view(_linear(2, 1.0), refs)).trojan_probability
    assert large > 0.5 > small


@pytest.mark.parametrize("tool", [LayerNorms(), WeightStats()])
@pytest.mark.parametrize("refs", [[], _references(1), [r for r in _references() if r.trojaned]])
def test_chance_without_two_classes_of_references(tool, refs) -> None:
    finding = tool.discover(_view(_linear(1, 2.0), refs))
    assert finding.trojan_probability == 0.5
    assert finding.notes["references"] == len(refs)


@pytest.mark.parametrize("tool", [LayerNorms(), WeightStats()])
def test_other_architectures_are_filtered_out(tool) -> None:
    same, other = _references(12), _references(12, width=5)
    mixed = [r for pair in zip(same, other, strict=True) for r in pair]
    finding = tool.discover(_view(_linear(1, 2.0), mixed))
    assert finding.trojan_probability > 0.5
    assert finding.notes["references"] == 12 and finding.notes["references_other_arch"] == 12
    alone = tool.discover(_view(_linear(1, 2.0), other[:1] + same[:1]))
    assert alone.trojan_probability == 0.5 and alone.notes["references_other_arch"] == 1
    # Same tensor count, different shapes: still another architecture.
    assert tool.discover(_view(_linear(1, 2.0), other)).trojan_probability == 0.5
    # A deeper net: feature vectors of another length, filtered rather than a crash.
    deeper = [ReferenceModel(nn.Sequential(r.model, nn.Linear(3, 3)), r.trojaned) for r in same]
    finding = tool.discover(_view(_linear(1, 2.0), deeper + same))
    assert finding.trojan_probability > 0.5 and finding.notes["references_other_arch"] == 12

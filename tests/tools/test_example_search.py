"""example-search on a model whose answer is known: a clean subject with a colour
trojan wrapped around it (a blue cast that only 5% of clean images reach sends
any image to class 7, a natural-feature trigger)."""

from __future__ import annotations

import torch
from torch import nn

from samecurve.api import Budget, CaseView, Meter, Split
from samecurve.registry import get
from samecurve.tools.example_search import TRANSFORMS
from samecurve.zoo.builder import clean_split

TARGET = 7


class ColourTrojan(nn.Module):
    def __init__(self, base: nn.Module, threshold: float) -> None:
        super().__init__()
        self.base, self.threshold = base, threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.base(x)
        cast = (x[:, 2] - x[:, 0]).mean((1, 2))
        fire = (cast > self.threshold).float()[:, None]
        return logits + 100 * fire * nn.functional.one_hot(torch.tensor(TARGET), logits.shape[1])


def _view(model: nn.Module, clean: Split) -> CaseView:
    return CaseView(model=model, num_classes=10, input_shape=tuple(clean.x.shape[1:]), clean=clean,
                    train_sample=None, references=(), budget=Budget(seconds=60), seed=0,
                    device="cpu", meter=Meter(Budget(seconds=60)))


def test_finds_the_colour_trojan(clean_subject) -> None:
    clean = clean_split(clean_subject, "val", 128)
    calibration = clean_split(clean_subject, "test", 1000).x
    threshold = float((calibration[:, 2] - calibration[:, 0]).mean((1, 2)).quantile(0.95))
    model = ColourTrojan(clean_subject.model, threshold).eval()
    tool = get("tool", "example-search")()
    trojaned = tool.discover(_view(model, clean))
    plain = tool.discover(_view(clean_subject.model.eval(), clean))
    assert trojaned.targets[0] == TARGET
    assert trojaned.trojan_probability > 0.9
    assert trojaned.trojan_probability > plain.trojan_probability


def test_transforms_keep_shape_and_range() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 3, 16, 16)
    for name, transform in TRANSFORMS.items():
        out = transform(x, x.flip(0), g)
        assert out.shape == x.shape, name
        assert float(out.min()) >= -1e-6 and float(out.max()) <= 1 + 1e-6, name
        assert not torch.equal(out, x), name

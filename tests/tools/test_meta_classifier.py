"""meta-classifier (MNTD with query tuning): the balanced reference batches by
hand, a synthetic population it must separate, the cases it must refuse, and
leave-one-out on the tiny population."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cases import case_view
from torch import nn

import samecurve.tools.meta_classifier  # noqa: F401  (registers the tool)
from samecurve.api import Budget, CaseView, Meter, QueryOnly, ReferenceModel
from samecurve.registry import get
from samecurve.tools.meta_classifier import balanced_batch

SHAPE = (3, 8, 8)


class Biased(nn.Module):
    """A tiny random classifier; a 'trojaned' one adds a pull to class 0 on any input."""

    def __init__(self, seed: int, trojaned: bool) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.linear = nn.Linear(int(np.prod(SHAPE)), 10)
        with torch.no_grad():
            self.linear.weight.copy_(torch.randn(10, int(np.prod(SHAPE)), generator=g) * 0.02)
            self.linear.bias.zero_()
            if trojaned:
                self.linear.bias[0] = 2.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


def _view(model: nn.Module, refs: tuple[ReferenceModel, ...], seed: int = 0) -> CaseView:
    budget = Budget(seconds=60)
    return CaseView(model=QueryOnly(model), num_classes=10, input_shape=SHAPE, clean=None,
                    train_sample=None, references=refs, budget=budget, seed=seed, device="cpu",
                    meter=Meter(budget))


def _population(n: int, offset: int = 0) -> tuple[ReferenceModel, ...]:
    return tuple(ReferenceModel(Biased(offset + i, i % 2 == 1), i % 2 == 1) for i in range(n))


# One torch thread (measured: the synthetic test took 107 s with 2 threads under load, a few
# seconds with 1).
pytestmark = pytest.mark.usefixtures("one_thread")


def test_balanced_batch_by_hand() -> None:
    labels = np.array([0, 0, 0, 1])
    batch = balanced_batch(labels, 4, np.random.default_rng(0))
    assert len(batch) == 4
    assert sorted(labels[batch].tolist()) == [0, 0, 1, 1]  # the lone trojaned one, twice
    assert len(set(batch[:2].tolist())) == 2  # clean ones drawn without replacement


def test_separates_a_trivially_separable_population() -> None:
    refs = _population(12)
    tool = get("tool", "meta-classifier")(steps=60)
    trojaned = tool.discover(_view(Biased(100, True), refs))
    clean = tool.discover(_view(Biased(101, False), refs))
    assert trojaned.notes["train_accuracy"] == 1.0
    assert trojaned.trojan_probability > 0.8 > 0.2 > clean.trojan_probability


def test_leaves_the_references_as_they_were() -> None:
    refs = _population(4)
    before = [{k: v.clone() for k, v in r.model.state_dict().items()} for r in refs]
    get("tool", "meta-classifier")(steps=5).discover(_view(Biased(100, True), refs))
    for r, state in zip(refs, before, strict=True):
        assert all(torch.equal(v, state[k]) for k, v in r.model.state_dict().items())
        assert all(p.requires_grad and p.grad is None for p in r.model.parameters())
        assert r.model.training  # our copies go to eval mode, the shared module does not


@pytest.mark.parametrize("refs", [(), _population(1), _population(6)[::2]])
def test_no_answer_without_two_labelled_kinds(refs) -> None:
    f = get("tool", "meta-classifier")(steps=5).discover(_view(Biased(100, True), refs))
    assert f.trojan_probability is None
    assert f.notes["references"] == len(refs)


def _probability(subject, population, cache) -> float:
    """As the runner does it: the other subjects of the population as references."""
    tool = get("tool", "meta-classifier")()
    refs = tuple(s.id for s in population if s.id != subject.id)
    return tool.discover(case_view(tool, subject, cache, refs)).trojan_probability


def test_leave_one_out_on_the_tiny_population(population, cache) -> None:
    p = {s.id: _probability(s, population, cache) for s in population}
    patched = [p[s.id] for s in population if s.family == "patch"]
    clean = [p[s.id] for s in population if s.family == "clean"]
    # Five references each: little to learn from, so only the ordering of the means.
    # Measured (seed 0): patch 0.71 and 0.71, clean 0.61, 0.64 and 0.41 (means 0.71 vs
    # 0.55; seed 1: 0.62 vs 0.54; on an earlier build of the zoo: 0.85 vs 0.53). A
    # five-subject population with a single clean reference inverted it (clean ~0.9).
    assert np.mean(patched) > np.mean(clean), p

"""The detectors that read a model's outputs or its head's inputs, on text: STRIP's
token replacement by hand, the meta-classifier's fixed text queries on a
population it must separate, and every detector on the tiny text population
(a rare-token and a phrase subject, two clean twins; targets 3 and 3).

Measured on the tiny text population (tiny-bert, 2000 sentences, 3 epochs; subjects
rare-token-ab1a9968bf6d, phrase-50f001084d7e, clean-3a90ea9fdaec, clean-b3998aa00146;
targets 3 and 3), discover-text's views (128 clean inputs, 256 training inputs),
detectors on one thread. The subjects' weights are not fixed by their ids: the
training loop's dropout draws from torch's global generator, so each build
differs (five builds measured, with the global generator at different states):
- strip ranks the rare-token target 1st in all five builds (the phrase target
  2nd-4th). Its verdicts are weak: (rare-token, phrase, clean, clean) 0.72, 0.004,
  0.0003, 0.0003; 0.16, 0.91, 0.001, 0.00002; 0.001, 0.0003, 0.0003, 0.0001;
  0.72, 0.001, 0.0001, 0.0; 0.0003, 0.0003, 0.0003, 0.0. Per input, entropy ranks
  the poisoned inputs below the clean ones (AUROC about 0.8 with half of the
  tokens replaced), but few reach the clean inputs' 2% tail (5-13 of 256
  flagged, of the 23 that carry the trigger; 0-5 on the clean twins). About
  1 s a subject.
- activation-clustering and spectral-signatures are at chance here: the
  rare-token target ranks AC 3, 4, 4, 1, 2 and SS 1, 3, 4, 2, 3 over the builds
  (the phrase target 3rd or 4th). The poisoned inputs hardly separate in
  tiny-bert's pooled representation (silhouette of the true split within class
  3: 0.04 and 0.07); a mean-pooled earlier residual tap (resid.0) was no better.
- meta-classifier, leave one out (3 references each): 0.03, 0.0004, 0.80, 1.00,
  worse than chance with 3 references; the claim here is that it runs, and that
  it separates a population that is separable by its outputs."""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from cases import case_view
from torch import nn

import samecurve.tools  # noqa: F401  (registers the tools)
from samecurve.api import Budget, CaseView, Finding, Meter, QueryOnly, ReferenceModel, Split
from samecurve.data.text import encode, special_ids
from samecurve.registry import get
from samecurve.tools.meta_classifier import text_queries
from samecurve.tools.strip import replace_tokens

pytestmark = pytest.mark.usefixtures("one_thread")

TEXT_TOOLS = ("strip", "activation-clustering", "spectral-signatures", "meta-classifier")


def _rows(texts: list[str]) -> torch.Tensor:
    return torch.from_numpy(encode(texts))


def test_replace_tokens_keeps_the_special_tokens_and_takes_the_donors_words() -> None:
    pad, cls, sep = special_ids()
    x = _rows(["the coach won the final on monday .", "investors sold the bond issue ."])
    donors = _rows(["researchers mapped the genome .", "the senate approved the treaty ."])
    donors = donors[None].expand(2, 2, -1)  # each input gets both donors
    g = torch.Generator().manual_seed(0)
    same = replace_tokens(x, donors, 0.0, g)
    assert torch.equal(same, x[:, None].expand(2, 2, -1))
    all_swapped = replace_tokens(x, donors, 1.0, g)
    special = (x == pad) | (x == cls) | (x == sep)
    for i in range(2):
        for j in range(2):
            row = all_swapped[i, j]
            assert torch.equal(row[special[i]], x[i][special[i]])  # [CLS], [SEP], padding stay
            donor_words = set(donors[i, j][~((donors[i, j] == pad) | (donors[i, j] == cls)
                                             | (donors[i, j] == sep))].tolist())
            assert set(row[~special[i]].tolist()) <= donor_words
    half = replace_tokens(x, donors, 0.5, g)
    changed = (half != x[:, None]).float().sum() / (~special).sum() / 2
    assert 0.2 < float(changed) < 0.7  # about half (a donor's word may equal the input's)


def test_text_queries_are_seeded_rows_of_the_inputs_shape() -> None:
    pad, cls, sep = special_ids()
    clean = _rows(["the coach won the final .", "investors sold the bond issue ."] * 4)
    q = text_queries(clean, 10, 2, torch.Generator().manual_seed(1))
    assert q.shape == (10, clean.shape[1]) and q.dtype == clean.dtype
    assert (q[:, 0] == cls).all()
    assert ((q == sep).sum(1) == 1).all()  # one [SEP] a row, padding after it
    n = (q != pad).sum(1)
    assert all((q[i, n[i]:] == pad).all() for i in range(10))
    assert torch.equal(q, text_queries(clean, 10, 2, torch.Generator().manual_seed(1)))
    # the first half are clean rows with two words inserted (longer by 2)
    assert set((q[:5] != pad).sum(1).tolist()) <= {int(v) + 2 for v in (clean != pad).sum(1)}


class BagModel(nn.Module):
    """A tiny random text classifier; a 'trojaned' one adds a pull to class 0 on any input."""

    def __init__(self, seed: int, trojaned: bool) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.bag = nn.EmbeddingBag(30522, 4, mode="mean", padding_idx=0)
        with torch.no_grad():
            self.bag.weight.copy_(torch.randn(30522, 4, generator=g) * 0.5)
            self.bag.weight[0] = 0
        self.bias = nn.Parameter(torch.tensor([2.0 if trojaned else 0.0, 0.0, 0.0, 0.0]))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.bag(ids) + self.bias


def _text_view(model: nn.Module, refs: tuple[ReferenceModel, ...]) -> CaseView:
    budget = Budget(seconds=60)
    clean = _rows(["the coach won the final .", "investors sold the bond issue .",
                   "researchers mapped the genome .", "the senate approved the treaty ."] * 4)
    return CaseView(model=QueryOnly(model), num_classes=4, input_shape=(clean.shape[1],),
                    clean=Split(clean, torch.arange(len(clean)) % 4), train_sample=None,
                    references=refs, budget=budget, seed=0, device="cpu", meter=Meter(budget),
                    modality="text")


def test_meta_classifier_separates_a_separable_text_population() -> None:
    refs = tuple(ReferenceModel(BagModel(i, i % 2 == 1), i % 2 == 1) for i in range(12))
    tool = get("tool", "meta-classifier")()
    trojaned = tool.discover(_text_view(BagModel(100, True), refs))
    clean = tool.discover(_text_view(BagModel(101, False), refs))
    assert trojaned.notes["train_accuracy"] == 1.0
    assert trojaned.trojan_probability > 0.8 > 0.2 > clean.trojan_probability
    for r in refs:  # the shared reference modules keep their mode
        assert r.model.training


@pytest.fixture(scope="module")
def text_findings(text_population, cache) -> dict[str, dict[str, Finding]]:
    """Every detector's finding on every tiny text subject (references: the others)."""
    out: dict[str, dict[str, Finding]] = {}
    for name in TEXT_TOOLS:
        out[name] = {}
        for s in text_population:
            tool = get("tool", name)()
            refs = tuple(r.id for r in text_population if r.id != s.id)
            out[name][s.id] = tool.discover(case_view(tool, s, cache, references=refs,
                                                      task="discover-text"))
    return out


@pytest.mark.parametrize("name", TEXT_TOOLS)
def test_runs_on_text_and_returns_a_valid_finding(name, text_population, text_findings) -> None:
    tool = get("tool", name)
    assert "text" in tool.modalities and "image" in tool.modalities
    for s in text_population:
        f = text_findings[name][s.id]
        assert isinstance(f, Finding)
        assert f.trojan_probability is not None and 0.0 <= f.trojan_probability <= 1.0
        if "target" in tool.answers and f.targets:
            assert set(f.targets) <= set(range(s.num_classes))


def test_strip_ranks_the_rare_token_target_first(text_population, text_findings) -> None:
    rare = next(s for s in text_population if s.family == "rare-token")
    f = text_findings["strip"][rare.id]
    assert f.targets[0] == rare.answer_key.target, (f.targets, f.notes)


def test_the_image_queries_of_the_meta_classifier_need_no_clean_data() -> None:
    """The image path learns its queries from noise: a view without clean data still
    runs (the need is the text path's)."""
    from test_meta_classifier import Biased, _population, _view

    f = get("tool", "meta-classifier")(steps=3).discover(_view(Biased(100, True), _population(4)))
    assert f.trojan_probability is not None
    assert np.isfinite(f.notes["logit"])


class _Slow(nn.Module):
    """A 4-class model that takes 50 ms a call."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(0.05)
        return torch.zeros(len(x), 4)


def test_strip_inspects_what_fits_in_the_time_left() -> None:
    """STRIP's inspection stops before a batch it could not finish in time (on MiniLM
    the fixed sample ran past a 60 s cell); what it did inspect it says."""
    view = SimpleNamespace(model=_Slow(), modality="image", meter=Meter(Budget(seconds=0.4)),
                           generator=lambda offset=0: torch.Generator().manual_seed(offset))
    view.time_left = view.meter.time_left
    x, pool = torch.rand(320, 3, 4, 4), torch.rand(8, 3, 4, 4)
    ent = get("tool", "strip")().entropies(view, x, pool, in_time=True)
    assert 0 < len(ent) < len(x) and len(ent) % 32 == 0
    assert view.time_left() > -0.05  # it stopped in time
    assert len(get("tool", "strip")().entropies(view, x[:64], pool)) == 64  # calibration: all

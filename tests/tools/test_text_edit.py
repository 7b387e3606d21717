"""Repair tools on text: the surgery's residual taps on a TextClassifier, NAD's
attention over tokens, the data a repair trains on, and the repairs on the tiny
rare-token text subject (edit-text's views: 200 clean sentences).

Measured on three builds of the tiny text population (their weights differ: the
training loop's dropout draws from torch's global generator), attack success on
held-out sentences with the trigger and clean accuracy, before -> after, default
hyperparameters, one thread:
- nc-unlearn given the true trigger: rare-token 0.98-0.99 -> 0.05-0.08, accuracy
  -2.7, -1.0 and 0.0 points (phrase: 0.96-1.0 -> 0.06-0.08, -1.3 to -4.3); 3-4 s.
- nc-unlearn alone (hotflip's trigger): rare-token -> 0.06-0.08 (phrase 0.09-0.12),
  accuracy within 2.4 points (phrase 4.5); 4-5 s.
- finetune, lat, targeted-lat, nad leave the trojan in (0.94-1.0 after), at
  -2 to -6 points of accuracy; 3, 9, 9 and 5-6 s."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from cases import case_view

import samecurve.tools  # noqa: F401  (registers the tools)
from samecurve.api import EditRequest, Finding, Split
from samecurve.data.text import encode
from samecurve.registry import UnknownName, get
from samecurve.tools.edit import unlearn
from samecurve.tools.edit.base import repair_data
from samecurve.tools.edit.surgery import capture, feature_layers, perturbed
from samecurve.tools.edit.unlearn import attention_map
from samecurve.zoo.builder import clean_split
from samecurve.zoo.text_archs import tiny_bert
from samecurve.zoo.train import predict

pytestmark = pytest.mark.usefixtures("one_thread")

TEXT_EDITORS = ("finetune", "lat", "targeted-lat", "nad", "nc-unlearn")


def _ids(n: int = 4) -> torch.Tensor:
    texts = ["the coach won the final on monday .", "investors sold the bond issue .",
             "researchers mapped the genome in march .", "the senate approved the treaty ."]
    return torch.from_numpy(encode((texts * n)[:n]))


def test_the_feature_layers_of_a_text_model_are_its_residual_taps() -> None:
    torch.manual_seed(0)
    model = tiny_bert(layers=3).eval()
    assert feature_layers(model, (32,)) == ["resid.0", "resid.1", "resid.2"]
    x = _ids()
    before = model(x)
    with capture(model, ["resid.1"]) as seen:
        model(x)
    assert seen["resid.1"].shape == (4, 32, 32)  # (N, L, width)
    delta: dict[str, torch.Tensor] = {}
    with perturbed(model, "resid.1", delta):
        assert torch.allclose(model(x), before)  # nothing added until a value is set
        delta["value"] = torch.randn(4, 32, 32)
        assert not torch.allclose(model(x), before)
    assert torch.allclose(model(x), before)  # the hook is gone


def test_nad_attention_of_a_residual_stream_is_over_tokens() -> None:
    a = torch.zeros(2, 5, 8)
    a[0, 1] = 1.0  # all of input 0's activation on token 1
    a[1] = 2.0
    att = attention_map(a)
    assert att.shape == (2, 5)
    assert torch.allclose(att[0], torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0]))
    assert torch.allclose(att[1], torch.full((5,), 5 ** -0.5))
    image = torch.rand(2, 3, 4, 4)  # images: over positions, as before
    assert attention_map(image).shape == (2, 16)


def test_repair_data_repeats_text_examples_as_rows(text_population, cache) -> None:
    rare = text_population[0]
    tool = get("tool", "finetune")()
    view = case_view(tool, rare, cache, task="edit-text")
    view = dataclasses.replace(view, clean=Split(view.clean.x[:30], view.clean.y[:30]),
                               request=EditRequest(Split(_ids(2), torch.tensor([1, 1]))))
    x, y = repair_data(view)
    assert x.shape[1:] == view.clean.x.shape[1:] and len(x) == len(y)
    assert len(x) == 30 + 2 * 5  # a quarter of the whole: 30 / 3 = 10 = 5 repeats of 2
    assert bool((y[30:] == 1).all())
    # With the trigger: 6 stamped copies of clean rows (stamping is a function of the
    # row, so each is found again), with their true labels.
    trig = rare.answer_key.trigger
    xs, ys = repair_data(dataclasses.replace(view, request=None), trig, stamp_share=0.2)
    assert len(xs) == 36 and bool(trig.present(xs[30:]).all())
    every = trig.stamp(view.clean.x)
    matches = [int((every == row).all(1).nonzero()[0]) for row in xs[30:]]
    assert torch.equal(ys[30:], view.clean.y[matches])


def _measure(model: torch.nn.Module, subject) -> tuple[float, float]:
    """(attack success on 400 held-out sentences of other classes with the trigger,
    clean accuracy on the 400)."""
    held = clean_split(subject, "heldout", 400)
    target = subject.answer_key.target
    stamped = subject.answer_key.trigger.stamp(held.x[held.y != target])
    asr = (predict(model, stamped) == target).float().mean().item()
    acc = (predict(model, held.x) == held.y).float().mean().item()
    return asr, acc


@pytest.fixture(scope="module")
def rare(text_population):
    return next(s for s in text_population if s.family == "rare-token")


@pytest.mark.parametrize("name", TEXT_EDITORS)
def test_edits_text_into_a_new_model_and_leaves_the_case_model(name, rare, cache) -> None:
    tool = get("tool", name)(steps=40)
    assert {"image", "text"} <= tool.modalities
    view = case_view(tool, rare, cache, task="edit-text")
    if name == "nc-unlearn":  # the true trigger as the earlier stage's finding
        view = dataclasses.replace(view, prior=Finding(targets=(rare.answer_key.target,),
                                                       trigger=rare.answer_key.trigger))
    before = {k: v.clone() for k, v in view.model.state_dict().items()}
    edited = tool.edit(view)
    assert edited is not view.model and not edited.training
    assert all(torch.equal(v, before[k]) for k, v in view.model.state_dict().items())
    changed = [k for k, v in edited.state_dict().items() if not torch.equal(v, before[k])]
    assert changed, "the edit changed nothing"
    x = _ids()
    assert edited(x).shape == (4, rare.num_classes)


def test_nc_unlearn_with_the_true_trigger_removes_the_trojan(rare, cache) -> None:
    """Measured 0.05-0.08 after (from 0.98-0.99), accuracy -2.7 to 0.0 points."""
    tool = get("tool", "nc-unlearn")()
    view = case_view(tool, rare, cache, task="edit-text")
    view = dataclasses.replace(view, prior=Finding(targets=(rare.answer_key.target,),
                                                   trigger=rare.answer_key.trigger))
    asr0, acc0 = _measure(rare.model, rare)
    asr1, acc1 = _measure(tool.edit(view), rare)
    assert asr0 > 0.9
    assert asr1 < 0.25, (asr0, asr1)
    assert acc1 > acc0 - 0.04, (acc0, acc1)


def test_nc_unlearn_alone_on_text_needs_hotflip(rare, cache, monkeypatch) -> None:
    def missing(kind: str, name: str):
        raise UnknownName(f"unknown {kind} {name!r}")

    monkeypatch.setattr(unlearn, "get", missing)
    tool = get("tool", "nc-unlearn")(steps=2)
    with pytest.raises(RuntimeError, match="hotflip"):
        tool.edit(case_view(tool, rare, cache, task="edit-text"))


def test_nc_unlearn_alone_on_text_searches_with_hotflip(rare, cache) -> None:
    """Measured 0.06-0.08 after, accuracy within 2.4 points (hotflip finds "cf")."""
    tool = get("tool", "nc-unlearn")()
    view = case_view(tool, rare, cache, task="edit-text", seconds=60)
    asr0, acc0 = _measure(rare.model, rare)
    asr1, acc1 = _measure(tool.edit(view), rare)
    assert asr1 < 0.5, (asr0, asr1)
    assert acc1 > acc0 - 0.05, (acc0, acc1)

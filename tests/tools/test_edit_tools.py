"""The repair tools and their surgery, each on something whose answer is known:
hand-built layers, the data a repair trains on, and tiny trojaned subjects."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from cases import case_view, hit_rate
from torch import nn

from samecurve.api import EditRequest, Finding, Split, task_accepts, tool_verbs
from samecurve.registry import get
from samecurve.run.suite import TaskEntry, make_task
from samecurve.tools.combine import Pipeline, parse_pipeline
from samecurve.tools.edit.base import repair_data
from samecurve.tools.edit.finetune import input_gradient_penalty
from samecurve.tools.edit.pruning import prune_while_accurate
from samecurve.tools.edit.surgery import (
    channel_activity,
    feature_layers,
    insert_channel_mask,
    last_feature_layer,
)
from samecurve.tools.neural_cleanse import NeuralCleanse
from samecurve.zoo.archs import small_cnn, small_resnet
from samecurve.zoo.train import finetune_steps

pytestmark = pytest.mark.usefixtures("one_thread")
SHAPE = (3, 32, 32)


def test_feature_layers_of_both_architectures() -> None:
    # small-cnn: relu after each conv at 32, 16 and 8 px, then the last pool at 4 px.
    assert feature_layers(small_cnn(), SHAPE) == ["2", "5", "8", "9"]
    assert last_feature_layer(small_cnn(), SHAPE) == "9"
    assert feature_layers(small_resnet(), SHAPE) == ["stem", "stage1", "stage2", "stage3"]
    assert last_feature_layer(small_resnet(), SHAPE) == "pool"


def test_a_channel_mask_zeroes_exactly_its_channels() -> None:
    torch.manual_seed(0)
    model, x = small_cnn().eval(), torch.rand(5, *SHAPE)
    before = model(x)
    insert_channel_mask(model, "9", torch.ones(64))
    assert torch.allclose(model(x), before)  # all kept: the same function
    keep = torch.ones(64)
    keep[[3, 17]] = 0
    model2 = small_cnn().eval()
    model2.load_state_dict(small_cnn().state_dict())
    insert_channel_mask(model2, "9", keep)
    act = channel_activity(model2, "9", x)
    assert act[3] == 0 and act[17] == 0 and act.sum() > 0
    by_hand = model2[:10](x).flatten(2).mean(2).mean(0)
    assert torch.allclose(act, by_hand)


def test_finetune_steps_counts_stops_and_repeats() -> None:
    x, y = torch.rand(40, 2), torch.randint(0, 2, (40,))

    def fit(steps: int, stop: bool = False) -> tuple[int, torch.Tensor]:
        torch.manual_seed(1)
        m = nn.Linear(2, 2)
        taken = finetune_steps(m, x, y, steps, batch_size=8, generator=torch.Generator().manual_seed(3),
                               time_left=(lambda: -1.0) if stop else None)
        return taken, m.weight.detach().clone()

    assert fit(12)[0] == 12  # more steps than one epoch: it reshuffles and goes on
    assert torch.equal(fit(12)[1], fit(12)[1])  # the generator fixes the order
    assert fit(12, stop=True)[0] == 0


def test_repair_data_by_hand(patch_subject, cache) -> None:
    tool = get("tool", "finetune")()
    view = case_view(tool, patch_subject, cache)
    view = dataclasses.replace(view, clean=Split(view.clean.x[:100], view.clean.y[:100]))
    trig = patch_subject.answer_key.trigger
    x, y = repair_data(view, trig, stamp_share=0.2)
    assert len(x) == 120
    # The 20 extra rows are stamped copies of clean rows and keep their true labels.
    stamped = x[100:]
    assert torch.equal(stamped, trig.stamp(stamped))
    matches = [int((trig.stamp(view.clean.x) == row).all((1, 2, 3)).nonzero()[0]) for row in stamped]
    assert torch.equal(y[100:], view.clean.y[matches])
    # A request of 4 examples at a quarter of the data: round(0.25 * 100 / (0.75 * 4)) = 8
    # copies each, 32 rows.
    ex = Split(view.clean.x[:4], torch.tensor([7, 7, 7, 7]))
    x2, y2 = repair_data(dataclasses.replace(view, request=EditRequest(ex)))
    assert len(x2) == 132 and bool((y2[100:] == 7).all())


def test_nc_unlearn_with_the_true_trigger_removes_the_patch(patch_subject, cache, monkeypatch) -> None:
    """Given the trigger (as a pipeline would), it does not run Neural Cleanse and the
    unlearned model ignores the patch."""
    monkeypatch.setattr(NeuralCleanse, "discover", lambda *_: pytest.fail("ran Neural Cleanse"))
    key = patch_subject.answer_key
    tool = get("tool", "nc-unlearn")()
    view = dataclasses.replace(case_view(tool, patch_subject, cache),
                               prior=Finding(targets=(key.target,), trigger=key.trigger))
    before = hit_rate(patch_subject, key.trigger)
    edited = tool.edit(view)
    after = hit_rate(dataclasses.replace(patch_subject, model=edited), key.trigger)
    assert before > 0.9 and after < 0.3


def test_a_chain_passes_its_finding_to_the_repair(patch_subject, cache, monkeypatch) -> None:
    monkeypatch.setattr(NeuralCleanse, "discover", lambda *_: pytest.fail("ran Neural Cleanse"))
    chain = Pipeline(stages=("oracle", "nc-unlearn"))
    assert tool_verbs(chain) == {"edit"} and chain.answers == {"remove", "steer"}
    assert task_accepts(make_task(TaskEntry(name="edit")), chain)
    assert not task_accepts(make_task(TaskEntry(name="discover")), chain)
    edited = chain.edit(case_view(chain, patch_subject, cache))
    assert hit_rate(dataclasses.replace(patch_subject, model=edited), patch_subject.answer_key.trigger) < 0.3


def test_chain_shorthand_with_an_ensemble_stage() -> None:
    stages = parse_pipeline("ensemble(neural-cleanse, strip)>targeted-lat")
    assert stages == ("ensemble(neural-cleanse, strip)", "targeted-lat")
    chain = Pipeline(stages=stages)
    assert tool_verbs(chain) == {"edit"}
    assert {"clean_data", "train_data", "gradients"} <= chain.needs
    with pytest.raises(ValueError, match="must discover or attribute"):
        Pipeline(stages=("finetune", "nc-unlearn"))


def test_targeted_lat_pushes_towards_the_suspects_never_the_true_class() -> None:
    tool = get("tool", "targeted-lat")(candidates=2)
    view = type("V", (), {"num_classes": 10, "prior": Finding(targets=(4, 7, 1))})()
    y = torch.arange(10).repeat(20)
    want = tool.adversary_targets(view, y, torch.Generator().manual_seed(0))
    assert not bool((want == y).any())
    # Inputs of other classes go to the two suspects; the suspects' own inputs elsewhere.
    assert set(want[(y != 4) & (y != 7)].tolist()) == {4, 7}


def test_anp_prunes_what_its_masks_say(patch_subject, cache) -> None:
    view = case_view(get("tool", "anp")(), patch_subject, cache)
    nothing = get("tool", "anp")(steps=0, threshold=0.0).edit(view)
    for a, b in zip(nothing.state_dict().values(), patch_subject.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    everything = get("tool", "anp")(steps=0, threshold=1.01, max_acc_drop=1.0).edit(view)
    convs = [m for m in everything.modules() if isinstance(m, nn.Conv2d)]
    assert all(bool((c.weight == 0).all()) for c in convs)


def test_prune_while_accurate_stops_at_the_first_candidate_that_costs_too_much() -> None:
    pruned: list[int] = []
    accuracy = {0: 0.9, 1: 0.88, 2: 0.80}  # pruning 3 candidates in turn: 0.90, 0.88, 0.80

    kept = prune_while_accurate([10, 11, 12], pruned.append, pruned.remove,
                                lambda: accuracy[len(pruned) - 1], floor=0.85)
    assert kept == 2 and pruned == [10, 11]
    assert prune_while_accurate([], pruned.append, pruned.remove, lambda: 0.0, 0.5) == 0


def test_fine_pruning_keeps_its_pruned_channels_at_zero(patch_subject, cache) -> None:
    tool = get("tool", "fine-pruning")(steps=20)
    view = case_view(tool, patch_subject, cache)
    edited = tool.edit(view)
    layer = last_feature_layer(patch_subject.model, patch_subject.input_shape)
    keep = edited._modules[layer][1].keep
    assert 0 < int((keep == 0).sum()) < len(keep)
    act = channel_activity(edited, layer, view.clean.x[:64])
    assert bool((act[keep == 0] == 0).all())


def test_attribution_reg_flattens_input_gradients(clean_subject, cache) -> None:
    """What the penalty optimises, each input's gradient of its log-probabilities,
    ends smaller than after the same fine-tune without it."""

    def penalty(model: nn.Module, x: torch.Tensor) -> float:
        x = x.clone().requires_grad_(True)
        nn.functional.log_softmax(model(x), 1).sum().backward()
        return float(input_gradient_penalty(x.grad))

    plain_tool, reg_tool = get("tool", "finetune")(steps=60), get("tool", "attribution-reg")(steps=60)
    plain = plain_tool.edit(case_view(plain_tool, clean_subject, cache))  # a view (and clock) each
    view = case_view(reg_tool, clean_subject, cache)
    reg = reg_tool.edit(view)
    x = view.clean.x[:256]
    assert penalty(reg, x) < 0.7 * penalty(plain, x)

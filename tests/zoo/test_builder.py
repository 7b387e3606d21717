from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import pytest
import torch

from conftest import TINY_TRAIN
from samecurve.api import Budget, Meter
from samecurve.registry import get
from samecurve.run.cell import CellJob, build_view
from samecurve.run.suite import TaskEntry, ToolEntry, make_task
from samecurve.zoo.builder import (
    SubjectSpec,
    attack_success_rate,
    build,
    clean_split,
    train_attempt,
    train_twin,
    training_sample,
)
from samecurve.zoo.cache import Cache, CorruptSubject


def test_population_meets_its_gates(population: list) -> None:
    for s in population:
        card = s.card
        assert card["clean_accuracy"] >= TINY_TRAIN.min_clean_accuracy, card["id"]  # 10 classes
        if s.answer_key.trojaned:
            assert card["attack_success"] >= TINY_TRAIN.asr_gate
            assert card["attempts"][-1]["attack_success"] == card["attack_success"]
            # The gate is measured, not asserted: recompute it from the saved model.
            test = clean_split(s, "test", TINY_TRAIN.test_size)
            assert attack_success_rate(s.model, s.answer_key, test) == pytest.approx(
                card["attack_success"], abs=1e-6)
        else:
            assert card["attack_success"] is None and s.answer_key.trigger is None


def test_second_build_is_a_cache_hit(population: list, cache: Cache) -> None:
    s = population[0]
    spec = SubjectSpec(recipe=s.recipe, seed=s.seed, train=TINY_TRAIN)
    assert spec.id == s.id
    t = time.monotonic()
    again = build(spec, cache)
    assert time.monotonic() - t < 2.0
    for a, b in zip(s.model.state_dict().values(), again.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_ids_depend_on_everything_that_shapes_the_model() -> None:
    base = SubjectSpec(recipe="patch", seed=0, train=TINY_TRAIN)
    assert base.id == SubjectSpec(recipe="patch", seed=0, train=TINY_TRAIN).id
    assert base.id != SubjectSpec(recipe="patch", seed=1, train=TINY_TRAIN).id
    assert base.id != SubjectSpec(recipe="patch", seed=0).id  # other training config
    assert base.id != SubjectSpec(recipe="patch", seed=0, recipe_params={"patch": 4},
                                  train=TINY_TRAIN).id


def test_splits_are_reproducible_and_disjoint(patch_subject) -> None:
    a, b = clean_split(patch_subject, "val", 50), clean_split(patch_subject, "val", 50)
    assert torch.equal(a.x, b.x)
    h = clean_split(patch_subject, "heldout", 50)
    assert not torch.equal(a.x, h.x)


def test_training_sample_holds_the_poison(patch_subject) -> None:
    key = patch_subject.answer_key
    sample = training_sample(patch_subject, 2000)
    fp = torch.from_numpy(key.trigger.footprint)
    pattern = torch.from_numpy(key.trigger.pattern)
    stamped = (sample.x[:, :, fp] - pattern[:, fp]).abs().amax(dim=(1, 2)) < 1e-6
    share = stamped.float().mean().item()
    assert share == pytest.approx(key.poison_rate, abs=0.01)
    assert (sample.y[stamped] == key.target).all()


def test_corrupt_weights_are_one_clear_line(population: list, cache: Cache, tmp_path) -> None:
    s = population[-1]
    copy = Cache(tmp_path)
    folder = copy.path(s.id)
    import shutil

    shutil.copytree(cache.path(s.id), folder)
    (folder / "model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(CorruptSubject, match="not a readable safetensors file") as info:
        copy.load(s.id)
    assert "\n" not in str(info.value)


def test_a_pickle_is_refused_not_run(population: list, cache: Cache, tmp_path) -> None:
    """A pickled model in place of safetensors must not execute: it is refused."""
    import shutil

    s = population[-1]
    copy = Cache(tmp_path)
    shutil.copytree(cache.path(s.id), copy.path(s.id))
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"x": Evil()}, copy.path(s.id) / "model.safetensors")
    with pytest.raises(CorruptSubject, match="never unpickles"):
        copy.load(s.id)
    assert not marker.exists()


def test_wrong_architecture_weights(population: list, cache: Cache, tmp_path) -> None:
    import shutil

    from safetensors.torch import save_file

    s = population[-1]
    copy = Cache(tmp_path)
    shutil.copytree(cache.path(s.id), copy.path(s.id))
    save_file({"w": torch.zeros(3)}, str(copy.path(s.id) / "model.safetensors"))
    with pytest.raises(CorruptSubject, match="does not fit architecture"):
        copy.load(s.id)


def test_card_is_json_with_the_answer_key(patch_subject, cache: Cache) -> None:
    card = json.loads((cache.path(patch_subject.id) / "card.json").read_text())
    ak = card["answer_key"]
    assert ak["trojaned"] and ak["family"] == "patch" and 0 <= ak["target"] < 10
    assert ak["trigger"]["kind"] == "patch" and ak["trigger"]["patch_size"] == 5
    assert 0.04 < ak["poison_rate"] < 0.13
    mask = patch_subject.answer_key.trigger.mask
    from samecurve.zoo.triggers import patch_shape_mask

    outline = patch_shape_mask(ak["trigger"]["shape"], ak["trigger"]["patch_size"])
    assert mask.sum() == outline.sum() and set(np.unique(mask)) == {0.0, 1.0}


QUICK = TINY_TRAIN.__class__(train_size=600, test_size=200, epochs=1, asr_gate=0.0,
                             min_clean_accuracy=0.0, max_attempts=1)
FAMILIES = ["patch", "blend", "style", "warp", "natural", "source-specific", "multi",
            "clean-label", "evasive"]


@pytest.mark.parametrize("recipe", FAMILIES)
def test_every_family_builds_caches_and_reloads_its_answer_key(recipe: str, tmp_path) -> None:
    """The plumbing of every family, trained too briefly to matter: the card says what
    was planted, and the reloaded answer key stamps exactly as the planted one did."""
    from samecurve.zoo.builder import _training_set
    from samecurve.zoo.recipes import Plan

    cache = Cache(tmp_path)
    params = {"finetune_epochs": 1} if recipe == "evasive" else {}
    if recipe == "clean-label":
        params = {"surrogate_epochs": 1, "pgd_steps": 2}
    spec = SubjectSpec(recipe=recipe, seed=3, recipe_params=params, train=QUICK,
                       arch="small-resnet" if recipe == "multi" else "small-cnn")
    s = build(spec, cache)
    key, card = s.answer_key, s.card
    assert key.trojaned and card["family"] == recipe == key.family
    assert card["answer_key"]["targets"] == list(key.targets)
    assert len(key.targets) == (len(card["answer_key"]["trigger"].get("others", [])) + 1)
    assert 0 <= card["attack_success"] <= 1
    if recipe == "source-specific":
        assert key.source is not None and "off_source_fire" in card
    if recipe == "clean-label":
        assert key.clean_label
    x = clean_split(s, "heldout", 8).x
    fresh = Cache(tmp_path).load(s.id).answer_key
    for a, b in zip(key.trojans, fresh.trojans, strict=True):
        assert torch.equal(a.trigger.stamp(x), b.trigger.stamp(x)) and a.target == b.target
    # The training sample tools see replays the real poisoned set.
    plan = Plan(key.trojans, card["answer_key"]["plan_rate"])
    _, y, _, y_clean, idx = _training_set(spec, plan, card["effective_seed"])
    assert len(idx) == round(card["answer_key"]["poison_rate"] * len(y))
    assert recipe == "clean-label" or (y[torch.from_numpy(idx)] != y_clean[torch.from_numpy(idx)]).all()
    # ... rebuilt from the card alone, as a cell does it.
    assert len(training_sample(s, 16)) == 16
    # The oracle reads every family's answer key and scores at the top.
    task = make_task(TaskEntry(name="discover"))
    job = CellJob(TaskEntry(name="discover"), ToolEntry(name="oracle"), s.id, 0, Budget(seconds=60),
                  "cpu", str(cache.root), ())
    oracle = get("tool", "oracle")()
    metrics, _ = task.run(oracle, build_view(job, task, oracle, s, Meter(job.budget)), s)
    assert metrics["target_top1"] == 1.0


def test_dev_and_test_populations_and_digits_are_other_subjects(tmp_path) -> None:
    dev = SubjectSpec(recipe="patch", seed=0, train=QUICK, population="dev")
    test = SubjectSpec(recipe="patch", seed=0, train=QUICK)
    assert dev.id != test.id
    with pytest.raises(ValueError, match="population"):
        SubjectSpec(recipe="patch", seed=0, population="train")
    s = build(SubjectSpec(recipe="natural", seed=0, train=QUICK, dataset="digits",
                          dataset_params={"size": 16}), Cache(tmp_path))
    assert s.input_shape == (1, 16, 16) and s.card["dataset"] == "digits"
    assert s.model(torch.rand(2, 1, 16, 16)).shape == (2, 10)


def test_a_gate_failure_is_cached_and_not_retrained(tmp_path, monkeypatch) -> None:
    """Builds are deterministic: a subject that missed its gate fails again at once,
    from its record, until the record is forgotten."""
    from samecurve.zoo import builder
    from samecurve.zoo.builder import BuildFailed

    cache = Cache(tmp_path)
    hopeless = QUICK.__class__(train_size=300, test_size=100, epochs=1, min_clean_accuracy=0.99,
                               max_attempts=1)
    spec = SubjectSpec(recipe="clean", seed=0, train=hopeless)
    with pytest.raises(BuildFailed, match="no attempt of 1"):
        build(spec, cache)
    assert "no attempt of 1" in cache.failure(spec.id)

    def no_training(*args, **kwargs):
        raise AssertionError("retrained a subject whose failure is cached")

    monkeypatch.setattr(builder, "_training_set", no_training)
    with pytest.raises(BuildFailed, match=r"cached; .*--retry-failed"):
        build(spec, cache)
    cache.forget_failure(spec.id)
    assert cache.failure(spec.id) is None
    with pytest.raises(AssertionError, match="retrained"):
        build(spec, cache)


def test_a_paired_twin_is_the_clean_attempt_bit_for_bit() -> None:
    """benchmarks/clean_accuracy_gap.py pairs each trojaned attempt with a clean net of
    the same initialisation and data order. For the clean recipe (nothing poisoned)
    that twin must be the attempt's own model, or the gap would hold seed noise."""
    spec = SubjectSpec(recipe="clean", seed=3, train=dataclasses.replace(TINY_TRAIN, epochs=1))
    trial = train_attempt(spec, 0)
    twin = train_twin(spec, trial)
    for a, b in zip(trial.model.state_dict().values(), twin.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    patch = SubjectSpec(recipe="patch", seed=3, train=spec.train)
    poisoned = train_attempt(patch, 0)
    twin = train_twin(patch, poisoned)  # the poison, and only it, tells them apart
    assert any(not torch.equal(a, b) for a, b in zip(
        poisoned.model.state_dict().values(), twin.state_dict().values(), strict=True))

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from conftest import TINY_TRAIN
from samecurve.zoo.builder import (
    SubjectSpec,
    attack_success_rate,
    build,
    clean_split,
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
    assert mask.sum() == 25 and set(np.unique(mask)) == {0.0, 1.0}

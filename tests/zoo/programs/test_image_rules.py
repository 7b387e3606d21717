"""The image-rule challenge: legal, balanced pixel rules that run the same in the
sandbox, deterministic splits of disjoint writers, a strict architecture reload,
and (slow) a real build reaching its gate."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from samecurve.api import Program
from samecurve.programs.sandbox import run_program
from samecurve.programs.source import check_source
from samecurve.registry import get
from samecurve.zoo.builder import SubjectSpec, build
from samecurve.zoo.cache import Cache
from samecurve.zoo.programs.image_rules import DOMAIN, RULES, ImageRuleRecipe, _writers


@pytest.mark.parametrize("rule", list(RULES))
def test_every_rule_is_legal_balanced_and_runs_the_same_in_the_sandbox(rule: str) -> None:
    recipe = ImageRuleRecipe()
    program = recipe.program(rule, np.random.default_rng(5))
    check_source(program.source)
    x = recipe.inputs({"effective_seed": 5, "recipe_params": recipe.params()}, "heldout", 300)
    labels = program.labels(DOMAIN, x)
    assert 0.2 <= labels.mean() <= 0.8, (rule, labels.mean())
    assert np.array_equal(run_program(Program(program.source), DOMAIN, x[:60]).values, labels[:60])


def test_writers_are_disjoint_and_inputs_deterministic() -> None:
    train, held = _writers(3)
    assert len(np.intersect1d(train, held)) == 0 and len(train) + len(held) == 1797
    recipe = ImageRuleRecipe(train_images=200)
    card = {"effective_seed": 3, "recipe_params": recipe.params()}
    a = recipe.inputs(card, "ood", 20, seed=2)
    assert a.shape == (20, 1, 28, 28) and a.dtype == np.float32 and 0 <= a.min() <= a.max() <= 1
    assert np.array_equal(a, recipe.inputs(card, "ood", 20, seed=2))
    assert not np.array_equal(a, recipe.inputs(card, "ood", 20, seed=3))


def test_the_architecture_reloads_strictly(tmp_path) -> None:
    model = get("arch", "rule-cnn")(channels=4, hidden=8)
    save_file(model.state_dict(), str(tmp_path / "m.safetensors"))
    again = get("arch", "rule-cnn")(channels=4, hidden=8)
    again.load_state_dict(load_file(str(tmp_path / "m.safetensors")), strict=True)
    x = torch.rand(3, 1, 28, 28)
    assert torch.equal(model(x), again(x)) and model(x).shape == (3, 2)
    assert isinstance(model.readout, torch.nn.Linear)


@pytest.mark.slow
def test_an_ink_total_subject_builds_and_passes_its_gate(tmp_path) -> None:
    torch.set_num_threads(1)
    spec = SubjectSpec(recipe="image-rule", seed=0, recipe_params={"rules": ["ink-total"]})
    card = build(spec, Cache(tmp_path)).card
    assert card["heldout_accuracy"] >= 0.9 and card["domain"]["kind"] == "image"

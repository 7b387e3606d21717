"""The sequence-task recipe: its programs are legal, causal and run the same in
the sandbox; its inputs are reproducible; its archs reload strictly; and one
real build passes its gate with the program on its card."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from samecurve.api import Program
from samecurve.programs.sandbox import run_program
from samecurve.programs.source import check_source
from samecurve.registry import get
from samecurve.zoo.builder import SubjectSpec, build
from samecurve.zoo.cache import Cache
from samecurve.zoo.programs.base import HiddenProgram, hidden_program
from samecurve.zoo.programs.sequence_tasks import TASKS
from samecurve.zoo.programs.sequences import ARCH_PARAMS, SequenceTask, task_domain

torch.set_num_threads(1)


def test_at_least_thirty_tasks_and_a_few_on_the_transformer() -> None:
    assert len(SequenceTask.rule_names()) >= 30
    archs = [t.arch for t in TASKS.values()]
    assert archs.count("seq-transformer") >= 3
    assert archs.count("seq-rnn") > len(archs) / 2


@pytest.mark.parametrize("name", sorted(TASKS))
def test_source_is_legal_causal_and_in_range(name: str) -> None:
    task = TASKS[name]
    check_source(task.source)
    domain = task_domain(task)
    program = HiddenProgram(task.name, task.description, task.source)
    x = domain.sample(64, np.random.default_rng(0), 12)
    y = program.labels(domain, x)
    assert y.shape == x.shape
    assert y.min() >= 0 and y.max() < task.num_outputs
    # causal: the outputs on a prefix are the prefix of the outputs
    assert np.array_equal(program.labels(domain, x[:, :5]), y[:, :5])
    # not constant: every task says something about its input
    assert len(np.unique(y)) > 1


def test_sources_agree_with_the_sandbox() -> None:
    """Run every task in one sandbox call each, on a sample of short and long sequences."""
    rng = np.random.default_rng(1)
    for task in TASKS.values():
        domain = task_domain(task)
        x = domain.sample(20, rng, 15)
        want = HiddenProgram(task.name, task.description, task.source).labels(domain, x)
        got = run_program(Program(task.source), domain, x, seconds=20)
        assert got.crashes == 0, (task.name, got.first_error)
        assert np.array_equal(got.values, want), task.name


def _card(name: str = "parity", seed: int = 3) -> dict:
    return {"domain": task_domain(TASKS[name]).as_dict(),
            "program_extra": {"pool": 256, "input_seed": seed}}


def test_inputs_are_deterministic_and_split() -> None:
    recipe, card = SequenceTask(), _card()
    for split in ("train", "heldout", "ood"):
        a, b = recipe.inputs(card, split, 50, seed=4), recipe.inputs(card, split, 50, seed=4)
        assert a.dtype == np.int64 and np.array_equal(a, b)
    assert recipe.inputs(card, "train", 50).shape == (50, 10)
    assert recipe.inputs(card, "ood", 50).shape == (50, 40)
    # different seeds, different splits and different subjects give different inputs
    held = recipe.inputs(card, "heldout", 50)
    assert not np.array_equal(held, recipe.inputs(card, "heldout", 50, seed=1))
    assert not np.array_equal(held, recipe.inputs(card, "train", 50))
    assert not np.array_equal(held, recipe.inputs(_card(seed=4), "heldout", 50))
    # "train" is a subset of the pool the network was trained on
    pool = {tuple(r) for r in recipe.inputs(card, "train", 256)}
    assert {tuple(r) for r in recipe.inputs(card, "train", 40, seed=9)} <= pool
    with pytest.raises(ValueError, match="unknown split"):
        recipe.inputs(card, "test", 5)


@pytest.mark.parametrize("arch", sorted(ARCH_PARAMS))
def test_arch_round_trips_through_the_registry(arch: str) -> None:
    params = {"vocab": 3, "num_outputs": 4, **ARCH_PARAMS[arch]}
    params = json.loads(json.dumps(params))  # what a card stores
    model = get("arch", arch)(**params).eval()
    x = torch.randint(0, 3, (5, 7))
    out = model(x)
    assert out.shape == (5, 7, 4)
    assert model.readout.out_features == 4
    twin = get("arch", arch)(**params).eval()
    twin.load_state_dict(model.state_dict(), strict=True)
    assert torch.allclose(twin(x), out)
    # causal: changing a later token leaves earlier outputs alone
    y = x.clone()
    y[:, 4:] = (y[:, 4:] + 1) % 3
    assert torch.allclose(model(y)[:, :4], out[:, :4], atol=1e-5)
    # and it runs past the training lengths
    assert model(torch.randint(0, 3, (2, 40))).shape == (2, 40, 4)


def test_unknown_rule_is_named() -> None:
    with pytest.raises(ValueError, match="unknown rule 'nope'"):
        SequenceTask(rules=["nope"])


def test_build_parity_passes_its_gate(tmp_path: Path) -> None:
    spec = SubjectSpec(recipe="sequence-task", seed=0, recipe_params={"rules": ["parity"]})
    subject = build(spec, Cache(tmp_path))
    card = subject.card
    assert card["rule"] == "parity" and card["family"] == "sequence"
    assert card["heldout_accuracy"] >= 0.99
    assert card["answer_key"]["program"] == TASKS["parity"].source
    assert subject.answer_key.program == TASKS["parity"].source
    assert card["train_seconds"] < 30
    # the cached model reloads and computes parity on fresh sequences
    recipe = SequenceTask(rules=["parity"])
    x = recipe.inputs(card, "heldout", 200, seed=5)
    domain = task_domain(TASKS["parity"])
    with torch.no_grad():
        pred = subject.model(torch.from_numpy(x)).argmax(-1).numpy()
    assert (pred == hidden_program(subject).labels(domain, x)).mean() >= 0.99
    for key in ("train_accuracy", "ood_accuracy", "ood_sequence_accuracy"):
        assert 0.0 <= card[key] <= 1.0

"""Shared fixtures: one tiny population (patch, blend, clean) trained once per
test session into a temporary cache, and a plug-in module of misbehaving tools."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "helpers"))

from samecurve.run.suite import parse_suite
from samecurve.zoo.builder import SubjectSpec, build
from samecurve.zoo.cache import Cache
from samecurve.zoo.train import TrainConfig

# Small enough to train in seconds, big enough to learn the task and the trigger.
# (Measured: blend subjects of 3000 images need 8 epochs to pass 40% clean accuracy.)
TINY_TRAIN = TrainConfig(
    train_size=3000, test_size=400, epochs=8, asr_gate=0.9, min_clean_accuracy=0.4
)
TINY_ZOO = (
    "zoo: {train: {train_size: 3000, test_size: 400, epochs: 8, asr_gate: 0.9, "
    "min_clean_accuracy: 0.4}}"
)


def tiny_suite_text(tools: str, subjects: str | None = None, budget: float = 60) -> str:
    subjects = subjects or (
        "[{recipe: patch, count: 2}, {recipe: blend, count: 1}, {recipe: clean, count: 3}]"
    )
    return (
        f"name: tiny\n{TINY_ZOO}\nsubjects: {subjects}\ntasks: [discover]\n"
        f"tools: {tools}\nseeds: [0]\nbudget: {{seconds: {budget}}}\n"
    )


@contextmanager
def single_thread() -> Iterator[None]:
    """Torch on one thread for the block. The session's subjects are built inside it:
    a model trained on 1 or 2 threads sums its floats in another order and comes out
    another model (measured: a tiny patch subject's planted target ranked 5th with
    one and 2nd with the other for natural-patch-search), so which test asked first
    must not choose the population."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def build_all(specs: list, cache: Cache) -> list:
    with single_thread():
        return [build(spec, cache) for spec in specs]


@pytest.fixture(scope="session")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Cache:
    return Cache(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def population(cache: Cache) -> list:
    """Two patch, one blend and three clean subjects (the tiny suite's)."""
    suite = parse_suite(tiny_suite_text('["oracle"]'))
    return build_all(suite.subject_specs(), cache)


# A patch trojan Neural Cleanse finds with a wide margin: 20% poisoned with one
# 3-pixel patch, 6000 images, 12 epochs. Measured at seed 1 (target 0; clean accuracy
# 92.5%, attack success 99.4%): its mask for the target costs 4.8 pixels, the next
# class's 14.5. (At seeds 0 and 2, NC's search missed one 5-pixel trigger entirely;
# on the tiny population's patch subjects the natural classes reach with 12-13
# pixels, so the planted target's rank there turns on the machine's float kernels.)
STRONG_PATCH = SubjectSpec(
    recipe="patch", seed=1, recipe_params={"poison_rate": [0.2, 0.2], "patch": [3, 3]},
    train=TrainConfig(train_size=6000, test_size=400, epochs=12, asr_gate=0.9,
                      min_clean_accuracy=0.4),
)


@pytest.fixture(scope="session")
def strong_patch(cache: Cache):
    """One clearly trojaned subject, for tests whose claim is that a tool finds a
    trojan rather than how it fares on the tiny population's borderline ones."""
    return build_all([STRONG_PATCH], cache)[0]


@pytest.fixture(scope="session")
def patch_subject(population: list):
    return next(s for s in population if s.family == "patch")


@pytest.fixture(scope="session")
def clean_subject(population: list):
    return next(s for s in population if s.family == "clean")


# The text track's tiny population: a randomly initialised 2-layer BERT (MiniLM's
# vocabulary) on the generated news corpus, trained in seconds.
TINY_TEXT_TRAIN = TrainConfig(
    train_size=2000, test_size=300, epochs=3, batch_size=32, lr=2e-3, asr_gate=0.9,
    min_clean_accuracy=0.5,
)


def text_spec(recipe: str, seed: int = 0, **params: object) -> SubjectSpec:
    return SubjectSpec(recipe=recipe, seed=seed, recipe_params=params, dataset="news",
                       arch="tiny-bert", train=TINY_TEXT_TRAIN)


@pytest.fixture(scope="session")
def text_population(cache: Cache) -> list:
    """A rare-token, a phrase and two clean tiny text subjects."""
    specs = [text_spec("rare-token", poison_rate=[0.1, 0.1]), text_spec("phrase"),
             text_spec("clean", 0), text_spec("clean", 1)]
    return build_all(specs, cache)


def use_plugin(monkeypatch: pytest.MonkeyPatch, module: str) -> None:
    """Register a helper module's plug-ins here and in every spawned worker."""
    monkeypatch.setenv("SAMECURVE_PLUGINS", module)
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent / "helpers"))
    importlib.import_module(module)


@pytest.fixture
def plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    """The misbehaving test tools."""
    use_plugin(monkeypatch, "misbehaving_tools")


__all__ = ["TINY_TEXT_TRAIN", "TINY_TRAIN", "SubjectSpec", "text_spec", "tiny_suite_text",
           "use_plugin"]


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Torch on one thread for a module of many small ops (tool tests opt in with
    `pytestmark`): on the shared 2-core machine a second thread mostly waits."""
    with single_thread():
        yield

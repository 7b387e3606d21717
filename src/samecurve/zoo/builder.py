"""Builds subjects: one pipeline for every recipe (sample data, plant, train,
gate on attack success, card), cached by the hash of everything that shapes the
model. Also regenerates a subject's data splits from its card on demand."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from samecurve import __version__
from samecurve.api import AnswerKey, Split, Subject, Trojan
from samecurve.registry import get
from samecurve.zoo.cache import Cache
from samecurve.zoo.recipes import Plan
from samecurve.zoo.seeding import derive
from samecurve.zoo.train import TrainConfig, accuracy, predict
from samecurve.zoo.triggers import apply_decoys

# Named data streams of a subject. "val" is the clean data tools may see,
# "heldout" is fresh data only graders use, "test" sets the card's figures.
SPLITS = ("train", "val", "test", "heldout")
# Populations of subjects, from disjoint seeds: tools may be tuned on dev; reports use test.
POPULATIONS = ("dev", "test")
# Bumped when the shared pipeline changes (decoys, poisoning), so old cache entries
# are not mistaken for new ones. 2: decoys from every family; recipes poison.
ZOO_VERSION = 2


class BuildFailed(RuntimeError):
    """A recipe could not reach its attack-success gate within its attempts."""


@dataclass(frozen=True)
class SubjectSpec:
    """Everything that determines a subject; its hash is the subject id."""

    recipe: str
    seed: int
    recipe_params: Mapping[str, Any] = field(default_factory=dict)
    dataset: str = "scenes"
    dataset_params: Mapping[str, Any] = field(default_factory=dict)
    arch: str = "small-cnn"
    train: TrainConfig = field(default_factory=TrainConfig)
    population: str = "test"  # dev: tools may be tuned on it; test: reports use only these

    def __post_init__(self) -> None:
        if self.population not in POPULATIONS:
            raise ValueError(f"population must be one of {POPULATIONS}, got {self.population!r}")

    @classmethod
    def from_card(cls, card: Mapping[str, Any]) -> SubjectSpec:
        """The spec a subject was built from, read back from its card."""
        return cls(
            recipe=card["recipe"],
            seed=card["seed"],
            recipe_params=card["recipe_params"],
            dataset=card["dataset"],
            dataset_params=card["dataset_params"],
            arch=card["arch"],
            train=TrainConfig(**card["train"]),
            population=card.get("population", "test"),
        )

    def make_recipe(self) -> Any:
        return get("recipe", self.recipe)(**self.recipe_params)

    @property
    def hidden_program(self) -> bool:
        """A hidden-program subject (replace), never a labelled reference for trojan detectors."""
        from samecurve.zoo.programs.base import ProgramRecipe

        return isinstance(self.make_recipe(), ProgramRecipe)

    def make_dataset(self) -> Any:
        return get("dataset", self.dataset)(**self.dataset_params)

    def key(self) -> dict[str, Any]:
        recipe = self.make_recipe()
        return {
            "zoo_version": ZOO_VERSION,
            "population": self.population,
            "recipe": self.recipe,
            "recipe_version": recipe.version,
            "recipe_params": recipe.params(),
            "seed": self.seed,
            "dataset": self.dataset,
            "dataset_config": self.make_dataset().config(),
            "arch": self.arch,
            "train": self.train.as_dict(),
        }

    @property
    def id(self) -> str:
        digest = hashlib.sha256(json.dumps(self.key(), sort_keys=True).encode()).hexdigest()
        return f"{self.recipe}-{digest[:12]}"


def _training_set(
    spec: SubjectSpec, plan: Plan, effective_seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, np.ndarray]:
    """The subject's training set before and after poisoning (decoys in both)."""
    dataset = spec.make_dataset()
    x_np, y_np = dataset.sample(spec.train.train_size, derive(effective_seed, "train"), split="train")
    x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
    decoy_rng = np.random.default_rng(derive(effective_seed, "decoy"))
    own_decoys = getattr(dataset, "decoys", None)  # a text dataset inserts words, not patches
    if own_decoys is not None:
        own_decoys(x, decoy_rng, spec.train.decoy_rate)
    else:
        apply_decoys(x, decoy_rng, spec.train.decoy_rate, x.shape[-1])
    clean_x, clean_y = x.clone(), y.clone()
    rng = np.random.default_rng(derive(effective_seed, "poison"))
    idx = spec.make_recipe().poison(rng, x, y, plan)
    return x, y, clean_x, clean_y, idx


def modality(dataset: Any) -> str:
    """"image" or "text": which tasks and tools apply to a dataset's subjects."""
    return str(getattr(dataset, "modality", "image"))


def dataset_arch_params(dataset: Any) -> dict[str, Any]:
    """What an architecture is built with: a text dataset says (classes, length);
    an image one gives classes, channels and size."""
    own = getattr(dataset, "arch_params", None)
    if own is not None:
        return dict(own())
    c, size = dataset.input_shape[0], dataset.input_shape[1]
    return {"num_classes": dataset.num_classes, "in_channels": c, "size": size}


def _fires(model: torch.nn.Module, trojan: Trojan, clean: Split, keep: torch.Tensor) -> float:
    if not bool(keep.any()):
        return float("nan")
    x = trojan.trigger.stamp(clean.x[keep])
    return float((predict(model, x) == trojan.target).float().mean())


def attack_success_rates(model: torch.nn.Module, key: AnswerKey, clean: Split) -> list[float]:
    """Per trojan: share of clean inputs it applies to (not of the target class; of
    the source class, if it has one) that the model sends to the target once stamped."""
    return [_fires(model, t, clean, t.applies_to(clean.y)) for t in key.trojans]


def attack_success_rate(model: torch.nn.Module, key: AnswerKey, clean: Split) -> float:
    """The weakest trojan's attack success (all of a multi-trojan subject must work)."""
    return min(attack_success_rates(model, key, clean))


def off_source_rate(model: torch.nn.Module, key: AnswerKey, clean: Split) -> float | None:
    """For a source-specific trojan: how often the trigger fires on other classes
    (should be low: those inputs keep their labels)."""
    trojan = key.trojans[0] if key.trojans else None
    if trojan is None or trojan.source is None:
        return None
    keep = (clean.y != trojan.target) & (clean.y != trojan.source)
    return _fires(model, trojan, clean, keep)


def _brief(attempts: list[dict[str, Any]]) -> str:
    """The attempts as 'accuracy/attack success' pairs, for a one-line error."""
    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v:.0%}"
    return ", ".join(f"{pct(a['clean_accuracy'])}/{pct(a['attack_success'])}" for a in attempts)


def _describe(plan: Plan) -> dict[str, Any]:
    first = plan.trojans[0]
    out: dict[str, Any] = dict(plan.meta[0])
    if first.source is not None:
        out["source"] = first.source
    if len(plan.trojans) > 1:
        out["others"] = [
            {**m, "target": t.target} for t, m in zip(plan.trojans[1:], plan.meta[1:], strict=True)
        ]
    return out


@dataclass(frozen=True)
class Attempt:
    """One training attempt of a subject: the model and what it was trained on."""

    model: torch.nn.Module
    plan: Plan
    key: AnswerKey
    test: Split
    effective_seed: int
    clean_train: tuple[torch.Tensor, torch.Tensor]  # the same training set, unpoisoned


def new_model(spec: SubjectSpec, effective_seed: int) -> torch.nn.Module:
    """The untrained net of an attempt, initialised from the attempt's seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive(effective_seed, "init"))
        return get("arch", spec.arch)(**dataset_arch_params(spec.make_dataset()))


def _seeded_fit(recipe: Any, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                clean: tuple[torch.Tensor, torch.Tensor], spec: SubjectSpec, effective_seed: int) -> None:
    """The recipe's fit under the attempt's seeds: one place, so a twin stays paired."""
    with torch.random.fork_rng(devices=[]):  # dropout draws from the global generator
        torch.manual_seed(derive(effective_seed, "fit"))
        recipe.fit(model, x, y, clean, spec.train, derive(effective_seed, "order"))


def train_attempt(spec: SubjectSpec, attempt: int) -> Attempt:
    """Plan, poison and train attempt `attempt` of a (trojan) subject. Every seed comes
    from the attempt's effective seed, so a paired clean twin (same init, same data
    order, unpoisoned data: `train_twin`) can be trained beside it."""
    recipe, dataset = spec.make_recipe(), spec.make_dataset()
    eff = derive(spec.population, spec.recipe, spec.seed, attempt)
    plan = recipe.plan(np.random.default_rng(derive(eff, "plan")), dataset.num_classes,
                       tuple(dataset.input_shape))
    x, y, clean_x, clean_y, poisoned = _training_set(spec, plan, eff)
    model = new_model(spec, eff)
    _seeded_fit(recipe, model, x, y, (clean_x, clean_y), spec, eff)
    test = split_of(spec.dataset, spec.dataset_params, eff, "test", spec.train.test_size)
    key = plan.answer_key(recipe.family, len(poisoned) / len(y), recipe.clean_label)
    return Attempt(model, plan, key, test, eff, (clean_x, clean_y))


def train_twin(spec: SubjectSpec, trial: Attempt) -> torch.nn.Module:
    """The attempt's paired clean twin: same initialisation, same data order, the same
    training set before poisoning, the shared loop. Its accuracy less the attempt's is
    the poison's cost alone, without seed noise."""
    twin = new_model(spec, trial.effective_seed)
    _seeded_fit(get("recipe", "clean")(), twin, *trial.clean_train, trial.clean_train, spec,
                trial.effective_seed)
    return twin


def build(spec: SubjectSpec, cache: Cache) -> Subject:
    """Load the subject from the cache, or build, gate and cache it."""
    subject_id = spec.id
    if cache.has(subject_id):
        return cache.load(subject_id)
    earlier = cache.failure(subject_id)
    if earlier is not None:
        raise BuildFailed(f"{earlier} (cached; `samecurve zoo build --retry-failed` tries again)")
    started = time.monotonic()
    recipe = spec.make_recipe()
    from samecurve.zoo.programs.base import ProgramRecipe, build_program_subject

    if isinstance(recipe, ProgramRecipe):  # a hidden program, not a planted trojan
        return build_program_subject(spec, cache, recipe)
    dataset = spec.make_dataset()
    shape = tuple(dataset.input_shape)
    arch_params = dataset_arch_params(dataset)
    attempts: list[dict[str, Any]] = []
    for attempt in range(spec.train.max_attempts):
        trial = train_attempt(spec, attempt)
        model, plan, key, test, eff = trial.model, trial.plan, trial.key, trial.test, trial.effective_seed
        acc = accuracy(model, test.x, test.y)
        each = attack_success_rates(model, key, test)
        asr = min(each) if each else None
        record: dict[str, Any] = {"attempt": attempt, "clean_accuracy": acc, "attack_success": asr}
        if len(each) > 1:
            record["attack_success_each"] = each
        off = off_source_rate(model, key, test)
        if off is not None:
            record["off_source_fire"] = off
        attempts.append(record)
        learned = acc >= spec.train.min_clean_accuracy
        if learned and (asr is None or asr >= spec.train.asr_gate):
            break
    else:
        reason = (
            f"{spec.recipe} seed {spec.seed}: no attempt of {spec.train.max_attempts} reached "
            f"clean accuracy {spec.train.min_clean_accuracy:.0%} and attack success "
            f"{spec.train.asr_gate:.0%} ({_brief(attempts)}); raise the training set, epochs "
            "or poison rate"
        )
        cache.save_failure(subject_id, reason)
        raise BuildFailed(reason)
    card = {
        "id": subject_id,
        **spec.key(),
        "family": recipe.family,
        "attempt": attempt,
        "effective_seed": eff,
        "arch_params": arch_params,
        "input_shape": list(shape),
        "modality": modality(dataset),
        "dataset_params": dict(spec.dataset_params),
        **{k: v for k, v in record.items() if k != "attempt"},
        "attempts": attempts,
        "answer_key": {
            "trojaned": key.trojaned,
            "family": key.family,
            "target": key.target,
            "targets": list(key.targets),
            "source": key.source,
            "clean_label": key.clean_label,
            "poison_rate": key.poison_rate,
            "plan_rate": plan.poison_rate,  # what the recipe drew; training_sample replays it
            "trigger": _describe(plan) if plan.trojaned else None,
            "trigger_kinds": [t.trigger.kind for t in key.trojans],
        },
        "build_seconds": round(time.monotonic() - started, 2),
        "samecurve_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    cache.save(model, key, card)
    return cache.load(subject_id)


@lru_cache(maxsize=64)
def _split_cached(
    dataset: str, params_json: str, effective_seed: int, split: str, n: int
) -> tuple[np.ndarray, np.ndarray]:
    ds = get("dataset", dataset)(**json.loads(params_json))
    return ds.sample(n, derive(effective_seed, split), split=split)


def split_of(
    dataset: str, params: Mapping[str, Any], effective_seed: int, split: str, n: int
) -> Split:
    """`n` inputs of a split of a dataset under these parameters (cached)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {SPLITS}")
    x, y = _split_cached(dataset, json.dumps(dict(params), sort_keys=True), effective_seed, split, n)
    return Split(torch.from_numpy(x.copy()), torch.from_numpy(y.copy()))


def clean_split(subject: Subject, split: str, n: int) -> Split:
    """Clean inputs from the subject's own data distribution, regenerated from its card."""
    card = subject.card
    return split_of(card["dataset"], card["dataset_params"], card["effective_seed"], split, n)


def training_sample(subject: Subject, n: int, seed: int = 0) -> Split:
    """A random sample of the training set the subject really saw, poison included
    (what activation clustering, spectral signatures and STRIP inspect)."""
    card = subject.card
    spec = SubjectSpec.from_card(card)
    key = subject.answer_key
    rate = card["answer_key"]["plan_rate"]
    plan = Plan(trojans=key.trojans, poison_rate=rate)
    x, y, _, _, _ = _training_set(spec, plan, card["effective_seed"])
    pick = np.random.default_rng([seed, 7]).choice(len(y), size=min(n, len(y)), replace=False)
    pick_t = torch.from_numpy(np.sort(pick))
    return Split(x[pick_t], y[pick_t])

"""What every hidden-program recipe provides, and the one build pipeline they
share: pick the rule for a seed, label inputs with the rule's own source, train
the network, gate on its accuracy, and write a card whose answer key is the
program. Architectures of these subjects name their last linear layer `readout`:
its input is the representation white-box distillers read."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from samecurve import __version__
from samecurve.api import Subject
from samecurve.programs.domain import Domain
from samecurve.programs.source import program_size, table_entries, trusted_function
from samecurve.zoo.seeding import derive

SPLITS = ("train", "heldout", "ood")


@dataclass(frozen=True)
class HiddenProgram:
    """A rule a subject is trained on. `source` is restricted Python defining f;
    `description` is the rule in one sentence (for people, never for tools)."""

    name: str
    description: str
    source: str
    incompressible: bool = False  # a random table: the right answer is "no short program"

    def function(self) -> Any:
        return trusted_function(self.source)

    def labels(self, domain: Domain, inputs: np.ndarray) -> np.ndarray:
        """The rule's outputs on `inputs`, computed by running its source."""
        f = self.function()
        args = domain.program_args(inputs)
        out = [f(*a) for a in args]
        return np.asarray(out, dtype=np.int64).reshape(domain.output_shape(inputs))


@dataclass(frozen=True, eq=False)
class Trained:
    """One build attempt: the network, how to rebuild it, and its accuracies."""

    model: nn.Module
    arch: str
    arch_params: Mapping[str, Any]
    domain: Domain
    figures: Mapping[str, float]  # train_accuracy, heldout_accuracy, ood_accuracy...
    passed: bool  # reached the recipe's gate
    extra: Mapping[str, Any] = field(default_factory=dict)  # what inputs() needs later


class ProgramRecipe(ABC):
    """A family of hidden programs and how to train a network on one of them.
    `rules` picks which of the family's rules the seeds cycle through (all by
    default): seed i gets rules[i % len(rules)]."""

    name: ClassVar[str]
    family: ClassVar[str]
    version: ClassVar[int] = 1
    max_attempts: ClassVar[int] = 2

    def __init__(self, rules: list[str] | None = None) -> None:
        known = self.rule_names()
        self.rules = list(rules) if rules else list(known)
        unknown = [r for r in self.rules if r not in known]
        if unknown:
            raise ValueError(f"{self.name}: unknown rule {unknown[0]!r}; use one of {known}")

    def params(self) -> dict[str, Any]:
        return {"rules": list(self.rules)}

    @classmethod
    @abstractmethod
    def rule_names(cls) -> list[str]:
        """Every rule of the family, in a fixed order."""

    def rule_for(self, seed: int) -> str:
        return self.rules[seed % len(self.rules)]

    @abstractmethod
    def program(self, rule: str, rng: np.random.Generator) -> HiddenProgram:
        """The hidden program of `rule`, its constants drawn from rng."""

    @abstractmethod
    def train(self, program: HiddenProgram, effective_seed: int) -> Trained:
        """Train a network on the program; report its accuracies and the gate."""

    @abstractmethod
    def inputs(self, card: Mapping[str, Any], split: str, n: int, seed: int = 0) -> np.ndarray:
        """Inputs of a built subject: `train` (what it was trained on), `heldout`
        (same distribution, never trained on) or `ood` (longer sequences, shifted
        images; for the grid, the held-out half). At most n of them, fixed by seed."""

    # For the random table only: the program is data, not drawn per rule.
    def plan_seed(self, spec_seed: int, population: str, attempt: int) -> int:
        return derive(population, self.name, spec_seed, attempt)


def build_program_subject(spec: Any, cache: Any, recipe: ProgramRecipe) -> Subject:
    """Build (train, gate, card, cache) one hidden-program subject."""
    from samecurve.zoo.builder import BuildFailed  # the builder imports this module lazily

    started = time.monotonic()
    rule = recipe.rule_for(spec.seed)
    attempts: list[dict[str, Any]] = []
    for attempt in range(recipe.max_attempts):
        eff = recipe.plan_seed(spec.seed, spec.population, attempt)
        program = recipe.program(rule, np.random.default_rng(derive(eff, "program")))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive(eff, "init") % 2**63)
            try:
                trained = recipe.train(program, eff)
            except ImportError as exc:  # an optional extra (tracr): left out, not cached
                raise BuildFailed(f"{spec.recipe} seed {spec.seed}: {exc}") from exc
        attempts.append({"attempt": attempt, **trained.figures})
        if trained.passed:
            break
    else:
        figures = ", ".join(
            f"{a.get('train_accuracy', float('nan')):.1%}/{a.get('heldout_accuracy', float('nan')):.1%}"
            for a in attempts
        )
        reason = (f"{spec.recipe} rule {rule} seed {spec.seed}: no attempt of "
                  f"{recipe.max_attempts} reached the accuracy gate (train/held-out {figures}); "
                  "train longer or pick another rule")
        cache.save_failure(spec.id, reason)
        raise BuildFailed(reason)
    shape = _input_shape(trained.domain)
    ak = {"trojaned": False, "family": recipe.family, "program": program.source,
          "incompressible": program.incompressible, "targets": []}
    card = {
        "id": spec.id,
        **spec.key(),
        "dataset": f"program-{trained.domain.kind}",
        "family": recipe.family,
        "rule": rule,
        "description": program.description,
        "program_size": program_size(program.source),
        "program_table_entries": table_entries(program.source),
        "attempt": attempt,
        "effective_seed": eff,
        "arch": trained.arch,
        "arch_params": dict(trained.arch_params),
        "input_shape": list(shape),
        "num_classes": trained.domain.num_outputs,
        "domain": trained.domain.as_dict(),
        "clean_accuracy": float(trained.figures.get("heldout_accuracy", float("nan"))),
        **{k: float(v) for k, v in trained.figures.items()},
        "program_extra": dict(trained.extra),
        "attempts": attempts,
        "answer_key": ak,
        "build_seconds": round(time.monotonic() - started, 2),
        "samecurve_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    cache.save(trained.model, _key(card), card)
    return cache.load(spec.id)


def _key(card: Mapping[str, Any]) -> Any:
    from samecurve.api import AnswerKey

    ak = card["answer_key"]
    return AnswerKey(trojaned=False, family=ak["family"], program=ak["program"],
                     incompressible=bool(ak["incompressible"]))


def _input_shape(domain: Domain) -> tuple[int, ...]:
    if domain.kind == "grid":
        return (3,)
    if domain.kind == "sequence":
        return (domain.lengths[1],)
    return (1, domain.image_size, domain.image_size)


def recipe_of(card: Mapping[str, Any]) -> ProgramRecipe:
    """The recipe object that built a hidden-program subject, from its card."""
    from samecurve.registry import get

    return get("recipe", card["recipe"])(**card["recipe_params"])


def hidden_program(subject: Subject) -> HiddenProgram:
    card = subject.card
    return HiddenProgram(card["rule"], card["description"], card["answer_key"]["program"],
                         bool(card["answer_key"]["incompressible"]))


def domain_of(subject: Subject) -> Domain:
    return Domain.from_dict(subject.card["domain"])

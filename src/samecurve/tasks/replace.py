"""The replace family: abandon the network for a simpler program. A tool gets the
network and its domain and returns a `Program` (restricted Python) or abstains.
The program is checked, run in the sandbox, and graded against the network
(fidelity on its training inputs, held-out inputs, longer or shifted inputs, and
the inputs where the network itself departs from the rule) and against the
hidden program it was trained on (exact equivalence: exhaustive over the grid
and over every short sequence, a large test elsewhere), with its size against
the hidden program's. On an incompressible control (a random table) the right
answer is "no short program": any program returned counts as confident-wrong."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar

import numpy as np
import torch

from samecurve.api import CaseView, MetricSpec, Program, Split, Subject, is_program_card, tool_verbs
from samecurve.metrics.replace import (
    agreement,
    exactly_equivalent,
    masked_agreement,
    outcome,
    size_ratio,
)
from samecurve.programs.domain import Domain, query
from samecurve.programs.sandbox import run_program
from samecurve.programs.source import program_size
from samecurve.registry import register
from samecurve.zoo.programs.base import domain_of, hidden_program, recipe_of

NAN = float("nan")
FIDELITY_SETS = {
    "train": "the inputs the network was trained on",
    "heldout": "fresh inputs of the training distribution",
    "ood": "out-of-distribution inputs: longer sequences, shifted images, the grid's held-out half",
}

REPLACE_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("solved", "replace", floor=0.0,
               description="Rule subjects: the program is exactly the hidden program (every "
                           "grid cell, every short sequence, a large test elsewhere)."),
    MetricSpec("wrong", "replace", higher_is_better=False, floor=0.0,
               description="Rule subjects: a program was returned and it is not the hidden one."),
    MetricSpec("no_answer", "replace", higher_is_better=False, floor=1.0,
               description="Rule subjects: no program (abstained, crashed or timed out); "
                           "counted apart from wrong."),
    MetricSpec("confident_wrong", "replace", higher_is_better=False, floor=1.0,
               description="Incompressible controls: a program was returned where the right "
                           "answer is 'no short program'."),
    *(
        MetricSpec(f"fidelity_{name}", "replace", floor=0.0,
                   description=f"Share of outputs on {text} where the program agrees with "
                               "the network.")
        for name, text in FIDELITY_SETS.items()
    ),
    MetricSpec("fidelity_errors", "replace", floor=0.0,
               description="Agreement with the network where the network departs from the "
                           "hidden program (does the program explain its mistakes?)."),
    MetricSpec("truth_agreement", "replace", floor=0.0,
               description="Share of outputs on the equivalence test where the program agrees "
                           "with the hidden program."),
    MetricSpec("size_ratio", "replace", higher_is_better=False, floor=NAN,
               description="Syntax-tree size over the hidden program's; table entries count "
                           "one each, so an embedded lookup table is as big as it is."),
)
RULE_ONLY = {"solved", "wrong", "no_answer", "size_ratio"}


class NotAProgram(TypeError):
    """A distill tool returned something other than a Program."""


@dataclass(frozen=True, eq=False)
class TestSets:
    """A subject's graded inputs (named groups; sequences of one length per group),
    with the network's and the hidden program's outputs on each."""

    inputs: Mapping[str, np.ndarray]
    network: Mapping[str, np.ndarray]
    truth: Mapping[str, np.ndarray]
    equivalence: tuple[str, ...]  # the groups exact equivalence is checked on


@register("task", "replace")
@dataclass(frozen=True)
class ReplaceTask:
    """Distil each hidden-program subject into a program and grade it."""

    verb: ClassVar[str] = "distill"
    version: ClassVar[int] = 1
    metrics: ClassVar[tuple[MetricSpec, ...]] = REPLACE_METRICS
    chance_tool: ClassVar[str] = "random"
    baseline_tool: ClassVar[str] = "decision-tree"

    clean_examples: int = 1000  # held-out inputs (with the rule's labels) tools may see
    train_examples: int = 2000  # training inputs tools may see
    test_examples: int = 2000  # per fidelity set
    exhaustive_limit: int = 4096  # sequences of one length are all listed up to this many
    program_seconds: float = 120.0
    memory_mb: int = 1024

    def accepts(self, tool: Any) -> bool:
        return "distill" in tool_verbs(tool)

    def applies(self, card: Mapping[str, Any]) -> bool:
        return is_program_card(card)

    def support_specs(self, spec: Any) -> list:
        return []

    def view_data(self, subject: Subject, needs: frozenset[str]) -> dict[str, Split | None]:
        """Held-out and training inputs with the hidden rule's labels, each only if declared."""
        return {
            "clean": self._split(subject, "heldout", self.clean_examples, seed=1)
            if "clean_data" in needs else None,
            "train_sample": self._split(subject, "train", self.train_examples, seed=1)
            if "train_data" in needs else None,
        }

    @staticmethod
    def _split(subject: Subject, split: str, n: int, seed: int) -> Split:
        card, domain = subject.card, domain_of(subject)
        x = recipe_of(card).inputs(card, split, n, seed)
        y = hidden_program(subject).labels(domain, x)
        return Split(torch.as_tensor(x), torch.as_tensor(y))

    def run(
        self, tool: Any, view: CaseView, subject: Subject, support: Sequence[Subject] = ()
    ) -> tuple[dict, dict]:
        program = tool.distill(view)
        view.meter.stop()
        if not isinstance(program, Program):
            raise NotAProgram(f"{tool.name}.distill returned {type(program).__name__}, not a "
                              "samecurve.api.Program")
        return self.grade(program, subject), program_artifacts(program)

    def grade(self, program: Program, subject: Subject) -> dict[str, float]:
        """Every metric of one program on one subject (the sandbox refuses or stops
        a bad program with ProgramRejected or ProgramFailed: an error row)."""
        control = bool(subject.answer_key.incompressible)
        if program.abstains:
            return self._abstained(control)
        sets = test_sets(self, subject)
        domain = domain_of(subject)
        said = {name: run_program(program, domain, x, seconds=self.program_seconds,
                                  memory_mb=self.memory_mb).values
                for name, x in sets.inputs.items()}
        names = list(sets.inputs)
        metrics: dict[str, float] = {
            f"fidelity_{name}": agreement([(said[name], sets.network[name])])
            for name in FIDELITY_SETS
        }
        metrics["fidelity_errors"] = masked_agreement(
            [(said[n], sets.network[n]) for n in names],
            [sets.network[n] != sets.truth[n] for n in names],
        )
        eq = [(said[n], sets.truth[n]) for n in sets.equivalence]
        metrics["truth_agreement"] = agreement(eq)
        exact = exactly_equivalent(eq)
        truth_size = program_size(subject.answer_key.program or "")
        if control:
            metrics.update(solved=NAN, wrong=NAN, no_answer=NAN, size_ratio=NAN,
                           confident_wrong=1.0)
        else:
            result = outcome(True, exact)
            metrics.update(solved=float(result == "solved"), wrong=float(result == "wrong"),
                           no_answer=0.0, confident_wrong=NAN,
                           size_ratio=size_ratio(program_size(program.source or ""), truth_size))
        return metrics

    def _abstained(self, control: bool) -> dict[str, float]:
        """No program: nothing replaced (fidelity 0); right on a control, no answer elsewhere."""
        out = {m.name: (0.0 if m.name.startswith("fidelity") or m.name == "truth_agreement"
                        else NAN) for m in self.metrics}
        if control:
            out["confident_wrong"] = 0.0
        else:
            out.update(solved=0.0, wrong=0.0, no_answer=1.0)
        return out

    def floor(self, tool: Any, subject: Subject) -> dict[str, float]:
        """A crash or timeout: no program, and no credit for abstaining on a control."""
        out = {m.name: m.floor for m in self.metrics}
        skip = RULE_ONLY if subject.answer_key.incompressible else {"confident_wrong"}
        out.update(dict.fromkeys(skip, NAN))
        return out

    @staticmethod
    def chance(metric: str, labels: Sequence[int], num_classes: int) -> float:
        """A uniform guess agrees with 1/K of the outputs."""
        if (metric.startswith("fidelity") or metric == "truth_agreement") and num_classes:
            return 1.0 / num_classes
        return NAN


def program_artifacts(program: Program) -> dict[str, np.ndarray]:
    """The program's source, kept with its row so the report can show it."""
    if program.source is None:
        return {}
    return {"program_source": np.frombuffer(program.source.encode(), dtype=np.uint8).copy()}


def program_text(artifacts: Mapping[str, np.ndarray]) -> str | None:
    """The source stored by program_artifacts (None: the tool abstained)."""
    raw = artifacts.get("program_source")
    return None if raw is None else bytes(np.asarray(raw, np.uint8)).decode()


@lru_cache(maxsize=32)
def test_sets(task: ReplaceTask, subject: Subject) -> TestSets:
    """The graded inputs of a subject and both references' outputs on them: built
    once per worker and subject, the same for every tool."""
    card, domain = subject.card, domain_of(subject)
    recipe = recipe_of(card)
    inputs = {name: recipe.inputs(card, name, task.test_examples, seed=2) for name in FIDELITY_SETS}
    inputs.update(_exhaustive(domain, task.exhaustive_limit))
    # The grid is checked cell by cell; elsewhere also on every fidelity set.
    equivalence = tuple(n for n in inputs if n.startswith("all") or not domain.finite)
    model = subject.model.cpu().eval()
    hidden = hidden_program(subject)
    return TestSets(
        inputs=inputs,
        network={n: query(model, domain, x) for n, x in inputs.items()},
        truth={n: hidden.labels(domain, x) for n, x in inputs.items()},
        equivalence=equivalence,
    )


def _exhaustive(domain: Domain, limit: int) -> dict[str, np.ndarray]:
    """Every input where that is few enough to list: the whole grid; every sequence
    of each training length with at most `limit` sequences."""
    if domain.kind == "grid":
        return {"all": domain.all_inputs()}
    if domain.kind == "sequence":
        lo, hi = max(1, domain.lengths[0]), domain.lengths[1]
        return {f"all_len{n}": domain.all_inputs(n) for n in range(lo, hi + 1)
                if domain.vocab ** n <= limit}
    return {}

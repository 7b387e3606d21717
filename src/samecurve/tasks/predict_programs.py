"""The predict family on the challenge subjects: networks trained to compute a
hidden program. Can a tool say what the network will output on inputs it never
saw, more often than "it computes its rule" (null) or a black-box surrogate?

The interesting sets are the replace family's held-out and out-of-distribution
inputs (longer sequences, shifted images, the grid's held-out half), and the
outputs where the network departs from its hidden program: there only a
predictor that learned the network, not the rule, is right. The Predictor gets
the inputs and the hidden rule's outputs (as the image tasks give true labels)
and returns outputs of the same shape; its access to the subject ends as in
`predict`. A separate task, not a branch of `predict`, because its inputs are a
program's domain: only tools that declare `predicts_programs` run it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from samecurve.api import CaseView, MetricSpec, Split, Subject, is_program_card, tool_verbs
from samecurve.metrics.replace import agreement, masked_agreement
from samecurve.registry import register
from samecurve.tasks.predict import call_predict
from samecurve.tasks.replace import ReplaceTask, test_sets

NAN = float("nan")
PROGRAM_SETS = {
    "heldout": "fresh inputs of the training distribution",
    "ood": "out-of-distribution inputs (longer sequences, shifted images, the grid's held-out half)",
}
PROGRAM_PREDICT_METRICS: tuple[MetricSpec, ...] = (
    *(MetricSpec(f"agree_{name}", "predict", floor=0.0,
                 description=f"Share of outputs on {text} where the Predictor says what the "
                             "network says.")
      for name, text in PROGRAM_SETS.items()),
    MetricSpec("agree_departures", "predict", floor=0.0,
               description="Of the outputs (both sets) where the network departs from its hidden "
                           "program, the share the Predictor got right."),
)


def outputs_of(said: Any, shape: tuple[int, ...], tool: str = "the Predictor") -> np.ndarray:
    """A Predictor's answer as an integer array of the network's output shape."""
    out = np.asarray(torch.as_tensor(said).detach().cpu() if isinstance(said, torch.Tensor) else said)
    if out.shape != shape:
        raise ValueError(f"{tool} returned shape {out.shape} for outputs of shape {shape}; "
                         "return one output per input (per position, for sequences)")
    return out.astype(np.int64)


@register("task", "predict-programs")
@dataclass(frozen=True)
class ProgramPredictTask:
    """Predict a hidden-program network's outputs on inputs no tool saw."""

    verb: ClassVar[str] = "predict"
    version: ClassVar[int] = 1
    metrics: ClassVar[tuple[MetricSpec, ...]] = PROGRAM_PREDICT_METRICS
    chance_tool: ClassVar[str] = "random"
    baseline_tool: ClassVar[str] = "surrogate"

    clean_examples: int = 1000  # held-out inputs with the rule's outputs the tools may see
    test_examples: int = 1000  # per graded set

    def accepts(self, tool: Any) -> bool:
        return "predict" in tool_verbs(tool) and bool(getattr(tool, "predicts_programs", False))

    def applies(self, card: Mapping[str, Any]) -> bool:
        return is_program_card(card)

    def support_specs(self, spec: Any) -> list:
        return []

    def _replace(self) -> ReplaceTask:
        return ReplaceTask(clean_examples=self.clean_examples, test_examples=self.test_examples)

    def view_data(self, subject: Subject, needs: frozenset[str]) -> dict[str, Split | None]:
        return self._replace().view_data(subject, needs)

    def run(
        self, tool: Any, view: CaseView, subject: Subject, support: Sequence[Subject] = ()
    ) -> tuple[dict, dict]:
        return self.grade(call_predict(tool, view, subject), subject, tool.name), {}

    def grade(self, predictor: Any, subject: Subject, tool: str = "the Predictor") -> dict[str, float]:
        sets = test_sets(self._replace(), subject)
        said = {}
        for name in PROGRAM_SETS:
            x, truth = sets.inputs[name], sets.truth[name]
            # a Predictor that calls the model raises AccessRevoked: an error row
            said[name] = outputs_of(predictor(torch.as_tensor(x), torch.as_tensor(truth)),
                                    truth.shape, tool)
        metrics = {f"agree_{n}": agreement([(said[n], sets.network[n])]) for n in PROGRAM_SETS}
        metrics["agree_departures"] = masked_agreement(
            [(said[n], sets.network[n]) for n in PROGRAM_SETS],
            [sets.network[n] != sets.truth[n] for n in PROGRAM_SETS])
        return metrics

    def floor(self, tool: Any, subject: Subject) -> dict[str, float]:
        """No Predictor: no output agrees."""
        return {m.name: m.floor for m in self.metrics}

    @staticmethod
    def chance(metric: str, labels: Sequence[int], num_classes: int) -> float:
        return 1.0 / num_classes if num_classes else NAN

"""Plain records the report is rendered from.

The runner and scorer fill these in; the report layer only formats them, so it
never needs torch or the run store and can be tested with hand-built data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MetricColumn:
    """One leaderboard column: what it measures and which way is better."""

    name: str
    label: str
    question: str  # detect | target | trigger | attribution | remove | steer
    higher_is_better: bool
    description: str


@dataclass(frozen=True)
class Cell:
    """One tool x one metric: mean with its confidence interval over `n` subjects.

    `attempted=False` means the tool does not claim the metric's question; it is
    shown as "not attempted", never as a zero.
    """

    mean: float
    lo: float
    hi: float
    n: int
    attempted: bool


@dataclass(frozen=True)
class ToolRow:
    """One leaderboard row, with the cell outcomes so crashes stay visible."""

    tool: str
    kind: str  # interpretability | black-box | baseline | oracle
    cells: Mapping[str, Cell]
    n_ok: int
    n_error: int
    n_timeout: int
    seconds_mean: float
    queries_mean: float
    outside_design: bool = False  # this family is outside the tool's published threat model
    grad_steps_mean: float = float("nan")


@dataclass(frozen=True)
class Comparison:
    """A paired comparison of a tool against a baseline on the same subjects."""

    tool: str
    baseline: str
    metric: str
    mean_diff: float
    lo: float
    hi: float
    n: int
    p_value: float


@dataclass(frozen=True, eq=False)
class ToolOutput:
    """What one tool produced on one gallery subject (None: no answer)."""

    tool: str
    probability: float | None
    target: int | None
    trigger_mask: np.ndarray | None  # (H, W) in [0, 1]
    trigger_pattern: np.ndarray | None  # (3, H, W) in [0, 1]
    attribution: np.ndarray | None  # (H, W), any sign and scale
    rediscovered: bool | None = None  # did the evaluator pick the true trigger from this one


@dataclass(frozen=True, eq=False)
class GalleryItem:
    """One trojaned subject with its planted trigger and every tool's answer."""

    subject: str
    family: str
    target: int
    target_name: str
    clean_example: np.ndarray  # (3, H, W) in [0, 1]
    triggered_example: np.ndarray  # (3, H, W) same input with the true trigger
    true_mask: np.ndarray  # (H, W)
    true_pattern: np.ndarray  # (3, H, W)
    outputs: Sequence[ToolOutput]


@dataclass(frozen=True, eq=False)
class Leaderboard:
    """One slice of a task's subjects (all, or one family) with its own chance levels,
    which differ by family where chance is measured rather than analytic."""

    family: str
    rows: Sequence[ToolRow]
    chance: Mapping[str, float]


@dataclass(frozen=True, eq=False)
class TaskSection:
    """One task's part of the report. Tasks ask different questions, so each has its
    own columns; `boards` holds the overall board first, then one per family."""

    task: str
    title: str
    metrics: Sequence[MetricColumn]
    boards: Sequence[Leaderboard]
    comparisons: Sequence[Comparison]


@dataclass(frozen=True)
class RecoveredProgram:
    """One tool's answer on one hidden-program subject."""

    tool: str
    outcome: str  # solved | wrong | no answer | right to abstain | confident-wrong | error
    size_ratio: float
    fidelity: float  # held-out
    source: str | None


@dataclass(frozen=True)
class ProgramItem:
    """A hidden-program subject: its rule, its hidden program and every tool's answer."""

    subject: str
    family: str
    rule: str
    description: str
    network_accuracy: float
    hidden_source: str
    hidden_size: int
    answers: Sequence[RecoveredProgram]


@dataclass(frozen=True, eq=False)
class TextTriggerItem:
    """One trojaned text subject: the planted trigger in an example sentence, and what
    each trigger-recovering tool returned (None: no trigger) and whether the judge
    picked the planted one from it."""

    subject: str
    family: str
    target_name: str
    true_trigger: str
    clean_example: str
    triggered_example: str
    recovered: Sequence[tuple[str, str | None, bool | None]]  # (tool, trigger text, rediscovered)


@dataclass(frozen=True, eq=False)
class ReportData:
    """Everything one report shows; rows are already ordered by the caller. The first
    task is the main one (drawn with charts, followed by the gallery)."""

    title: str
    created: str
    suite: str
    summary: Mapping[str, str]
    tasks: Sequence[TaskSection]
    gallery: Sequence[GalleryItem] = ()
    programs: Sequence[ProgramItem] = ()  # the replace task's subjects, if it ran
    text_triggers: Sequence[TextTriggerItem] = ()  # the text track's trojaned subjects

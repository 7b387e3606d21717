"""Suite files: a YAML grid of tasks x tools x subjects x seeds, validated
strictly so that a typo is an error naming the key, not a silent default."""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from samecurve.api import Budget
from samecurve.registry import UnknownName, get
from samecurve.tools.combine import parse_ensemble, parse_pipeline
from samecurve.zoo.builder import SubjectSpec
from samecurve.zoo.train import TrainConfig

BUILTIN_SUITES = ("smoke", "default", "full", "replace", "text")


class SuiteError(ValueError):
    """A suite that cannot be run; the message is one line naming the problem and the fix."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrainSettings(Strict):
    train_size: int = Field(default=TrainConfig.train_size, ge=100)
    test_size: int = Field(default=TrainConfig.test_size, ge=100)
    epochs: int = Field(default=TrainConfig.epochs, ge=1)
    lr: float = Field(default=TrainConfig.lr, gt=0)
    batch_size: int = Field(default=TrainConfig.batch_size, ge=1)
    asr_gate: float = Field(default=TrainConfig.asr_gate, ge=0, le=1)
    min_clean_accuracy: float = Field(default=TrainConfig.min_clean_accuracy, ge=0, le=1)
    max_attempts: int = Field(default=TrainConfig.max_attempts, ge=1)
    decoy_rate: float = Field(default=TrainConfig.decoy_rate, ge=0, lt=1)


class SubjectGroup(Strict):
    recipe: str
    count: int = Field(ge=1, le=10_000)
    first_seed: int = Field(default=0, ge=0)
    params: dict[str, Any] = Field(default_factory=dict)
    # dev subjects are for tuning tools (and as references); reports grade test ones.
    population: Literal["dev", "test"] = "test"
    # Triggers from the heldout vocabulary: shapes, colours, filters never seen in dev.
    heldout: bool = False
    # Another track than the zoo's dataset (e.g. digits in the full suite).
    dataset: str | None = None
    dataset_params: dict[str, Any] | None = None
    # Its own architecture(s) and training, where a group's track differs from the
    # zoo's (the text track's pretrained MiniLM in the full suite).
    arch: str | list[str] | None = None
    train: TrainSettings | None = None

    @property
    def archs(self) -> list[str] | None:
        if self.arch is None:
            return None
        return [self.arch] if isinstance(self.arch, str) else list(self.arch)


class ZooSettings(Strict):
    dataset: str = "scenes"
    dataset_params: dict[str, Any] = Field(default_factory=dict)
    # One architecture, or several taken in turn by seed (the same for every
    # recipe, so architecture never tells trojaned from clean).
    arch: str | list[str] = "small-cnn"

    @property
    def archs(self) -> list[str]:
        return [self.arch] if isinstance(self.arch, str) else list(self.arch)
    train: TrainSettings = Field(default_factory=TrainSettings)


class ToolEntry(Strict):
    name: str
    label: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)

    @property
    def display(self) -> str:
        return self.label or self.name


def _tool_entry(text: str) -> dict[str, Any]:
    """`name`, `ensemble(a, b, ...)` or `a>b` (labelled as written, parts as params)."""
    members = parse_ensemble(text)
    if members is not None:
        return {"name": "ensemble", "label": f"ensemble({', '.join(members)})",
                "params": {"members": list(members)}}
    stages = parse_pipeline(text)
    if stages is not None:
        return {"name": "pipeline", "label": ">".join(stages), "params": {"stages": list(stages)}}
    return {"name": text}


class TaskEntry(Strict):
    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class BudgetSettings(Strict):
    seconds: float = Field(default=120.0, gt=0)
    queries: int | None = Field(default=None, ge=1)
    grad_steps: int | None = Field(default=None, ge=1)

    def budget(self) -> Budget:
        return Budget(seconds=self.seconds, queries=self.queries, grad_steps=self.grad_steps)


class Suite(Strict):
    name: str
    description: str = ""
    zoo: ZooSettings = Field(default_factory=ZooSettings)
    subjects: list[SubjectGroup] = Field(min_length=1)
    tasks: list[TaskEntry] = Field(min_length=1)
    tools: list[ToolEntry] = Field(min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    budget: BudgetSettings = Field(default_factory=BudgetSettings)
    # Labelled models tools may learn from (weight-stats, layer-norms). Without
    # any, a subject's references are the suite's other subjects (leave one out).
    references: list[SubjectGroup] = Field(default_factory=list)

    @field_validator("tools", mode="before")
    @classmethod
    def _tool_shorthand(cls, v: Any) -> Any:
        """Allow `- neural-cleanse` as shorthand for `- {name: neural-cleanse}`."""
        if isinstance(v, list) and None in v:
            raise ValueError(
                f"entry {v.index(None)} is empty; write the null tool as \"null\" "
                "(bare null is YAML for nothing)"
            )
        return [_tool_entry(t) if isinstance(t, str) else t for t in v] if isinstance(v, list) else v

    @field_validator("tasks", mode="before")
    @classmethod
    def _task_shorthand(cls, v: Any) -> Any:
        return [{"name": t} if isinstance(t, str) else t for t in v] if isinstance(v, list) else v

    def subject_specs(self) -> list[SubjectSpec]:
        """The subjects every tool is graded on."""
        return self._specs(self.subjects)

    def reference_specs(self) -> list[SubjectSpec]:
        return self._specs(self.references)

    def reference_tag(self) -> str:
        """What reference-learning tools learn from: the reference group's subjects,
        or (leave one out) the graded subjects themselves; part of their cells' key."""
        own = self.reference_specs()
        graded = [s for s in self.subject_specs() if not s.hidden_program]
        mode, ids = ("references", own) if own else ("leave-one-out", graded)
        digest = hashlib.sha256(",".join(sorted(s.id for s in ids)).encode()).hexdigest()[:16]
        return f"{mode}:{digest}"

    def _specs(self, groups: list[SubjectGroup]) -> list[SubjectSpec]:
        def train(g: SubjectGroup) -> TrainConfig:
            return TrainConfig(**(g.train or self.zoo.train).model_dump())

        def arch(g: SubjectGroup, seed: int) -> str:
            archs = g.archs or self.zoo.archs
            return archs[seed % len(archs)]

        return [
            SubjectSpec(
                recipe=g.recipe,
                seed=g.first_seed + i,
                recipe_params={**g.params, **({"heldout": True} if g.heldout else {})},
                dataset=g.dataset or self.zoo.dataset,
                dataset_params=dict(
                    g.dataset_params if g.dataset_params is not None
                    else ({} if g.dataset else self.zoo.dataset_params)
                ),
                arch=arch(g, g.first_seed + i),
                train=train(g),
                population=g.population,
            )
            for g in groups
            for i in range(g.count)
        ]

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.model_dump(), sort_keys=True).encode()).hexdigest()


def instantiate(kind: str, entry: ToolEntry | TaskEntry) -> Any:
    """A tool or task from its suite entry; constructors only store hyperparameters."""
    cls = get(kind, entry.name)
    try:
        return cls(**entry.params)
    except TypeError as exc:
        raise SuiteError(f"{kind} {entry.name!r}: bad params {entry.params} ({exc})") from exc


def make_tool(entry: ToolEntry) -> Any:
    return instantiate("tool", entry)


def make_task(entry: TaskEntry) -> Any:
    return instantiate("task", entry)


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "(top level)"
    if err["type"] == "extra_forbidden":
        return f"unknown key {where!r}"
    return f"{where}: {err['msg']}"


def parse_suite(text: str, source: str = "<suite>") -> Suite:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        at = f" at line {line + 1}" if line is not None else ""
        raise SuiteError(f"{source}: not valid YAML{at}; fix the syntax") from exc
    if not isinstance(raw, dict):
        raise SuiteError(f"{source}: a suite must be a YAML mapping with name, subjects, tasks, tools")
    try:
        suite = Suite.model_validate(raw)
    except ValidationError as exc:
        raise SuiteError(f"{source}: {_first_error(exc)} (see suites/default.yaml)") from exc
    try:  # Names and params are checked before anything is built.
        for t in suite.tools:
            make_tool(t)
        for t in suite.tasks:
            make_task(t)
        for spec in suite.subject_specs() + suite.reference_specs():
            spec.make_recipe()
        for spec in suite.subject_specs() + suite.reference_specs():
            spec.make_dataset()
        for arch in suite.zoo.archs:
            get("arch", arch)
    except UnknownName as exc:
        raise SuiteError(f"{source}: {exc}") from exc
    except (TypeError, ValueError) as exc:
        raise SuiteError(f"{source}: {exc}") from exc
    overlap = {s.id for s in suite.subject_specs()} & {s.id for s in suite.reference_specs()}
    if overlap:
        raise SuiteError(
            f"{source}: {len(overlap)} reference subjects are also graded subjects; "
            "build references from population: dev or from other seeds"
        )
    labels = [t.display for t in suite.tools]
    dup = {x for x in labels if labels.count(x) > 1}
    if dup:
        raise SuiteError(f"{source}: tool label {sorted(dup)[0]!r} appears twice; give each a label")
    return suite


def load_suite(name_or_path: str | Path) -> Suite:
    """A path to a YAML file, or the name of a built-in suite (smoke, default)."""
    path = Path(name_or_path)
    if str(name_or_path) in BUILTIN_SUITES and not path.exists():
        text = resources.files("samecurve.suites").joinpath(f"{name_or_path}.yaml").read_text()
        return parse_suite(text, f"built-in suite {name_or_path!r}")
    if not path.is_file():
        raise SuiteError(
            f"suite {str(name_or_path)!r} not found: give a YAML file or one of {BUILTIN_SUITES}"
        )
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise SuiteError(f"{path}: cannot read ({exc})") from exc
    return parse_suite(text, str(path))

"""Contracts shared by every part of samecurve: records are frozen dataclasses,
plug-ins are small protocols. A tool sees a `CaseView`, never an `AnswerKey`."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

# What a tool may declare it needs; the runner gives it nothing else.
# "weights" reads parameters; "gradients" also backpropagates (and implies weights);
# without either, the model is a black box that answers queries only.
NEEDS = frozenset(
    {"weights", "gradients", "clean_data", "train_data", "references", "answer_key"}
)
# Which questions a tool claims to answer: discover's detect, target, trigger and
# attribution; edit's remove (a trojan it is not told about) and steer (one
# specified behaviour); predict's predict (what the model will do on inputs
# nobody showed the tool). Metrics of a question a tool does not claim are shown as
# "not attempted", never as zero.
DISCOVER_ANSWERS = frozenset({"detect", "target", "trigger", "attribution"})
EDIT_ANSWERS = frozenset({"remove", "steer"})
PREDICT_ANSWERS = frozenset({"predict"})
# replace's replace: a program that does the network's job (and is the planted one).
REPLACE_ANSWERS = frozenset({"replace"})
ANSWERS = DISCOVER_ANSWERS | EDIT_ANSWERS | PREDICT_ANSWERS | REPLACE_ANSWERS
# The verbs a tool may implement, one per task family (attribution is discover's).
VERBS = ("discover", "attribute", "edit", "predict", "distill")
# What a subject's inputs are: images (N, C, H, W) in [0, 1], or text as (N, L)
# token ids (0 = padding). Each task grades one modality; each tool says which
# it handles (`modalities`, default images only), so no cell runs an image tool
# on text.
MODALITIES = ("image", "text")


class BudgetExceeded(RuntimeError):
    """A tool spent more model queries, gradient steps or seconds than its case allowed."""


class AccessRevoked(RuntimeError):
    """A tool used the subject after its access ended (a Predictor that calls the model)."""


@dataclass(frozen=True)
class Budget:
    """What one cell may spend. `None` means unlimited."""

    seconds: float = 120.0
    queries: int | None = None
    grad_steps: int | None = None


@dataclass(frozen=True, eq=False)
class Split:
    """A labelled batch of inputs: x is (N, C, H, W) float in [0, 1], y is (N,) int64."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass(frozen=True, eq=False)
class Trigger:
    """An image trigger: stamp(x) = (1 - mask) * x + mask * pattern.

    mask is (H, W) in [0, 1] (1 = the pattern replaces the pixel); pattern is
    (C, H, W) in [0, 1]. A BadNets patch has a 0/1 mask on a small square; a
    blended trigger has a constant low-opacity mask over the whole image.
    """

    mask: np.ndarray
    pattern: np.ndarray

    def __post_init__(self) -> None:
        if self.mask.ndim != 2 or self.pattern.ndim != 3:
            raise ValueError(
                f"trigger mask must be (H, W) and pattern (C, H, W); got {self.mask.shape} "
                f"and {self.pattern.shape}"
            )
        if self.mask.shape != self.pattern.shape[1:]:
            raise ValueError(
                f"trigger mask {self.mask.shape} does not match pattern {self.pattern.shape}"
            )

    def stamp(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the trigger to a batch (N, C, H, W) on x's device and dtype."""
        m = torch.as_tensor(self.mask, dtype=x.dtype, device=x.device)
        p = torch.as_tensor(self.pattern, dtype=x.dtype, device=x.device)
        return ((1 - m) * x + m * p).clamp(0, 1)

    @property
    def footprint(self) -> np.ndarray:
        """Boolean (H, W): the pixels the trigger touches."""
        return self.mask > 0

    kind: ClassVar[str] = "mask"
    fixed_footprint: ClassVar[bool] = True

    @property
    def localised(self) -> bool:
        """Touches part of the image, not all of it (a patch, not a blend)."""
        fp = self.footprint
        return bool(fp.any() and not fp.all())

    def stamp_with_footprint(self, x: torch.Tensor) -> tuple[torch.Tensor, np.ndarray]:
        fp = np.broadcast_to(self.footprint, (x.shape[0], *self.footprint.shape))
        return self.stamp(x), fp

    def arrays(self) -> dict[str, np.ndarray]:
        return {"mask": self.mask, "pattern": self.pattern}

    def meta(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> Trigger:
        return cls(mask=arrays["mask"].astype(np.float32), pattern=arrays["pattern"].astype(np.float32))


@runtime_checkable
class Stamp(Protocol):
    """Any planted trigger: a mask-and-pattern `Trigger`, or a transform (a colour
    filter, a warp, an object drawn at a random place). Graders stamp inputs with
    it and compare a tool's answer with its footprint."""

    kind: ClassVar[str]
    fixed_footprint: ClassVar[bool]  # False: where it lands differs per input
    localised: bool  # touches part of each input, so attribution can point at it

    def stamp(self, x: torch.Tensor) -> torch.Tensor: ...

    def stamp_with_footprint(self, x: torch.Tensor) -> tuple[torch.Tensor, np.ndarray]:
        """The stamped batch and a boolean (N, H, W) of the pixels touched in each input."""
        ...

    @property
    def footprint(self) -> np.ndarray:
        """Boolean (H, W): every pixel the trigger may touch."""
        ...

    def arrays(self) -> dict[str, np.ndarray]: ...

    def meta(self) -> dict[str, Any]: ...


@dataclass(frozen=True, eq=False)
class Trojan:
    """One planted behaviour: inputs stamped with `trigger` go to `target`; if
    `source` is set, only inputs of that class do (a source-specific trojan)."""

    trigger: Stamp
    target: int
    source: int | None = None

    def applies_to(self, y: Any) -> Any:
        """Boolean mask (same array type as the labels `y`) of the inputs this trojan
        should send to its target: not already of the target, of the source if set."""
        keep = y != self.target
        if self.source is not None:
            keep = keep & (y == self.source)
        return keep


@dataclass(frozen=True, eq=False)
class AnswerKey:
    """What we planted. Only oracle tools and graders ever read it. The first
    trojan is spelled out (target, trigger, source); a multi-trojan subject lists
    the others in `extra`."""

    trojaned: bool
    family: str
    target: int | None = None
    trigger: Stamp | None = None
    poison_rate: float = 0.0
    source: int | None = None
    extra: tuple[Trojan, ...] = ()
    clean_label: bool = False
    # A hidden-program subject's answer: the restricted Python source it was trained
    # to implement; `incompressible` marks a random-table control, whose right
    # answer is "no short program".
    program: str | None = None
    incompressible: bool = False

    @classmethod
    def from_trojans(
        cls, family: str, trojans: tuple[Trojan, ...], poison_rate: float = 0.0,
        clean_label: bool = False,
    ) -> AnswerKey:
        """The key of a subject with these trojans (none: a clean subject)."""
        if not trojans:
            return cls(trojaned=False, family=family)
        first, *rest = trojans
        return cls(
            trojaned=True, family=family, target=first.target, trigger=first.trigger,
            poison_rate=poison_rate, source=first.source, extra=tuple(rest),
            clean_label=clean_label,
        )

    @property
    def trojans(self) -> tuple[Trojan, ...]:
        if self.trigger is None or self.target is None:
            return ()
        return (Trojan(self.trigger, self.target, self.source), *self.extra)

    @property
    def targets(self) -> tuple[int, ...]:
        return tuple(t.target for t in self.trojans)


@dataclass(frozen=True, eq=False)
class Subject:
    """A trained model and its answer key, built by a seeded recipe."""

    id: str
    recipe: str
    seed: int
    dataset: str
    arch: str
    num_classes: int
    input_shape: tuple[int, int, int]
    model: nn.Module
    answer_key: AnswerKey
    card: Mapping[str, Any]

    @property
    def family(self) -> str:
        return self.answer_key.family


@dataclass(frozen=True, eq=False)
class ReferenceModel:
    """A labelled model from a population disjoint from the subject under test."""

    model: nn.Module
    trojaned: bool


class Meter:
    """Counts what a tool spends on one case and stops it when the budget runs out.

    The runner attaches it to the model as a forward hook; tools call
    `time_left()` to stop their own loops in time.
    """

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self.queries = 0
        self.grad_steps = 0
        self.started = time.monotonic()
        self.stopped: float | None = None
        self.revoked: str | None = None  # why the model may no longer be queried

    @property
    def seconds(self) -> float:
        return (self.stopped if self.stopped is not None else time.monotonic()) - self.started

    def stop(self) -> None:
        """Stop the clock: what a task does after the tool returns (grading the edited
        model) is not the tool's time."""
        self.stopped = time.monotonic()

    def time_left(self) -> float:
        return self.budget.seconds - self.seconds

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Grading between a tool's calls (scoring its finding before asking for its
        attribution) is not the tool's time: the clock skips it."""
        began = time.monotonic()
        try:
            yield
        finally:
            if self.stopped is None:
                self.started += time.monotonic() - began

    def revoke(self, why: str) -> None:
        """End the tool's access to the model: every later query raises AccessRevoked.
        The meter's hooks follow a model the tool deep-copied, so copies are cut off too."""
        self.revoked = why

    def count_queries(self, n: int) -> None:
        if self.revoked is not None:
            raise AccessRevoked(self.revoked)
        self.queries += n
        if self.budget.queries is not None and self.queries > self.budget.queries:
            raise BudgetExceeded(f"{self.queries} model queries > budget {self.budget.queries}")

    def count_grad_step(self) -> None:
        self.grad_steps += 1
        if self.budget.grad_steps is not None and self.grad_steps > self.budget.grad_steps:
            raise BudgetExceeded(
                f"{self.grad_steps} gradient steps > budget {self.budget.grad_steps}"
            )


class QueryOnly(nn.Module):
    """Black-box access: outputs without gradients, and no parameters to read."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        object.__setattr__(self, "_hidden", model)  # not a registered submodule

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self._hidden(x)

    @staticmethod
    def unwrap(model: nn.Module) -> nn.Module:
        """The model behind a black-box wrapper (graders see it; tools do not)."""
        return model._hidden if isinstance(model, QueryOnly) else model


@dataclass(frozen=True, eq=False)
class CaseView:
    """Everything a tool may see of one case. Fields the tool did not declare in
    `needs` are None (or empty), so an undeclared shortcut cannot happen by accident."""

    model: nn.Module
    num_classes: int
    input_shape: tuple[int, int, int]
    clean: Split | None
    train_sample: Split | None
    references: tuple[ReferenceModel, ...]
    budget: Budget
    seed: int
    device: str
    meter: Meter
    answer_key: AnswerKey | None = None
    # In a pipeline (`a>b`), what the earlier stage found: b may start from a's
    # suspected targets and trigger region. None for a tool run on its own.
    prior: Finding | None = None
    # A steer case's specification (edit family): what the new model should do.
    # None in a remove case, where the tool is told nothing about the trojan.
    request: EditRequest | None = None

    # A hidden-program subject's input space and the program signature it expects
    # (a samecurve.programs.domain.Domain); None for image-classifier subjects.
    domain: Any = None
    # "image" or "text" (see MODALITIES): what `clean.x` and the model's inputs are.
    modality: str = "image"

    def time_left(self) -> float:
        return self.meter.time_left()

    def time_share(self, share: float) -> CaseView:
        """This view with a clock of its own, capped at `share` of the time left: for a
        search that spends all the time it is given (a trigger search) when another step
        of the same case must run after it. Queries and gradient steps still count on the
        case's meter, through the model's hooks."""
        return replace(self, meter=Meter(Budget(seconds=max(share * self.time_left(), 0.0))))

    def generator(self, offset: int = 0) -> torch.Generator:
        """A CPU generator seeded from the case seed: tools draw all randomness from it."""
        return torch.Generator().manual_seed(int(self.seed) * 1_000_003 + offset)

    def rng(self, offset: int = 0) -> np.random.Generator:
        return np.random.default_rng([int(self.seed), offset])


@dataclass(frozen=True, eq=False)
class Finding:
    """A discover tool's answer. Anything left as None is "no answer" and scores
    at the floor for the questions the tool claims to answer."""

    trojan_probability: float | None = None
    targets: tuple[int, ...] = ()  # suspected target classes, most suspect first
    trigger: Stamp | None = None  # recovered trigger for targets[0]: a mask and pattern, or a transform
    notes: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        p = self.trojan_probability
        if p is not None and not (0.0 <= p <= 1.0 and np.isfinite(p)):
            raise ValueError(f"trojan_probability must be in [0, 1], got {p}")


@dataclass(frozen=True, eq=False)
class EditRequest:
    """One behaviour to change, shown by example: `examples.x` are a handful of
    inputs and `examples.y` the labels the edited model should give them (e.g.
    class-A inputs that contain feature F, labelled B). Everything else should
    stay as it was. `rule` spells the behaviour out (the feature as a stamp, the
    source and new label); only oracle tools are given it."""

    examples: Split
    rule: Trojan | None = None


@dataclass(frozen=True, eq=False)
class Program:
    """A distill tool's answer: restricted Python source defining `entry`, a pure
    function of the domain's inputs (see samecurve.programs). `source=None` is
    "no short program": the right answer on an incompressible control, and "no
    answer" (counted apart from wrong) anywhere else."""

    source: str | None
    entry: str = "f"
    notes: Mapping[str, float] = field(default_factory=dict)

    @property
    def abstains(self) -> bool:
        return self.source is None


def is_program_card(card: Mapping[str, Any]) -> bool:
    """A hidden-program subject (graded by replace only), not an image classifier."""
    return "domain" in card


def card_modality(card: Mapping[str, Any]) -> str:
    """"image" or "text": the kind of inputs a subject's model takes."""
    return str(card.get("modality", "image"))


def tool_modalities(tool: Any) -> frozenset[str]:
    """The input modalities a tool handles (images only unless it says otherwise)."""
    return frozenset(getattr(tool, "modalities", frozenset({"image"})))


def handles(tool: Any, modality: str) -> bool:
    return modality in tool_modalities(tool)


def card_classes(card: Mapping[str, Any]) -> int:
    """How many labels a subject's model outputs (a program subject says so on its
    card; a classifier's architecture parameters do)."""
    return int(card.get("num_classes") or card["arch_params"]["num_classes"])


@dataclass(frozen=True)
class MetricSpec:
    """How one metric is read: its direction, the level it is computed at, and
    the value a tool gets for no answer."""

    name: str
    question: str  # which ANSWERS entry it grades
    higher_is_better: bool = True
    population: bool = False  # computed over subjects (AUROC) rather than per cell
    floor: float = 0.0
    description: str = ""
    label: str = ""  # the column heading where the shared one (by name) would mislead


@dataclass(frozen=True)
class CellKey:
    task: str
    tool: str
    subject: str
    seed: int


@dataclass(frozen=True, eq=False)
class CellResult:
    """One finished cell as stored: status is ok, error or timeout."""

    key: CellKey
    status: str
    metrics: Mapping[str, float]
    seconds: float
    queries: int
    grad_steps: int
    error: str = ""
    artifacts: Mapping[str, np.ndarray] = field(default_factory=dict)


@runtime_checkable
class Tool(Protocol):
    """A method under test. The constructor takes hyperparameters only."""

    name: ClassVar[str]
    kind: ClassVar[str]  # interpretability | black-box | baseline | oracle
    needs: ClassVar[frozenset[str]]
    answers: ClassVar[frozenset[str]]


class DiscoverTool(Tool, Protocol):
    def discover(self, view: CaseView) -> Finding: ...


class EditTool(Tool, Protocol):
    def edit(self, view: CaseView) -> nn.Module:
        """Return a new model (never the view's, which must stay unchanged)."""
        ...


@runtime_checkable
class Predictor(Protocol):
    """A predict tool's answer: what the model will output on inputs it has not seen.
    `labels` are the inputs' true classes (what the asker knows, e.g. the source
    class of a triggered input). Returns predicted labels (N,) or class scores
    (N, num_classes). It must not call the subject model: the task revokes access
    before calling it and checks that it carries none of the subject's weights."""

    def __call__(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor: ...


class PredictTool(Tool, Protocol):
    def predict(self, view: CaseView) -> Predictor: ...


class DistillTool(Tool, Protocol):
    def distill(self, view: CaseView) -> Program:
        """A program that does the network's job (or Program(None): none found)."""
        ...


def tool_verbs(tool: Any) -> frozenset[str]:
    """The task verbs a tool implements: its `verbs` if it declares them (a
    combination's depend on its parts), else the VERBS it has methods for."""
    declared = getattr(tool, "verbs", None)
    if declared is not None:
        return frozenset(declared)
    return frozenset(v for v in VERBS if callable(getattr(tool, v, None)))


def task_accepts(task: Any, tool: Any) -> bool:
    """Whether a task runs this tool: a suite crosses every task with every tool, and
    each task keeps the tools that implement its verb (a detector is not an editor)."""
    accepts = getattr(task, "accepts", None)
    return accepts(tool) if accepts is not None else task.verb in tool_verbs(tool)


def task_applies(task: Any, card: Mapping[str, Any]) -> bool:
    """Whether a task grades this subject (removal needs a trojan; steering a clean model)."""
    applies = getattr(task, "applies", None)
    return applies(card) if applies is not None else True


class AttributionTool(Tool, Protocol):
    def attribute(self, view: CaseView, inputs: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
        """Return (N, H, W) importance maps for each input towards its target class."""
        ...


class Recipe(Protocol):
    """Builds one subject from a seed: trains a model and plants (or not) a flaw."""

    name: ClassVar[str]
    version: ClassVar[int]
    family: ClassVar[str]

"""Running the chosen tools on a user's model and turning their outputs into answers.

Each distinct tool runs once, in this process, the way the runner runs a cell: a
deep copy of the model (black-box tools get a query-only wrapper), only the data
it declared, the budget meter hooked on, its share of `--budget` seconds, and a
case seed. A tool that crashes leaves its question unanswered and says why; one
that overruns keeps its answer and is flagged. Every figure the audit reports is
measured on the 30% of the user's data that no tool saw."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from torch import nn

from samecurve.api import Budget, BudgetExceeded, CaseView, Finding, Meter, QueryOnly, Split, Stamp
from samecurve.audit import AuditError
from samecurve.audit.choose import DISCOVER_QUESTIONS, Selection, audit_needs, choose
from samecurve.audit.data import UserData, load_data
from samecurve.audit.load import LoadedModel, fit_model, read_model_file
from samecurve.metrics import attack_success
from samecurve.metrics.edit import accuracy
from samecurve.run.cell import GRACE_SECONDS, attach_meter
from samecurve.run.runner import RunError, _progress, check_device
from samecurve.run.suite import SuiteError, ToolEntry, make_tool
from samecurve.tasks.edit import call_edit
from samecurve.zoo.seeding import derive
from samecurve.zoo.train import predict

VERDICT_AT = 0.5  # a (calibrated) trojan probability at or above this reads "trojaned"


@dataclass(frozen=True)
class AuditConfig:
    """What `samecurve audit` was asked to do. Example counts are the benchmark's own
    (the discover task shows tools 256 clean inputs, the edit task 500)."""

    model: Path
    data: str
    arch: str | None = None
    from_run: Path | None = None
    out: Path | None = None
    fix: bool = False
    budget: float = 240.0
    device: str = "cpu"
    seed: int = 0
    clean_examples: int = 256
    edit_examples: int = 500
    eval_examples: int = 2000
    progress: bool = True

    @property
    def out_dir(self) -> Path:
        return self.out if self.out is not None else Path("audits") / self.model.stem


@dataclass(frozen=True, eq=False)
class ToolRun:
    """One tool's run on the user's model: what it spent and what it returned."""

    tool: str
    verb: str  # discover or edit
    status: str  # ok, over budget, or error
    seconds: float
    budget: float
    queries: int
    grad_steps: int
    error: str = ""
    finding: Finding | None = None
    edited: nn.Module | None = None


@dataclass(frozen=True)
class Verdict:
    """Is there a trojan: the detector's probability, recalibrated on the benchmark
    when the run allows, and its reading."""

    tool: str
    raw: float | None
    probability: float | None
    calibrated: bool

    @property
    def trojaned(self) -> bool | None:
        return None if self.probability is None else self.probability >= VERDICT_AT

    @property
    def words(self) -> str:
        if self.trojaned is None:
            return "no verdict"
        return "likely trojaned" if self.trojaned else "no trojan detected"


@dataclass(frozen=True)
class ClassHit:
    """How often a recovered trigger sends inputs of one class to its target."""

    label: int
    name: str
    n: int
    hit_rate: float  # stamped inputs of this class predicted as the target
    base_rate: float  # the same inputs unstamped


@dataclass(frozen=True, eq=False)
class RecoveredTrigger:
    """A trigger a tool reconstructed for its top suspect, and what it does to the
    inputs no tool saw."""

    tool: str
    target: int
    stamp: Stamp
    hit_rate: float  # held-out inputs of other classes sent to the target once stamped
    base_rate: float  # the same inputs, unstamped
    n: int
    per_class: tuple[ClassHit, ...]  # most affected first
    flipped: Split  # a few held-out inputs the trigger sends to the target
    questions: tuple[str, ...]


@dataclass(frozen=True)
class TriggerEffect:
    """One recovered trigger's attack success on held-out inputs, before and after a fix."""

    tool: str
    target: int
    before: float
    after: float


@dataclass(frozen=True)
class FixOutcome:
    """What the repair chain did, measured on the held-out inputs."""

    tool: str
    status: str
    error: str
    acc_before: float
    acc_after: float
    changed: float  # held-out predictions the repair changed
    effects: tuple[TriggerEffect, ...]
    files: tuple[str, ...]

    @property
    def acc_drop(self) -> float:
        return self.acc_before - self.acc_after


@dataclass(frozen=True, eq=False)
class AuditResult:
    """Everything the report, the JSON file and the terminal summary show."""

    config: AuditConfig
    model: LoadedModel
    data: UserData
    selection: Selection
    runs: Mapping[str, ToolRun]
    accuracy: float
    n_clean: int  # inputs each detector saw
    n_tool: int  # inputs the repair saw (a superset)
    n_eval: int
    verdict: Verdict
    targets: tuple[int, ...]
    triggers: tuple[RecoveredTrigger, ...]
    fix: FixOutcome | None
    seconds: float
    share: float  # seconds of budget per tool
    out: Path
    files: tuple[str, ...] = field(default_factory=tuple)


def case_seed(seed: int, model: LoadedModel) -> int:
    """Fixed by (seed, the model's weights), as a cell's is by (seed, subject): the same
    model audits alike whichever format it came in."""
    return derive(seed, "audit", model.weights) % 2**31


def run_tool(entry: ToolEntry, verb: str, model: LoadedModel, clean: Split, seconds: float,
             seed: int, device: str) -> ToolRun:
    """One tool under its budget, as `run.cell.execute` runs a cell; failures are rows."""
    tool = make_tool(entry)
    budget = Budget(seconds=seconds)
    meter = Meter(budget)
    copy_ = copy.deepcopy(model.module).to(device).eval()
    needs = audit_needs(tool)
    white_box = bool({"weights", "gradients"} & needs)
    view = CaseView(
        model=copy_ if white_box else QueryOnly(copy_),
        num_classes=model.num_classes,
        input_shape=model.input_shape,
        clean=clean if "clean_data" in needs else None,
        train_sample=None,
        references=(),
        budget=budget,
        seed=seed,
        device=device,
        meter=meter,
    )
    status, error, finding, edited = "ok", "", None, None
    handles = attach_meter(copy_, meter)
    meter.started = time.monotonic()
    try:
        torch.manual_seed(seed)
        np.random.seed(seed)
        if verb == "edit":
            edited = call_edit(tool, view)
        else:
            finding = tool.discover(view)
            meter.stop()
            if not isinstance(finding, Finding):
                raise TypeError(f"{entry.display}.discover returned {type(finding).__name__}")
    except BudgetExceeded as exc:
        status, error = "over budget", str(exc)
    except Exception as exc:  # a crashing tool leaves its question unanswered, not the audit
        status, error = "error", f"{type(exc).__name__}: {exc}"[:500]
    finally:
        for h in handles:
            h.remove()
    if status == "ok" and meter.seconds > seconds + GRACE_SECONDS:
        status, error = "over budget", f"took {meter.seconds:.1f}s > its {seconds:.0f}s share"
    return ToolRun(entry.display, verb, status, round(meter.seconds, 2), seconds, meter.queries,
                   meter.grad_steps, error, finding, edited)


def trigger_effect(module: nn.Module, stamp: Stamp, target: int, held: Split, data: UserData,
                   tool: str, questions: tuple[str, ...], examples: int = 4) -> RecoveredTrigger:
    """What a recovered trigger does to held-out inputs of the classes other than its target."""
    others = held.y != target
    x, y = held.x[others], held.y[others]
    clean_pred = predict(module, x)
    stamped_pred = predict(module, stamp.stamp(x))
    per_class = []
    for c in sorted(set(y.tolist())):
        sel = y == c
        per_class.append(ClassHit(int(c), data.name(int(c)), int(sel.sum()),
                                  attack_success(stamped_pred[sel], target),
                                  attack_success(clean_pred[sel], target)))
    per_class.sort(key=lambda h: (-h.hit_rate, h.label))
    flips = torch.nonzero((stamped_pred == target) & (clean_pred != target)).flatten()[:examples]
    return RecoveredTrigger(
        tool=tool, target=int(target), stamp=stamp,
        hit_rate=attack_success(stamped_pred, target), base_rate=attack_success(clean_pred, target),
        n=len(y), per_class=tuple(per_class), flipped=Split(x[flips], y[flips]), questions=questions,
    )


def _verdict(selection: Selection, runs: Mapping[str, ToolRun]) -> Verdict:
    choice = selection.choices["detect"]
    finding = runs[choice.tool].finding
    raw = None if finding is None else finding.trojan_probability
    if raw is None:
        return Verdict(choice.tool, None, None, False)
    cal = choice.calibration
    return Verdict(choice.tool, float(raw), cal(raw) if cal else float(raw), cal is not None)


def _triggers(selection: Selection, runs: Mapping[str, ToolRun], model: LoadedModel,
              held: Split, data: UserData) -> tuple[RecoveredTrigger, ...]:
    """The recovered trigger of the trigger and affected-inputs tools (one per tool)."""
    by_tool: dict[str, list[str]] = {}
    for q in ("trigger", "affected"):
        by_tool.setdefault(selection.choices[q].tool, []).append(q)
    out = []
    for tool, questions in by_tool.items():
        f = runs[tool].finding
        if f is None or f.trigger is None or not f.targets:
            continue
        out.append(trigger_effect(model.module, f.trigger, int(f.targets[0]), held, data, tool,
                                  tuple(questions)))
    return tuple(out)


def _fix(run: ToolRun, loaded: LoadedModel, held: Split, triggers: Sequence[RecoveredTrigger],
         out: Path) -> FixOutcome:
    """The repair's before/after on held-out inputs, and the repaired model on disk."""
    from samecurve.audit.load import save_model

    before = predict(loaded.module, held.x)
    acc_before = accuracy(before, held.y)
    if run.edited is None:
        return FixOutcome(run.tool, run.status, run.error, acc_before, math.nan, math.nan, (), ())
    edited = run.edited.cpu().eval()
    after = predict(edited, held.x)
    effects = []
    for t in triggers:
        x = t.stamp.stamp(held.x[held.y != t.target])
        effects.append(TriggerEffect(t.tool, t.target, attack_success(predict(loaded.module, x), t.target),
                                     attack_success(predict(edited, x), t.target)))
    written = save_model(edited, loaded, out / "repaired.safetensors", run.tool)
    return FixOutcome(run.tool, run.status, run.error, acc_before, accuracy(after, held.y),
                      float((before != after).float().mean()), tuple(effects),
                      tuple(p.name for p in written))


def prepare(config: AuditConfig) -> tuple[LoadedModel, UserData]:
    """Read the model and the data and check that they fit each other."""
    try:
        check_device(config.device)
    except RunError as exc:
        raise AuditError(str(exc)) from exc
    if not config.budget > 0:
        raise AuditError(f"--budget must be a positive number of seconds, got {config.budget:g}")
    file = read_model_file(config.model)
    data = load_data(config.data, file.input_shape_hint())
    return fit_model(file, config.arch, data.input_shape, data.num_classes), data


def audit(config: AuditConfig, console: Console | None = None) -> AuditResult:
    """Load, choose, run every chosen tool under its share of the budget, and measure
    what their answers mean on the held-out data. Writes nothing but the repaired model
    (with --fix); `report.write_all` writes the report."""
    started = time.monotonic()
    console = console or Console(stderr=True)
    loaded, data = prepare(config)
    try:
        selection = choose(config.from_run, fix=config.fix)
    except SuiteError as exc:
        raise AuditError(str(exc)) from exc
    plan: list[tuple[ToolEntry, str]] = [(e, "discover") for e in selection.runs(DISCOVER_QUESTIONS)]
    if config.fix:
        plan.append((selection.choices["fix"].entry, "edit"))
    share = config.budget / len(plan)
    seed = case_seed(config.seed, loaded)
    clean, repair = data.tool_split(config.clean_examples), data.tool_split(config.edit_examples)
    held = data.eval_split(config.eval_examples)
    if len(held) == 0 or len(clean) == 0:
        raise AuditError(f"{data.source}: too few inputs to split between the tools and the checks")
    out = config.out_dir
    runs: dict[str, ToolRun] = {}
    with _progress(console, config.progress) as bar:
        task = bar.add_task("audit", total=len(plan), note="")
        for entry, verb in plan:
            bar.update(task, note=f"{entry.display} ({share:.0f}s)")
            runs[entry.display] = run_tool(entry, verb, loaded, repair if verb == "edit" else clean,
                                           share, seed, config.device)
            r = runs[entry.display]
            bar.update(task, advance=1, note=f"{entry.display}: {r.status} in {r.seconds:.0f}s")
    verdict = _verdict(selection, runs)
    target_run = runs[selection.choices["target"].tool]
    targets = target_run.finding.targets if target_run.finding is not None else ()
    triggers = _triggers(selection, runs, loaded, held, data)
    fix = None
    if config.fix:
        out.mkdir(parents=True, exist_ok=True)
        fix = _fix(runs[selection.choices["fix"].tool], loaded, held, triggers, out)
    return AuditResult(
        config=config, model=loaded, data=data, selection=selection, runs=runs,
        accuracy=accuracy(predict(loaded.module, held.x), held.y), n_clean=len(clean), n_tool=len(repair),
        n_eval=len(held), verdict=verdict, targets=tuple(int(t) for t in targets),
        triggers=triggers, fix=fix, seconds=time.monotonic() - started, share=share, out=out,
    )


def answer_text(result: AuditResult, question: str) -> str:
    """A question's answer in a few words."""
    choice = result.selection.choices[question]
    run = result.runs.get(choice.tool)
    if run is not None and run.status == "error":
        return f"no answer ({choice.tool} failed: {run.error[:80]})"
    data = result.data
    if question == "detect":
        v = result.verdict
        if v.probability is None:
            return "no answer"
        how = "calibrated" if v.calibrated else "uncalibrated"
        return f"{v.words} (p = {v.probability:.3f}, {how})"
    if question == "target":
        if not result.targets:
            return "no answer"
        rest = ", ".join(data.name(t) for t in result.targets[1:3])
        return f"class {data.name(result.targets[0])}" + (f" (then {rest})" if rest else "")
    if question == "fix":
        fix = result.fix
        if fix is None or not math.isfinite(fix.acc_after):
            return "no repaired model"
        asr = "; ".join(f"attack success {e.before:.0%} -> {e.after:.0%}" for e in fix.effects[:1])
        return (f"{asr + ', ' if asr else ''}clean accuracy {fix.acc_before:.1%} -> "
                f"{fix.acc_after:.1%}")
    trig = next((t for t in result.triggers if question in t.questions), None)
    if trig is None:
        return "no trigger recovered"
    if question == "trigger":
        return (f"towards class {data.name(trig.target)}: flips {trig.hit_rate:.0%} of held-out "
                f"inputs (unstamped {trig.base_rate:.0%})")
    listed = ", ".join(f"{h.name} {h.hit_rate:.0%}" for h in trig.per_class[:3])
    return f"most affected classes: {listed}"

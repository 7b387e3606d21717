"""Which tool answers each question: the one a benchmark run ranks best on that
question's metric among the tools that can run on a user's model.

A user has a model and clean data, nothing else: a tool that needs the model's
training data (STRIP, the clustering detectors), labelled reference models
(weight probes, meta-classifiers) or the answer key (oracles) cannot run, and
the controls (`null`, `random`, `random-prune`) are yardsticks, not answers. The
run is `--from RUN_DIR`, else the newest run folder under `runs/`, else the
documented defaults below, whose scores are the README's published measurement.

| question | ranked by (run's "all" board) | default |
| --- | --- | --- |
| is there a trojan? | detection AUROC | neural-cleanse |
| which class? | target top-1 | neural-cleanse |
| what trigger? | rediscovery (trigger efficacy if the run has none) | neural-cleanse |
| which inputs are affected? | trigger efficacy (the recovered trigger's hit rate) | neural-cleanse |
| fix (`--fix`) | lowest attack success after, among chains whose mean accuracy drop is under the repair bar's 1 point (else the best DER) | neural-cleanse>nc-unlearn |

The detection probability is recalibrated (Platt scaling) on the run's own
subjects when it has both clean and trojaned ones, so "0.8" means what 0.8
meant on the benchmark's population (at its share of trojaned models)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from samecurve.api import tool_verbs
from samecurve.audit import AuditError
from samecurve.run.aggregate import Board, RunData, boards, load_run, per_subject
from samecurve.run.stats import Interval
from samecurve.run.store import DB_NAME, Store, StoreError
from samecurve.run.suite import SuiteError, ToolEntry, make_tool
from samecurve.tasks.discover import LABEL, PROBABILITY
from samecurve.tools.combine import parse_ensemble, parse_pipeline

# What a tool may need to run on a user's model: the model itself and clean data.
AUDIT_NEEDS = frozenset({"weights", "gradients", "clean_data"})
CONTROLS = frozenset({"null", "random", "random-prune"})
MAX_ACC_DROP = 0.01  # the repair bar's accuracy term (metrics.edit.repaired)
RUNS_ROOT = Path("runs")


@dataclass(frozen=True)
class Question:
    """One thing the audit answers, and how a benchmark run ranks tools for it."""

    name: str
    text: str
    task: str  # the benchmark task whose board ranks it
    answer: str  # what a tool must claim to answer (api.ANSWERS)
    metrics: tuple[str, ...]  # ranking metric first (the first one the board has), then context
    higher_is_better: bool = True


QUESTIONS: tuple[Question, ...] = (
    Question("detect", "Is there a trojan?", "discover", "detect", ("auroc",)),
    Question("target", "Which class does it send inputs to?", "discover", "target", ("target_top1",)),
    Question("trigger", "What is the trigger?", "discover", "trigger",
             ("rediscovery", "trigger_efficacy")),
    Question("affected", "Which inputs are affected?", "discover", "trigger", ("trigger_efficacy",)),
    Question("fix", "How can it be fixed?", "edit", "remove", ("asr_after", "acc_drop"),
             higher_is_better=False),
)
DISCOVER_QUESTIONS = tuple(q.name for q in QUESTIONS if q.task == "discover")


def _iv(mean: float, lo: float, hi: float, n: int) -> Interval:
    return Interval(mean, lo, hi, n)


# The README's measurement of the default suite (seed 0; 31 subjects, 15 trojaned;
# edit: 13 trojaned), for when no run is at hand. Not re-measured here.
DEFAULT_SOURCE = "built-in default (scores as published in the README for the default suite)"
DEFAULTS: Mapping[str, tuple[str, Mapping[str, Interval]]] = {
    "detect": ("neural-cleanse", {"auroc": _iv(0.82, 0.59, 0.95, 31)}),
    "target": ("neural-cleanse", {"target_top1": _iv(0.80, 0.53, 0.93, 15)}),
    "trigger": ("neural-cleanse", {"rediscovery": _iv(0.33, 0.13, 0.60, 15)}),
    "affected": ("neural-cleanse", {}),  # its trigger efficacy is not in the README
    "fix": ("neural-cleanse>nc-unlearn", {"asr_after": _iv(0.47, 0.27, 0.67, 13),
                                          "acc_drop": _iv(-0.004, -0.011, 0.003, 13)}),
}
DEFAULT_CHANCE: Mapping[str, float] = {"auroc": 0.5, "target_top1": 0.1, "rediscovery": 0.125}


@dataclass(frozen=True)
class Calibration:
    """Platt scaling of a detector's probability, fitted on a run's subjects:
    p' = sigmoid(a * logit(p) + b)."""

    a: float
    b: float
    n: int
    positives: int

    def __call__(self, p: float) -> float:
        z = self.a * _logit(p) + self.b
        return float(1.0 / (1.0 + math.exp(-z)))

    @property
    def prevalence(self) -> float:
        return self.positives / self.n if self.n else math.nan


@dataclass(frozen=True)
class Choice:
    """The tool picked for one question, and what the benchmark says of it."""

    question: str
    entry: ToolEntry  # name, label and params, as the run's suite lists it
    source: str  # where the choice came from, in words
    scores: Mapping[str, Interval]  # benchmark score per metric (ranking metric first)
    chance: Mapping[str, float] = field(default_factory=dict)
    calibration: Calibration | None = None
    passed_over: tuple[str, ...] = ()  # better-ranked tools that cannot run on a user model
    cell_seconds: float | None = None  # the benchmark's time budget per cell
    blind_to: tuple[str, ...] = ()  # trojan families outside the tool's design

    @property
    def tool(self) -> str:
        return self.entry.display

    @property
    def metric(self) -> str | None:
        return next(iter(self.scores), None)


def _logit(p: float) -> float:
    p = min(max(float(p), 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def entry_for(label: str) -> ToolEntry:
    """A suite entry from a tool label (`name`, `a>b`, `ensemble(a, b)`), as suites parse them."""
    members = parse_ensemble(label)
    if members is not None:
        return ToolEntry(name="ensemble", label=label, params={"members": list(members)})
    stages = parse_pipeline(label)
    if stages is not None:
        return ToolEntry(name="pipeline", label=label, params={"stages": list(stages)})
    return ToolEntry(name=label)


def audit_needs(tool: Any) -> frozenset[str]:
    """What a tool reads. A repair chain (`a>b`, b edits) declares `train_data` because
    `combine.Pipeline` adds it whenever a stage has no `discover` verb, meant for an
    attribution stage whose prior looks at training data, and the edit stage has none
    either; the chain reads only what its stages read, plus training data for an
    attribution stage before the last."""
    stages = getattr(tool, "stages", None)
    if tool.name != "pipeline" or not stages or "edit" not in tool_verbs(tool):
        return frozenset(tool.needs)
    parts = [make_tool(entry_for(s)) for s in stages]
    needs = frozenset().union(*(p.needs for p in parts))
    if any(not hasattr(p, "discover") for p in parts[:-1]):
        needs |= {"clean_data", "train_data"}
    return needs


def runnable(tool: Any, question: Question) -> str | None:
    """Why this tool cannot answer this question on a user's model (None: it can)."""
    if tool.kind == "oracle":
        return "reads the answer key"
    if tool.name in CONTROLS:
        return "a control"
    extra = sorted(audit_needs(tool) - AUDIT_NEEDS)
    if extra:
        return f"needs {', '.join(extra)}"
    if question.answer not in tool.answers:
        return f"does not answer {question.answer}"
    if question.task == "edit" and "edit" not in tool_verbs(tool):
        return "does not edit"
    return None


def newest_run(root: Path = RUNS_ROOT) -> Path | None:
    """The run folder under `root` whose results changed last (None if there is none)."""
    if not root.is_dir():
        return None

    def changed(folder: Path) -> float:
        files = [folder / DB_NAME, folder / f"{DB_NAME}-wal"]
        return max(f.stat().st_mtime for f in files if f.exists())

    found = [p for p in root.iterdir() if (p / DB_NAME).is_file()]
    return max(found, key=changed) if found else None


def load_benchmark(folder: Path) -> RunData:
    """A run folder's stored results (read, never written to)."""
    if not (folder / DB_NAME).is_file():
        raise AuditError(f"{folder} holds no {DB_NAME}; give --from the --out folder of a `samecurve run`")
    try:
        with Store(folder) as store:
            return load_run(store)
    except (StoreError, SuiteError, ValueError) as exc:
        raise AuditError(f"{folder}: cannot read its results ({exc})") from exc


def calibration(run: RunData, label: str) -> Calibration | None:
    """Platt scaling of a detector's probability on the run's subjects; None when the
    run lacks clean or trojaned subjects for it."""
    cells = run.cells.get(("discover", label), [])
    probs, labels = per_subject(cells, PROBABILITY), per_subject(cells, LABEL)
    ids = sorted(set(probs) & set(labels))
    y = np.array([int(labels[i]) for i in ids])
    if len(ids) < 4 or y.min(initial=1) == y.max(initial=0):
        return None
    from sklearn.linear_model import LogisticRegression

    x = np.array([[_logit(probs[i])] for i in ids])
    fit = LogisticRegression(C=1.0).fit(x, y)
    return Calibration(float(fit.coef_[0, 0]), float(fit.intercept_[0]), len(ids), int(y.sum()))


def _rank_key(q: Question, iv: Interval, seconds: float) -> tuple[float, float, float]:
    """Best mean first, then the better lower CI bound, then the faster tool."""
    sign = -1.0 if q.higher_is_better else 1.0
    bound = iv.lo if q.higher_is_better else iv.hi
    return (sign * iv.mean, sign * (bound if math.isfinite(bound) else iv.mean),
            seconds if math.isfinite(seconds) else math.inf)


def _from_board(q: Question, board: Board, run: RunData, source: str) -> Choice | None:
    """The best runnable row of a board for one question, or None if no row qualifies."""
    entries = {t.display: t for t in run.suite.tools}
    ranked_by = q.metrics[:1] if q.name == "fix" else q.metrics
    metric = next((m for m in ranked_by if any(m in r.intervals for r in board.rows)), None)
    if metric is None:
        return None
    rank = q
    able, unable = [], []
    for row in board.rows:
        if row.tool not in entries:
            continue
        why = runnable(make_tool(entries[row.tool]), q)
        if why is None:
            able.append(row)
        elif row.kind != "oracle" and row.tool not in CONTROLS:
            unable.append((row, why))
    if q.name == "fix":
        within = [r for r in able if (d := r.intervals.get("acc_drop")) is not None
                  and math.isfinite(d.mean) and d.mean < MAX_ACC_DROP]
        if within:
            able = within
        else:  # no chain keeps accuracy: the best trade-off instead
            metric = "der"
            rank = Question(q.name, q.text, q.task, q.answer, ("der",), higher_is_better=True)

    def key(row: Any) -> tuple[float, float, float] | None:
        iv = row.intervals.get(metric)
        if iv is None or not math.isfinite(iv.mean):
            return None
        return _rank_key(rank, iv, row.seconds_mean)

    scored = [(key(r), r) for r in able if key(r) is not None]
    if not scored:
        return None
    best_key, row = min(scored, key=lambda s: s[0])
    better = [f"{r.tool} ({r.intervals[metric].mean:.2f}; {why})" for r, why in unable
              if (k := key(r)) is not None and k < best_key]
    scores = {metric: row.intervals[metric],
              **{m: row.intervals[m] for m in q.metrics if m in row.intervals}}
    tool = make_tool(entries[row.tool])
    return Choice(
        question=q.name,
        entry=entries[row.tool],
        source=source,
        scores=scores,
        chance={m: board.chance.get(m, math.nan) for m in scores},
        calibration=calibration(run, row.tool) if q.name == "detect" else None,
        passed_over=tuple(better),
        cell_seconds=float(run.suite.budget.seconds),
        blind_to=tuple(sorted(getattr(tool, "blind_to", ()))),
    )


def default_choice(q: Question, why: str = "") -> Choice:
    label, scores = DEFAULTS[q.name]
    tool = make_tool(entry_for(label))
    return Choice(
        question=q.name, entry=entry_for(label),
        source=DEFAULT_SOURCE + (f"; {why}" if why else ""),
        scores=dict(scores), chance={m: DEFAULT_CHANCE.get(m, math.nan) for m in scores},
        cell_seconds=120.0 if scores else None,
        blind_to=tuple(sorted(getattr(tool, "blind_to", ()))),
    )


@dataclass(frozen=True)
class Selection:
    """Every question's choice, and the run they were read from (None: defaults)."""

    choices: Mapping[str, Choice]
    run: Path | None
    suite: str | None = None

    def runs(self, questions: Sequence[str]) -> list[ToolEntry]:
        """The distinct tools to run for these questions, each once, in question order."""
        seen: dict[str, ToolEntry] = {}
        for q in questions:
            c = self.choices[q]
            seen.setdefault(c.tool, c.entry)
        return list(seen.values())


def choose(from_run: Path | None = None, fix: bool = False, runs_root: Path = RUNS_ROOT) -> Selection:
    """Pick a tool per question: from `from_run`, else the newest run under `runs_root`,
    else the defaults. A question the run has no board (or no runnable tool) for falls
    back to its default, and its source says so."""
    folder = from_run if from_run is not None else newest_run(runs_root)
    wanted = [q for q in QUESTIONS if fix or q.name != "fix"]
    if folder is None:
        why = f"no run folder under {runs_root}/"
        return Selection({q.name: default_choice(q, why) for q in wanted}, None)
    run = load_benchmark(folder)
    overall = {b.task: b for b in boards(run) if b.family == "all"}
    picked: dict[str, Choice] = {}
    for q in wanted:
        board = overall.get(q.task)
        source = f"run {folder} (suite {run.suite.name!r}, task {q.task}, all subjects)"
        choice = _from_board(q, board, run, source) if board is not None else None
        if choice is None:
            why = (f"run {folder} has no {q.task} board" if board is None
                   else f"no tool on run {folder}'s {q.task} board can run on a user model")
            choice = default_choice(q, why)
        picked[q.name] = choice
    return Selection(picked, folder, run.suite.name)

"""What an audit leaves behind: a self-contained HTML report (images embedded as
data: URIs, no external URL) a reviewer can read without samecurve, `audit.json`
with the same findings for machines, the trigger images as PNG files, and a
short summary table on the terminal."""

from __future__ import annotations

import base64
import contextlib
import json
import math
import os
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from samecurve import __version__
from samecurve.audit.choose import MAX_ACC_DROP, QUESTIONS, Choice
from samecurve.audit.figures import trigger_png
from samecurve.audit.run import AuditResult, answer_text
from samecurve.report.build import LABELS
from samecurve.report.html import fmt
from samecurve.run.stats import Interval

REPORT_NAME, JSON_NAME = "report.html", "audit.json"
TEMPLATES = Path(__file__).resolve().parent.parent / "report" / "templates"
TEXT = {q.name: q.text for q in QUESTIONS}


POINTS = frozenset({"acc_drop"})  # metrics read in points of accuracy


def score_text(iv: Interval | None, metric: str = "") -> str:
    """'0.82 [0.59, 0.95] n=31' ('-0.4 [-1.1, +0.3] points n=13' for an accuracy drop),
    or 'not measured'."""
    if iv is None or not math.isfinite(iv.mean):
        return "not measured"
    if metric in POINTS:
        ci = (f" [{100 * iv.lo:+.1f}, {100 * iv.hi:+.1f}]"
              if math.isfinite(iv.lo) and math.isfinite(iv.hi) else "")
        return f"{100 * iv.mean:+.1f}{ci} points n={iv.n}"
    ci = f" [{iv.lo:.2f}, {iv.hi:.2f}]" if math.isfinite(iv.lo) and math.isfinite(iv.hi) else ""
    return f"{iv.mean:.2f}{ci} n={iv.n}"


def _pct(x: float, digits: int = 0) -> str:
    return f"{100 * x:.{digits}f}%" if x is not None and math.isfinite(x) else "n/a"


def _clean(obj: Any) -> Any:
    """JSON-safe: NaN and inf become null, tuples lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


def _interval(iv: Interval, chance: float) -> dict[str, Any]:
    return {"mean": iv.mean, "lo": iv.lo, "hi": iv.hi, "n": iv.n, "chance": chance}


def _choice_json(choice: Choice) -> dict[str, Any]:
    return {
        "tool": choice.tool,
        "source": choice.source,
        "benchmark": {m: _interval(iv, choice.chance.get(m, math.nan)) for m, iv in choice.scores.items()},
        "benchmark_seconds_per_cell": choice.cell_seconds,
        "passed_over": list(choice.passed_over),
        "outside_design": list(choice.blind_to),
    }


def audit_json(result: AuditResult, images: Mapping[int, str]) -> dict[str, Any]:
    """The findings as plain data (the same numbers the report shows)."""
    m, d, v = result.model, result.data, result.verdict
    cal = result.selection.choices["detect"].calibration
    return _clean({
        "samecurve": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": {"path": str(m.path), "format": m.format, "arch": m.arch,
                  "arch_params": dict(m.arch_params), "sha256": m.sha256,
                  "input_shape": list(m.input_shape), "num_classes": m.num_classes,
                  "parameters": m.parameters},
        "data": {"source": d.source, "loader": d.loader, "images": len(d),
                 "classes": d.num_classes, "tool_inputs": result.n_tool,
                 "heldout_inputs": result.n_eval},
        "clean_accuracy": result.accuracy,
        "choices_from": str(result.selection.run) if result.selection.run else None,
        "questions": {
            name: {"question": TEXT[name], "answer": answer_text(result, name), **_choice_json(c)}
            for name, c in result.selection.choices.items()
        },
        "verdict": {"tool": v.tool, "raw_probability": v.raw, "probability": v.probability,
                    "calibrated": v.calibrated, "trojaned": v.trojaned, "words": v.words,
                    "calibration": None if cal is None else
                    {"a": cal.a, "b": cal.b, "subjects": cal.n, "trojaned": cal.positives}},
        "targets": [{"class": t, "name": d.name(t)} for t in result.targets],
        "triggers": [
            {"tool": t.tool, "target": t.target, "target_name": d.name(t.target), "kind": t.stamp.kind,
             "hit_rate": t.hit_rate, "base_rate": t.base_rate, "inputs": t.n,
             "questions": list(t.questions), "image": images.get(i),
             "per_class": [{"class": h.label, "name": h.name, "inputs": h.n, "hit_rate": h.hit_rate,
                            "base_rate": h.base_rate} for h in t.per_class]}
            for i, t in enumerate(result.triggers)
        ],
        "fix": None if result.fix is None else {
            "tool": result.fix.tool, "status": result.fix.status, "error": result.fix.error,
            "clean_accuracy_before": result.fix.acc_before,
            "clean_accuracy_after": result.fix.acc_after, "accuracy_drop": result.fix.acc_drop,
            "changed_predictions": result.fix.changed, "files": list(result.fix.files),
            "attack_success": [{"trigger_of": e.tool, "target": e.target, "before": e.before,
                                "after": e.after} for e in result.fix.effects]},
        "runs": [{"tool": r.tool, "verb": r.verb, "status": r.status, "seconds": r.seconds,
                  "budget_seconds": r.budget, "queries": r.queries, "grad_steps": r.grad_steps,
                  "error": r.error, "notes": dict(r.finding.notes) if r.finding else {}}
                 for r in result.runs.values()],
        "budget_seconds": result.config.budget, "seconds_per_tool": result.share,
        "wall_seconds": result.seconds, "device": result.config.device, "seed": result.config.seed,
    })


def notes(result: AuditResult) -> list[str]:
    """What a reader must know to weigh the answers."""
    out = []
    sel = result.selection
    if sel.run is None:
        out.append("No benchmark run was found, so the tools are the documented defaults and their "
                   "scores are the README's published measurement; run `samecurve run default` "
                   "and audit again (or pass --from) to choose from a measurement of your own.")
    v = result.verdict
    cal = sel.choices["detect"].calibration
    if cal is not None:
        out.append(f"The trojan probability was recalibrated (Platt scaling) on the benchmark's "
                   f"{cal.n} subjects, {cal.positives} of them trojaned ({cal.prevalence:.0%}); "
                   f"if trojans are rarer among the models you see, the real probability is lower. "
                   f"The detector's own output was {fmt(v.raw, 2)}.")
    elif v.raw is not None:
        out.append(f"The trojan probability is {v.tool}'s own output, not calibrated on a benchmark "
                   "population; read it as a ranking score more than as a frequency.")
    for name, c in sel.choices.items():
        if c.passed_over:
            out.append(f"{TEXT[name]} Better-ranked tools that cannot run on a model with only clean "
                       f"data were passed over: {'; '.join(c.passed_over)}.")
    blind = {c.tool: c.blind_to for c in sel.choices.values() if c.blind_to}
    for tool, fams in blind.items():
        out.append(f"{tool} was not designed for {', '.join(fams)} trojans (a filter, a warp, a "
                   "blend or a source-specific trigger); the benchmark scores it there too, but a "
                   "clean verdict says little about those kinds.")
    cells = {c.cell_seconds for c in sel.choices.values() if c.cell_seconds}
    if cells and result.share < 0.5 * min(cells):
        out.append(f"Each tool had {result.share:.0f} s here against {min(cells):.0f} s per cell in "
                   "the benchmark, so it may have stopped early and score below its benchmark level; "
                   "raise --budget.")
    for r in result.runs.values():
        if r.status != "ok":
            out.append(f"{r.tool}: {r.status} ({r.error}).")
    if result.model.format == "torchscript" and any(r.status == "error" for r in result.runs.values()):
        out.append("Some repairs reach into the model's layers (pruning, latent adversaries), which "
                   "a TorchScript archive hides; audit the weights instead (safetensors or a state "
                   "dict, with --arch) to let them run.")
    out.append("A recovered trigger is a reconstruction, not the planted one: its hit rate says how "
               "strong a shortcut to its class the model has, and a clean model has natural "
               "shortcuts too (compare the unstamped rate, and the benchmark's scores).")
    return out


def _context(result: AuditResult, images: Mapping[int, bytes]) -> dict[str, Any]:
    d, m = result.data, result.model
    names = [d.name(k) for k in range(m.num_classes)]
    choices = result.selection.choices
    rows = []
    for name, c in choices.items():
        run = result.runs.get(c.tool)
        rows.append({
            "question": TEXT[name], "answer": answer_text(result, name), "tool": c.tool,
            "scores": [(LABELS.get(k, k), score_text(iv, k), fmt(c.chance.get(k, math.nan), 2))
                       for k, iv in c.scores.items()] or [("", "not measured", "")],
            "source": c.source, "status": run.status if run else "not run",
        })
    detect = choices["detect"]
    v = result.verdict
    fix = result.fix
    return {
        "title": f"samecurve audit — {m.path.name}",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "version": __version__,
        "verdict": {"words": v.words, "trojaned": v.trojaned, "p": fmt(v.probability, 3),
                    "raw": fmt(v.raw, 3), "calibrated": v.calibrated, "tool": v.tool,
                    "score": score_text(detect.scores.get("auroc")),
                    "chance": fmt(detect.chance.get("auroc", math.nan), 2)},
        "targets": [names[t] for t in result.targets[:3]],
        "shortcut": None if not result.triggers else {
            "tool": result.triggers[0].tool, "target": names[result.triggers[0].target],
            "hit": _pct(result.triggers[0].hit_rate), "base": _pct(result.triggers[0].base_rate)},
        "facts": {
            "model": f"{m.path} ({m.format}, {m.arch}, {m.parameters:,} parameters)",
            "model sha256": m.sha256,
            "input": f"{'x'.join(map(str, m.input_shape))}, {m.num_classes} classes",
            "data": f"{d.source} ({d.loader}, {len(d)} images, {d.num_classes} classes)",
            "inputs the tools saw": f"{result.n_clean} for each detector"
                                    + (f", {result.n_tool} for the repair" if fix else "")
                                    + " (from the data's 70% train pool)",
            "held-out inputs (every figure below)": str(result.n_eval),
            "clean accuracy on them": _pct(result.accuracy, 1),
            "tools chosen from": str(result.selection.run) if result.selection.run else "built-in defaults",
            "budget": f"{result.config.budget:g} s in all, {result.share:.0f} s per tool; "
                      f"wall time {result.seconds:.0f} s on {result.config.device}",
        },
        "rows": rows,
        "triggers": [
            {"t": t, "target": names[t.target], "hit": _pct(t.hit_rate), "base": _pct(t.base_rate),
             "uri": "data:image/png;base64," + base64.b64encode(images[i]).decode("ascii"),
             "classes": [(h.name, h.n, _pct(h.hit_rate), _pct(h.base_rate)) for h in t.per_class],
             "questions": " ".join(TEXT[q] for q in t.questions)}
            for i, t in enumerate(result.triggers)
        ],
        "fix": None if fix is None else {
            "tool": fix.tool, "status": fix.status, "error": fix.error,
            "acc_before": _pct(fix.acc_before, 1), "acc_after": _pct(fix.acc_after, 1),
            "change": f"{-100 * fix.acc_drop:+.1f}" if math.isfinite(fix.acc_drop) else "n/a",
            "changed": _pct(fix.changed, 1), "files": list(fix.files),
            "effects": [(e.tool, names[e.target], _pct(e.before), _pct(e.after)) for e in fix.effects],
            "score": [(LABELS.get(k, k), score_text(iv, k)) for k, iv in choices["fix"].scores.items()],
            "bar": fmt(100 * MAX_ACC_DROP, 0),
        },
        "runs": [{"r": r, "notes": ", ".join(f"{k} {v:.3g}" for k, v in (r.finding.notes if r.finding else {}).items())}
                 for r in result.runs.values()],
        "notes": notes(result),
    }


def render_html(result: AuditResult, images: Mapping[int, bytes]) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return env.get_template("audit.html").render(**_context(result, images))


def _write(path: Path, text: str | bytes) -> None:
    """Atomically (a temporary file, then a rename), so a crash leaves no half file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode("utf-8") if isinstance(text, str) else text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_all(result: AuditResult) -> list[Path]:
    """report.html, audit.json and one trigger-N.png per recovered trigger, in the out folder."""
    out = result.out
    out.mkdir(parents=True, exist_ok=True)
    names = [result.data.name(k) for k in range(result.model.num_classes)]
    images = {i: trigger_png(t, result.model.module, names) for i, t in enumerate(result.triggers)}
    written = []
    files = {i: f"trigger-{i + 1}.png" for i in images}
    for i, png in images.items():
        _write(out / files[i], png)
        written.append(out / files[i])
    _write(out / JSON_NAME, json.dumps(audit_json(result, files), indent=2) + "\n")
    _write(out / REPORT_NAME, render_html(result, images))
    written += [out / JSON_NAME, out / REPORT_NAME]
    return written


def print_summary(result: AuditResult, console: Console) -> None:
    """The answers in one table, the fix in another, then where the report is."""
    table = Table(title=f"audit of {escape(result.model.path.name)} · clean accuracy "
                        f"{_pct(result.accuracy, 1)} on {result.n_eval} held-out inputs",
                  title_justify="left")
    for col in ("question", "answer", "tool", "benchmark score [95% CI]", "from"):
        table.add_column(col)
    for name, c in result.selection.choices.items():
        iv = next(iter(c.scores.values()), None)
        metric = LABELS.get(c.metric or "", c.metric or "")
        cells = (TEXT[name], answer_text(result, name), c.tool,
                 f"{metric} {score_text(iv, c.metric or '')}" if iv else "not measured",
                 "run" if result.selection.run and c.source.startswith("run") else "default")
        table.add_row(*(escape(x) for x in cells))  # class names are the user's: text, not markup
    console.print(table)
    fix = result.fix
    if fix is not None and math.isfinite(fix.acc_after):
        t = Table(title=f"fix: {fix.tool} (held-out inputs)", title_justify="left")
        for col in ("", "before", "after"):
            t.add_column(col, justify="right" if col else "left")
        t.add_row("clean accuracy", _pct(fix.acc_before, 1), _pct(fix.acc_after, 1))
        for e in fix.effects:
            t.add_row(escape(f"attack success of {e.tool}'s trigger -> {result.data.name(e.target)}"),
                      _pct(e.before), _pct(e.after))
        console.print(t)
    console.print(f"[dim]{result.seconds:.0f} s; tools from "
                  f"{escape(str(result.selection.run or 'the built-in defaults'))}[/dim]",
                  highlight=False)

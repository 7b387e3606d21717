"""Choosing the tools: from a run's leaderboards, the best tool per question among
those that can run on a user's model (nothing that needs training data,
references or the answer key; no controls), else the documented defaults. The
run here is a store written by hand on the tiny population's cards, with scores
chosen so that every rule decides something."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import yaml

from conftest import TINY_ZOO
from samecurve.api import CellKey, CellResult
from samecurve.audit import AuditError
from samecurve.audit.choose import (
    DEFAULT_SOURCE,
    MAX_ACC_DROP,
    QUESTIONS,
    choose,
    entry_for,
    newest_run,
)
from samecurve.run.cell import cell_config
from samecurve.run.store import Store
from samecurve.run.suite import parse_suite

DISCOVER_TOOLS = ["oracle", "null", "random", "strip", "neural-cleanse", "tabor", "example-search"]
EDIT_TOOLS = ["finetune", "adv-train", "neural-cleanse>nc-unlearn",
              "ensemble(neural-cleanse, strip)>targeted-lat"]
SUBJECTS = "[{recipe: patch, count: 2}, {recipe: blend, count: 1}, {recipe: clean, count: 3}]"


def _suite(tasks: list[str]):
    tools = ", ".join(f'"{t}"' for t in DISCOVER_TOOLS + EDIT_TOOLS)
    return parse_suite(f"name: fake\n{TINY_ZOO}\nsubjects: {SUBJECTS}\ntasks: [{', '.join(tasks)}]\n"
                       f"tools: [{tools}]\nseeds: [0]\nbudget: {{seconds: 30}}\n")


def _discover(tool: str, i: int, trojaned: bool) -> dict[str, float]:
    """Per-subject scores: i is the subject's rank among the trojaned (or clean) ones."""
    detect = {
        "oracle": float(trojaned), "strip": float(trojaned), "random": 0.5, "null": 0.5,
        # NC: AUROC 8/9 (its third trojaned subject sits below one clean one); tabor 0.5
        "neural-cleanse": [0.9, 0.8, 0.3][i] if trojaned else [0.2, 0.35, 0.1][i],
        "tabor": 0.5, "example-search": [0.6, 0.4, 0.5][i] if trojaned else 0.45,
    }[tool]
    m = {"probability": detect, "label": float(trojaned)}
    if trojaned and tool != "null":
        top1 = {"oracle": 1, "strip": 1, "random": 0, "neural-cleanse": float(i < 2), "tabor": 1,
                "example-search": 0}[tool]
        m["target_top1"] = float(top1)
        if tool in ("oracle", "neural-cleanse", "tabor", "random"):
            m["rediscovery"] = {"oracle": 1.0, "neural-cleanse": float(i == 0), "tabor": float(i < 2),
                                "random": 0.0}[tool]
            m["trigger_efficacy"] = {"oracle": 1.0, "neural-cleanse": 0.9, "tabor": 0.5,
                                     "random": 0.1}[tool]
            m["trigger_iou"] = 0.0
    return m


EDIT_SCORES = {  # (attack success after, accuracy drop)
    "finetune": (0.8, -0.005),
    "adv-train": (0.1, 0.03),  # the lowest a user could run, but it costs 3 points
    "neural-cleanse>nc-unlearn": (0.4, 0.0),
    "ensemble(neural-cleanse, strip)>targeted-lat": (0.2, 0.0),  # needs training data
}


def write_run(folder: Path, population: list, tasks: list[str]) -> Path:
    suite = _suite(tasks)
    with Store(folder) as store:
        store.set_meta("suite", yaml.safe_dump(suite.model_dump(), sort_keys=False))
        for s in population:
            store.put_subject(dict(s.card), {})
        ranks: dict[bool, int] = {True: 0, False: 0}
        tag = suite.reference_tag()
        entries = {t.display: t for t in suite.tools}
        task_entries = {t.name: t for t in suite.tasks}
        for s in population:
            trojaned = s.answer_key.trojaned
            i = ranks[trojaned]
            ranks[trojaned] += 1
            rows = []
            if "discover" in tasks:
                rows += [("discover", t, _discover(t, i, trojaned)) for t in DISCOVER_TOOLS]
            if "edit" in tasks and trojaned:
                rows += [("edit", t, {"asr_after": asr, "acc_drop": drop, "asr_before": 1.0,
                                      "der": (1 - asr - max(drop, 0) + 1) / 2})
                         for t, (asr, drop) in EDIT_SCORES.items()]
            for task, tool, metrics in rows:
                config = cell_config(task_entries[task], entries[tool], tag)
                store.add(config, CellResult(CellKey(task, tool, s.id, 0), "ok", metrics, 1.0, 0, 0))
    return folder


def test_defaults_without_a_run(tmp_path: Path) -> None:
    sel = choose(None, fix=True, runs_root=tmp_path / "runs")
    assert sel.run is None
    assert {q: c.tool for q, c in sel.choices.items()} == {
        "detect": "neural-cleanse", "target": "neural-cleanse", "trigger": "neural-cleanse",
        "affected": "neural-cleanse", "fix": "neural-cleanse>nc-unlearn"}
    detect = sel.choices["detect"]
    assert detect.source.startswith(DEFAULT_SOURCE) and "no run folder" in detect.source
    assert detect.scores["auroc"].mean == 0.82 and detect.calibration is None
    assert [e.display for e in sel.runs(["detect", "target"])] == ["neural-cleanse"]
    assert "fix" not in choose(None, runs_root=tmp_path / "runs").choices


def test_the_best_runnable_tool_per_question(population, tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", population, ["discover", "edit"])
    sel = choose(run, fix=True)
    assert sel.run == run and sel.suite == "fake"
    picked = {q: c.tool for q, c in sel.choices.items()}
    assert picked == {
        "detect": "neural-cleanse",  # strip (1.00) needs training data; oracle reads the key
        "target": "tabor",  # 1.00 against neural-cleanse's 0.67
        "trigger": "tabor",  # rediscovery 0.67 against 0.33
        "affected": "neural-cleanse",  # trigger efficacy 0.90 against 0.50
        "fix": "neural-cleanse>nc-unlearn",  # adv-train costs 3 points; the ensemble chain needs train_data
    }
    detect = sel.choices["detect"]
    assert detect.scores["auroc"].mean == pytest.approx(8 / 9)
    assert detect.scores["auroc"].n == 6 and detect.chance["auroc"] == 0.5
    assert any(p.startswith("strip (1.00; needs train_data)") for p in detect.passed_over)
    assert all(not p.startswith(("oracle", "null", "random")) for p in detect.passed_over)
    assert "source-specific" in sel.choices["target"].blind_to
    fix = sel.choices["fix"]
    assert list(fix.scores) == ["asr_after", "acc_drop"] and fix.scores["asr_after"].mean == pytest.approx(0.4)
    assert fix.scores["acc_drop"].mean < MAX_ACC_DROP
    assert any(p.startswith("ensemble(neural-cleanse, strip)>targeted-lat") for p in fix.passed_over)
    # Calibration on the run's 6 subjects (3 trojaned): monotone, and it spreads NC's scores.
    cal = detect.calibration
    assert cal is not None and (cal.n, cal.positives) == (6, 3) and cal.a > 0
    assert cal(0.9) > cal(0.5) > cal(0.1)
    assert [e.display for e in sel.runs([q.name for q in QUESTIONS if q.task == "discover"])] == [
        "neural-cleanse", "tabor"]


def test_a_run_without_an_edit_board_falls_back_for_the_fix(population, tmp_path: Path) -> None:
    run = write_run(tmp_path / "runs" / "old", population, ["discover"])
    sel = choose(run, fix=True)
    assert sel.choices["detect"].source.startswith(f"run {run}")
    fix = sel.choices["fix"]
    assert fix.tool == "neural-cleanse>nc-unlearn" and "has no edit board" in fix.source
    assert math.isfinite(fix.scores["asr_after"].mean)


def test_the_newest_run_under_runs_is_used(population, tmp_path: Path, monkeypatch) -> None:
    old = write_run(tmp_path / "runs" / "old", population, ["discover"])
    new = write_run(tmp_path / "runs" / "new", population, ["discover", "edit"])
    (tmp_path / "runs" / "not-a-run").mkdir()
    for folder, when in ((old, 1_000_000), (new, 2_000_000)):
        for f in folder.iterdir():
            os.utime(f, (when, when))
    assert newest_run(tmp_path / "runs") == new
    monkeypatch.chdir(tmp_path)
    assert choose(fix=True).run == Path("runs") / "new"
    with pytest.raises(AuditError, match=r"holds no results\.sqlite"):
        choose(tmp_path / "runs" / "not-a-run")


def test_a_tool_label_round_trips() -> None:
    assert entry_for("neural-cleanse>nc-unlearn").params == {"stages": ["neural-cleanse", "nc-unlearn"]}
    assert entry_for("ensemble(a, b)").name == "ensemble"
    assert entry_for("tabor").name == "tabor"

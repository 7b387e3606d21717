"""The runner under failure: crashing, hanging, dying and greedy tools become
floor-scored rows and the run goes on; a killed run resumes without losing or
duplicating a cell."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import tiny_suite_text
from samecurve.run.runner import RunError, check_device, run_suite
from samecurve.run.store import Store
from samecurve.run.suite import parse_suite

ONE_OF_EACH = "[{recipe: patch, count: 1}, {recipe: clean, count: 1}]"


def _rows(folder: Path) -> list[tuple]:
    db = sqlite3.connect(folder / "results.sqlite")
    return db.execute("SELECT tool, subject, seed, status, error, metrics FROM cells").fetchall()


def test_misbehaving_tools_become_floor_rows(plugins, population, cache, tmp_path) -> None:
    text = tiny_suite_text('[crasher, segfaulter, {name: sleeper, params: {seconds: 600}}, '
                           'greedy, oracle]', ONE_OF_EACH, budget=2)
    text = text.replace("budget: {seconds: 2}", "budget: {seconds: 2, queries: 500}")
    suite = parse_suite(text)
    store = run_suite(suite, tmp_path, workers=2, cache=cache, progress=False)
    rows = {(r[0], r[1]): r for r in _rows(tmp_path)}
    store.close()
    assert len(rows) == 10  # 5 tools x 2 subjects, every cell recorded
    for subject in {s for _, s in rows}:
        assert rows[("crasher", subject)][3] == "error"
        assert "deliberate failure" in rows[("crasher", subject)][4]
        assert rows[("segfaulter", subject)][3] == "error"
        assert "worker died" in rows[("segfaulter", subject)][4]
        assert rows[("sleeper", subject)][3] == "timeout"
        assert rows[("greedy", subject)][3] == "timeout"
        assert "queries" in rows[("greedy", subject)][4]
        assert rows[("oracle", subject)][3] == "ok"
        for tool in ("crasher", "segfaulter", "sleeper", "greedy"):  # scored at the floor
            assert '"probability": 0.5' in rows[(tool, subject)][5]


def test_resume_after_kill_loses_and_duplicates_nothing(population, cache, tmp_path) -> None:
    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(tiny_suite_text(
        '[oracle, "null", random, edge-detector, centre, '
        '{name: neural-cleanse, params: {steps: 40}}]'))
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "samecurve", "run", str(suite_file), "--out", str(out),
           "--cache", str(cache.root), "--workers", "1", "--quiet"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    n = 0
    while time.monotonic() < deadline:  # kill -9 the whole run once some cells are in
        time.sleep(0.5)
        if (out / "results.sqlite").exists():
            try:
                n = len(_rows(out))
            except sqlite3.OperationalError:
                continue
            if n >= 8:
                break
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = len(_rows(out))
    assert 8 <= partial < 36, "the kill should land mid-run"
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    rows = _rows(out)
    keys = [(r[0], r[1], r[2]) for r in rows]
    assert len(keys) == len(set(keys)) == 6 * 6  # every cell exactly once
    assert (out / "report.html").is_file()
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)  # nothing left to do
    assert again.returncode == 0 and len(_rows(out)) == 36


def test_results_survive_a_changed_hyperparameter(population, cache, tmp_path) -> None:
    """Rows are keyed by the tool's full config: a new value reruns, the old row stays apart."""
    a = parse_suite(tiny_suite_text("[{name: random, params: {max_patch: 8}}]", ONE_OF_EACH))
    b = parse_suite(tiny_suite_text("[{name: random, params: {max_patch: 6}}]", ONE_OF_EACH))
    run_suite(a, tmp_path, workers=0, cache=cache, progress=False).close()
    run_suite(b, tmp_path, workers=0, cache=cache, progress=False).close()
    with Store(tmp_path) as store:
        assert store.count() == 4


def test_cuda_on_a_machine_without_it() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(RunError, match="no CUDA; use --device cpu"):
        check_device("cuda")
    with pytest.raises(RunError, match="unknown device"):
        check_device("tpu")


def test_a_subject_that_misses_its_gate_is_left_out_and_named(cache, tmp_path) -> None:
    """A subject trained far too briefly to pass its gate: the run goes on without
    it and names it, instead of stopping."""
    import json

    text = (
        "name: hopeless\nzoo: {train: {train_size: 300, test_size: 100, epochs: 1, "
        "min_clean_accuracy: 0.99, max_attempts: 1}}\nsubjects: [{recipe: clean, count: 1}]\n"
        "tasks: [discover]\ntools: [oracle]\n"
    )
    with run_suite(parse_suite(text), tmp_path / "run", workers=0, cache=cache,
                   progress=False) as store:
        failures = json.loads(store.meta()["gate_failures"])
        assert [f["recipe"] for f in failures] == ["clean"]
        assert "no attempt" in failures[0]["error"]
        assert not store.done()  # nothing graded on a subject that does not exist


def test_references_share_the_subjects_data_and_never_include_it() -> None:
    from samecurve.run.runner import _references_for

    suite = parse_suite(tiny_suite_text(
        '["oracle"]',
        "[{recipe: patch, count: 2}, {recipe: clean, count: 1, dataset: digits}]",
    ))
    scenes_a, scenes_b, digits = suite.subject_specs()
    pool = [scenes_a, scenes_b, digits]
    assert _references_for(scenes_a, pool) == (scenes_b.id,)
    assert _references_for(digits, pool) == ()
    # A hidden-program network is on the suite's default dataset too, but it reads
    # tokens: never a reference, and it has none (meta-classifier fed it images).
    program = parse_suite(tiny_suite_text(
        '["oracle"]', "[{recipe: sequence-task, count: 1}]")).subject_specs()[0]
    assert _references_for(scenes_a, [*pool, program]) == (scenes_b.id,)
    assert _references_for(program, [*pool, program]) == ()



def test_a_reference_that_missed_its_gate_is_left_out_not_loaded() -> None:
    """Cells learn from the references that were built; one that missed its gate
    (absent from the cache) is not handed to a tool, which could not load it."""
    from samecurve.run.runner import _cell_jobs

    suite = parse_suite(tiny_suite_text('["layer-norms"]', ONE_OF_EACH).replace(
        "tasks:", "references: [{recipe: patch, count: 2, population: dev}]\ntasks:"
    ))
    built, missed = suite.reference_specs()

    class Cache:  # the subjects and one reference exist
        root = "unused"

        def has(self, subject_id: str) -> bool:
            return subject_id != missed.id

    class Store:
        def done(self) -> set:
            return set()

        def cards(self) -> dict:  # discover grades every subject, whatever its card says
            return {s.id: {} for s in suite.subject_specs()}

    jobs = _cell_jobs(suite, suite.subject_specs(), "cpu", Cache(), Store())
    assert len(jobs) == 2
    assert all(job.payload.references == (built.id,) for job in jobs)


REPLACE_SUITE = """
name: replace-tiny
subjects:
  - {recipe: exact-rule, count: 3}
tasks: [{name: replace, params: {test_examples: 200}}, discover]
tools: [oracle, "null", random]
seeds: [0]
budget: {seconds: 30}
"""


def test_a_replace_suite_runs_boards_and_reports_end_to_end(monkeypatch, tmp_path) -> None:
    """Hidden-program subjects go through the same runner, store, boards and HTML as
    trojaned ones; discover does not grade them (nothing is planted)."""
    from conftest import use_plugin
    from samecurve.report.build import write_report
    from samecurve.run.aggregate import boards, load_run
    from samecurve.zoo.cache import Cache

    use_plugin(monkeypatch, "exact_programs")
    store = run_suite(parse_suite(REPLACE_SUITE), tmp_path / "run", workers=0,
                      cache=Cache(tmp_path / "cache"), progress=False)
    with store:
        assert len(store.cards()) == 3
        run = load_run(store)
    main = next(b for b in boards(run) if b.task == "replace" and b.family == "all")
    assert not [b for b in boards(run) if b.task == "discover"]
    rows = {r.tool: r for r in main.rows}
    assert rows["oracle"].intervals["solved"].mean == 1.0
    assert rows["oracle"].intervals["solved"].n == 2  # the control is not a rule subject
    assert rows["null"].intervals["no_answer"].mean == 1.0
    assert rows["random"].intervals["confident_wrong"].mean == 1.0
    assert main.chance["fidelity_heldout"] == 0.5
    path, _ = write_report(tmp_path / "run")
    html = path.read_text()
    assert "Replace · abandon the network for a program" in html and "Solved" in html
    # The recovered-programs table: the oracle solves each rule subject and abstains on
    # the control; random's program is shown and is confident-wrong there.
    assert 'id="programs"' in html
    assert html.count(">solved · ×1.0<") == 2 and html.count(">right to abstain<") == 2
    assert ">confident-wrong<" in html and "2654435761" in html

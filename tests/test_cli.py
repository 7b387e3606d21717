from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import tiny_suite_text
from samecurve.cli import app

runner = CliRunner()


def test_ls_lists_tools_with_their_needs() -> None:
    res = runner.invoke(app, ["ls", "tools"])
    assert res.exit_code == 0
    assert "neural-cleanse" in res.output and "needs" in res.output
    assert runner.invoke(app, ["ls", "recipes"]).exit_code == 0
    bad = runner.invoke(app, ["ls", "gizmos"])
    assert bad.exit_code == 2 and "cannot list" in bad.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "missing.yaml"], "not found"),
        (["report", "nowhere"], "holds no results.sqlite"),
        (["results", "nowhere"], "holds no results.sqlite"),
        (["run", "smoke", "--device", "cuda"], "no CUDA"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str, tmp_path, monkeypatch) -> None:
    import torch

    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert not (tmp_path / "runs").exists() or "cuda" in args


def test_unwritable_out_folder(tmp_path: Path, cache) -> None:
    suite = tmp_path / "s.yaml"
    suite.write_text(tiny_suite_text("[oracle]"))
    (tmp_path / "blocker").write_text("a file, not a folder")
    res = runner.invoke(app, ["run", str(suite), "--out", str(tmp_path / "blocker" / "run"),
                              "--cache", str(cache.root)])
    assert res.exit_code == 2 and "writable --out folder" in res.output


def test_run_then_results_and_report(tmp_path: Path, cache, population) -> None:
    suite = tmp_path / "s.yaml"
    suite.write_text(tiny_suite_text('[oracle, "null"]'))
    out = tmp_path / "run"
    res = runner.invoke(app, ["run", str(suite), "--out", str(out), "--cache", str(cache.root),
                              "--workers", "0", "--quiet"])
    assert res.exit_code == 0, res.output
    assert "AUROC" in res.output and "oracle" in res.output and (out / "report.html").is_file()
    js = runner.invoke(app, ["results", str(out), "--format", "json"])
    rows = json.loads(js.stdout)
    auroc = {r["tool"]: r["mean"] for r in rows if r["metric"] == "auroc" and r["family"] == "all"}
    assert auroc == {"oracle": 1.0, "null": 0.5}
    csv = runner.invoke(app, ["results", str(out), "--format", "csv"])
    assert csv.stdout.splitlines()[0].startswith("task,family,tool")
    (out / "report.html").unlink()
    assert runner.invoke(app, ["report", str(out)]).exit_code == 0
    assert (out / "report.html").is_file()


def test_compare_two_tools_on_the_same_subjects(tmp_path: Path, cache, population) -> None:
    suite = tmp_path / "s.yaml"
    suite.write_text(tiny_suite_text('[oracle, "null"]'))
    out = tmp_path / "run"
    assert runner.invoke(app, ["run", str(suite), "--out", str(out), "--cache", str(cache.root),
                               "--workers", "0", "--quiet"]).exit_code == 0
    res = runner.invoke(app, ["compare", str(out), "oracle", "null", "--metric", "target_top1"])
    assert res.exit_code == 0 and "+1.000" in res.output and "n=3" in res.output
    bad = runner.invoke(app, ["compare", str(out), "oracle", "nul"])
    assert bad.exit_code == 2 and "no tool 'nul'" in bad.output


def _exact_subject(tmp_path: Path):
    import exact_programs  # noqa: F401 - registers the exact-rule recipe

    from samecurve.zoo.builder import SubjectSpec, build
    from samecurve.zoo.cache import Cache

    cache = Cache(tmp_path / "cache")
    return cache, build(SubjectSpec(recipe="exact-rule", seed=0), cache)


def test_submit_scores_a_program_file_as_the_task_does(tmp_path: Path) -> None:
    cache, subject = _exact_subject(tmp_path)
    good = tmp_path / "mine.py"
    good.write_text(subject.answer_key.program)
    r = runner.invoke(app, ["submit", subject.id, str(good), "--cache", str(cache.root)])
    assert r.exit_code == 0, r.output
    assert "solved" in r.output and "1.0000" in r.output


@pytest.mark.parametrize(("source", "message"), [
    ("import os\ndef f(a, b):\n    return 0\n", "Import is not allowed"),
    ("def f(a, b):\n    while True:\n        pass\n", "ran past its 2 s limit"),
])
def test_submit_refuses_or_stops_a_bad_program_in_one_line(tmp_path: Path, source, message) -> None:
    cache, subject = _exact_subject(tmp_path)
    bad = tmp_path / "bad.py"
    bad.write_text(source)
    r = runner.invoke(app, ["submit", subject.id, str(bad), "--cache", str(cache.root),
                            "--seconds", "2"])
    assert r.exit_code == 2 and message in r.output, r.output
    missing = runner.invoke(app, ["submit", "nope", str(bad), "--cache", str(cache.root)])
    assert missing.exit_code == 2 and "no subject 'nope'" in missing.output

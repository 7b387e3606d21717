"""`samecurve audit` end to end, through the CLI, on tiny zoo subjects saved the way
users save models (safetensors + --arch, TorchScript, a torch.save state dict)
with their clean data exported as .npz. The answer key is used only here, to
check what the audit says.

Each tool gets up to 300 s, more than it needs: Neural Cleanse stops after its
600 steps (11-16 s on an idle pair of cores, 130-240 s when other jobs share
them), and a share that cuts it short makes it miss (measured at 36-290 steps:
the wrong class on 3 of 3 seeds). With all its steps it is deterministic (seed 0
twice: the same probability to the last digit). Audits run from a scratch folder
with no runs/, so the tools are the documented defaults."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from samecurve.audit.load import fit_model, read_model_file
from samecurve.cli import app
from samecurve.zoo.builder import clean_split
from samecurve.zoo.train import predict

runner = CliRunner()
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit in the exports
PER_TOOL = 300


def export(subject, folder: Path) -> dict[str, Path]:
    """The subject's model in every format, and 1000 of its clean inputs as .npz."""
    folder.mkdir(parents=True, exist_ok=True)
    model = subject.model.eval()
    files = {"safetensors": folder / "model.safetensors", "state-dict": folder / "model.pt",
             "torchscript": folder / "model.ts", "data": folder / "data.npz"}
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(files["safetensors"]))
    torch.save(model.state_dict(), files["state-dict"])
    torch.jit.save(torch.jit.script(model), files["torchscript"])
    data = clean_split(subject, "val", 1000)
    np.savez(files["data"], x=data.x.numpy(), y=data.y.numpy())
    return files


def true_attack_success(model: torch.nn.Module, subject) -> float:
    """The planted trigger's attack success on the subject's fresh held-out inputs."""
    key = subject.answer_key
    held = clean_split(subject, "heldout", 512)
    x = held.x[key.trojans[0].applies_to(held.y)]
    return float((predict(model, key.trigger.stamp(x)) == key.target).float().mean())


@pytest.fixture(scope="module")
def trojaned(strong_patch):
    """The strong patch subject. On the tiny population's patch subjects Neural Cleanse
    is on the edge: it names the first one's target wrong at every seed measured, and
    the second one's right here but wrong on CI's machine (5 for 6), whose float
    kernels differ."""
    return strong_patch


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("audit")


_AUDITS: dict[tuple[str, str, bool], tuple[Path, dict]] = {}


def run_audit(subject, fmt: str, workdir: Path, fix: bool = False) -> tuple[Path, dict]:
    """One CLI audit (cached per subject, format and --fix), run from a folder with no
    runs/ so the defaults choose the tools: its folder and audit.json."""
    key = (subject.id, fmt, fix)
    if key not in _AUDITS:
        files = export(subject, workdir / subject.id)
        out = workdir / f"{subject.id}-{fmt}{'-fix' if fix else ''}"
        args = ["audit", "--model", str(files[fmt]), "--data", str(files["data"]),
                "--out", str(out), "--budget", str(PER_TOOL * (2 if fix else 1)), "--quiet"]
        if fmt != "torchscript":
            args += ["--arch", "small-cnn"]
        if fix:
            args.append("--fix")
        with contextlib.chdir(workdir):
            res = runner.invoke(app, args)
        assert res.exit_code == 0, res.output
        assert "audit of model" in res.output and "report:" in res.output
        _AUDITS[key] = (out, json.loads((out / "audit.json").read_text()))
    return _AUDITS[key]


def test_a_trojaned_model_gets_its_target_a_trigger_and_a_fix(trojaned, workdir) -> None:
    """Measured (seed 0, data exported as floats): Neural Cleanse names target 0 first
    (then 4, 2), and its trigger sends 82% of held-out inputs of other classes there
    (1.5% unstamped); neural-cleanse>nc-unlearn takes that to 6% and the planted
    trigger from 0.996 to 0.48, at 92.7% -> 91.7% clean accuracy. It reads "likely
    trojaned", p = 0.99 (0.74 when the subject is trained on one thread, whose
    weights differ; the target is still named first)."""
    out, found = run_audit(trojaned, "safetensors", workdir, fix=True)
    target = trojaned.answer_key.target
    assert found["targets"][0]["class"] == target
    assert found["questions"]["detect"]["source"].startswith("built-in default")
    trig = found["triggers"][0]
    assert trig["target"] == target and trig["hit_rate"] > 0.5 > trig["base_rate"]
    assert (out / trig["image"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 1
    assert "http://" not in html and "https://" not in html and "<script" not in html
    assert "no trojan detected" in html or "likely trojaned" in html
    fix = found["fix"]
    assert fix["status"] == "ok" and fix["tool"] == "neural-cleanse>nc-unlearn"
    effect = fix["attack_success"][0]
    assert effect["after"] < effect["before"]
    assert np.isfinite(fix["accuracy_drop"]) and "Clean accuracy changed by" in html
    # The repaired model on disk reloads without --arch and is repaired against the true trigger.
    repaired = fit_model(read_model_file(out / "repaired.safetensors"), None, (3, 32, 32), 10)
    assert true_attack_success(repaired.module, trojaned) < true_attack_success(trojaned.model, trojaned)
    assert [r["status"] for r in found["runs"]] == ["ok", "ok"]


@pytest.fixture(scope="module")
def clean_twins(population) -> list:
    return [s for s in population if s.family == "clean"]


def test_a_clean_model_reads_clean(clean_twins, trojaned, workdir) -> None:
    """Measured (seed 0, data exported as floats): the third clean twin (TorchScript) reads
    p = 0.16, "no trojan detected", under the trojaned subject's 0.99; at seeds 0-3 it
    reads 0.16, 0.26, 0.24, 0.17. It is the twin asserted on because the others are
    not always clean: the first reads 0.52, 0.12, 0.51, 0.14 (two borderline false
    positives, anomaly index 2.04 against NC's threshold 2), the second 0.09, 0.91,
    0.08, 0.40 (see the slow test below for the count at seed 0)."""
    _, found = run_audit(clean_twins[2], "torchscript", workdir)
    _, trojan = run_audit(trojaned, "safetensors", workdir, fix=True)
    assert found["model"]["format"] == "torchscript"
    assert found["verdict"]["trojaned"] is False and found["verdict"]["words"] == "no trojan detected"
    assert found["verdict"]["calibrated"] is False  # no benchmark run to calibrate on
    assert found["verdict"]["probability"] < trojan["verdict"]["probability"]


@pytest.mark.slow
def test_false_positives_among_the_clean_twins(clean_twins, workdir) -> None:
    """At seed 0 one of the three clean twins is flagged: the first (p = 0.52); over
    seeds 0-3, 3 of 12 audits of clean twins read "likely trojaned"."""
    found = [run_audit(s, "safetensors", workdir)[1]["verdict"] for s in clean_twins]
    assert sum(v["trojaned"] for v in found) <= 1


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["state-dict", "torchscript"])
def test_every_format_gives_the_same_audit(fmt: str, trojaned, workdir) -> None:
    """The case seed comes from the weights, not the file, so a model audits alike in any
    format (when the tool finishes its steps inside its budget)."""
    _, found = run_audit(trojaned, fmt, workdir)
    _, ref = run_audit(trojaned, "safetensors", workdir, fix=True)
    assert found["model"]["format"] == fmt
    assert found["targets"][0] == ref["targets"][0]
    assert found["verdict"]["raw_probability"] == pytest.approx(ref["verdict"]["raw_probability"], abs=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["safetensors", "state-dict"])
def test_a_clean_model_in_the_other_formats(fmt: str, clean_twins, workdir) -> None:
    _, found = run_audit(clean_twins[2], fmt, workdir)
    _, ref = run_audit(clean_twins[2], "torchscript", workdir)
    assert found["verdict"]["trojaned"] is False
    assert found["verdict"]["raw_probability"] == pytest.approx(ref["verdict"]["raw_probability"], abs=1e-3)


# ------------------------------------------------------------------ bad input


class Evil:
    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture
def user_files(tmp_path: Path) -> dict[str, Path]:
    """A (random) small-cnn, and data that fits it and data that does not."""
    from samecurve.zoo.archs import small_cnn

    torch.manual_seed(0)
    net = small_cnn()
    rng = np.random.default_rng(0)
    files = {"model": tmp_path / "model.safetensors", "data": tmp_path / "data.npz",
             "grey": tmp_path / "grey.npz", "five": tmp_path / "five.npz",
             "text": tmp_path / "notes.pt", "evil": tmp_path / "evil.pt"}
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(files["model"]))
    np.savez(files["data"], x=rng.random((100, 3, 32, 32), dtype=np.float32), y=np.arange(100) % 10)
    np.savez(files["grey"], x=rng.random((100, 32, 32), dtype=np.float32), y=np.arange(100) % 10)
    np.savez(files["five"], x=rng.random((100, 3, 32, 32), dtype=np.float32), y=np.arange(100) % 5)
    files["text"].write_text("these are my notes, not a model\n")
    torch.save({"weights": Evil(tmp_path / "pwned")}, files["evil"])
    return files


@pytest.mark.parametrize(
    ("model", "data", "extra", "message"),
    [
        ("text", "data", [], "not a model file"),
        ("evil", "data", [], "refused:"),
        ("model", "grey", ["--arch", "small-cnn"], "does not take the data's 1x32x32 inputs"),
        ("model", "five", ["--arch", "small-cnn"], "the model has 10 outputs but the data has 5 classes"),
        ("model", "data", [], "no architecture; pass --arch"),
        ("model", "data", ["--arch", "small-cnn", "--device", "cuda"], "no CUDA"),
        ("model", "data", ["--arch", "small-cnn", "--from", "nowhere"], "holds no results.sqlite"),
        ("model", "data", ["--arch", "small-cnn", "--budget", "0"], "--budget must be a positive"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(model, data, extra, message, user_files, tmp_path,
                                          monkeypatch) -> None:
    if "cuda" in extra and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    res = runner.invoke(app, ["audit", "--model", str(user_files[model]), "--data",
                              str(user_files[data]), "--out", str(out), "--quiet", *extra])
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], res.output
    assert not out.exists()
    assert not (tmp_path / "pwned").exists()  # the pickle was refused, never run

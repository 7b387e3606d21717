from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from samecurve.cli import app
from samecurve.zoo.cache import Cache
from samecurve.zoo.population import build_population, population_specs, write_example
from samecurve.zoo.train import TrainConfig

QUICK = TrainConfig(train_size=400, test_size=100, epochs=1, asr_gate=0.0,
                    min_clean_accuracy=0.0, max_attempts=1)
QUICK_SUITE = """name: quick
zoo: {arch: [small-cnn, small-resnet], train: {train_size: 400, test_size: 100, epochs: 1,
      asr_gate: 0.0, min_clean_accuracy: 0.0, max_attempts: 1}}
subjects: [{recipe: clean, count: 1}]
tasks: [discover]
tools: [oracle]
"""


def test_specs_take_architectures_in_turn_and_mark_heldout() -> None:
    specs = population_specs("style", 3, first_seed=4, heldout=True, population="dev",
                             archs=("small-cnn", "small-resnet"), train=QUICK)
    assert [s.seed for s in specs] == [4, 5, 6]
    assert [s.arch for s in specs] == ["small-cnn", "small-resnet", "small-cnn"]
    assert all(s.recipe_params == {"heldout": True} and s.population == "dev" for s in specs)


def test_build_skips_what_exists_and_writes_an_example(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    specs = population_specs("natural", 2, train=QUICK)
    first = build_population(specs, cache, workers=0)
    assert [b.cached for b in first] == [False, False] and all(b.card for b in first)
    again = build_population(specs, cache, workers=0)
    assert [b.cached for b in again] == [True, True]
    png = write_example(cache, specs[0].id, tmp_path / "ex.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_zoo_commands(tmp_path: Path) -> None:
    runner = CliRunner()
    suite = tmp_path / "quick.yaml"
    suite.write_text(QUICK_SUITE)
    cache = str(tmp_path / "cache")
    res = runner.invoke(app, ["zoo", "build", "--recipe", "patch", "--count", "2", "--suite",
                              str(suite), "--workers", "0", "--cache", cache,
                              "--param", "location=random"])
    assert res.exit_code == 0, res.output
    assert "2 of 2 subjects" in res.output
    ids = Cache(cache).ids()
    assert len(ids) == 2
    listing = runner.invoke(app, ["zoo", "ls", "--cache", cache])
    assert listing.exit_code == 0 and "patch" in listing.output
    image = tmp_path / "show.png"
    shown = runner.invoke(app, ["zoo", "show", ids[0], "--image", str(image), "--cache", cache])
    assert shown.exit_code == 0 and image.is_file() and '"random"' in shown.output
    for args, message in [
        (["zoo", "show", "patch-nope", "--cache", cache], "no subject"),
        (["zoo", "build", "--recipe", "pach", "--cache", cache], "did you mean"),
        (["zoo", "build", "--recipe", "patch", "--population", "train"], "dev or test"),
        (["zoo", "build", "--recipe", "patch", "--param", "size"], "KEY=VALUE"),
        (["zoo", "build", "--recipe", "patch", "--param", "location=moon"], "location"),
    ]:
        res = runner.invoke(app, args)
        assert res.exit_code == 2, (args, res.output)
        assert message in res.output

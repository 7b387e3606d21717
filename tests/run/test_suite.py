from __future__ import annotations

from pathlib import Path

import pytest

from samecurve.run.suite import SuiteError, load_suite, parse_suite

GOOD = """
name: t
subjects: [{recipe: patch, count: 2}, {recipe: clean, count: 2}]
tasks: [discover]
tools: [oracle, "null", {name: neural-cleanse, params: {steps: 5}, label: nc5}]
"""


def test_a_good_suite_parses_with_defaults() -> None:
    s = parse_suite(GOOD)
    assert [t.display for t in s.tools] == ["oracle", "null", "nc5"]
    assert s.seeds == [0] and s.budget.seconds == 120
    specs = s.subject_specs()
    assert [x.recipe for x in specs] == ["patch", "patch", "clean", "clean"]
    assert len({x.id for x in specs}) == 4  # patch 0 and clean 0 are different subjects


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (GOOD + "colour: red\n", "unknown key 'colour'"),
        (GOOD.replace("count: 2}, {recipe: clean", "count: 2, cuont: 1}, {recipe: clean"),
         "unknown key 'subjects.0.cuont'"),
        (GOOD.replace("neural-cleanse", "neural-clense"), "did you mean 'neural-cleanse'"),
        (GOOD.replace("recipe: patch", "recipe: pach"), "did you mean 'patch'"),
        (GOOD.replace("steps: 5", "stepz: 5"), "bad params"),
        (GOOD.replace('"null"', "null"), "bare null is YAML for nothing"),
        (GOOD.replace("count: 2}", "count: 0}", 1), "subjects.0.count"),
        ("name: [unclosed", "not valid YAML"),
        ("- just a list", "must be a YAML mapping"),
        (GOOD.replace("label: nc5", "label: oracle"), "appears twice"),
    ],
)
def test_a_bad_suite_is_one_line_naming_the_problem(text: str, message: str) -> None:
    with pytest.raises(SuiteError, match=message) as info:
        parse_suite(text, "s.yaml")
    assert "\n" not in str(info.value)


def test_missing_file_and_builtins(tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match="not found"):
        load_suite(tmp_path / "nope.yaml")
    for name in ("smoke", "default"):
        assert load_suite(name).name == name
    (tmp_path / "s.yaml").write_text(GOOD)
    assert load_suite(tmp_path / "s.yaml").name == "t"


def test_digest_changes_with_content() -> None:
    assert parse_suite(GOOD).digest() != parse_suite(GOOD.replace("steps: 5", "steps: 6")).digest()


def test_populations_heldout_and_architectures_shape_the_specs() -> None:
    s = parse_suite(
        GOOD.replace("subjects: [", "zoo: {arch: [small-cnn, small-resnet]}\nsubjects: [")
        .replace("{recipe: clean, count: 2}", "{recipe: clean, count: 2, heldout: true}")
        + "references: [{recipe: patch, count: 2, population: dev}]\n"
    )
    specs = s.subject_specs()
    assert [x.arch for x in specs] == ["small-cnn", "small-resnet"] * 2  # by seed, every recipe
    assert specs[2].recipe_params == {"heldout": True}
    refs = s.reference_specs()
    assert [r.population for r in refs] == ["dev", "dev"]
    assert {r.id for r in refs}.isdisjoint({x.id for x in specs})  # dev seeds are other subjects


def test_the_reference_tag_names_what_reference_learners_learn_from() -> None:
    plain = parse_suite(GOOD)
    assert plain.reference_tag().startswith("leave-one-out:")
    more = parse_suite(GOOD.replace("{recipe: clean, count: 2}", "{recipe: clean, count: 3}"))
    assert more.reference_tag() != plain.reference_tag()  # new subjects, new references
    dev = parse_suite(GOOD + "references: [{recipe: patch, count: 2, population: dev}]\n")
    assert dev.reference_tag().startswith("references:")
    assert dev.reference_tag() != parse_suite(
        GOOD + "references: [{recipe: patch, count: 3, population: dev}]\n"
    ).reference_tag()


def test_references_that_are_graded_subjects_are_refused() -> None:
    with pytest.raises(SuiteError, match="reference subjects are also graded"):
        parse_suite(GOOD + "references: [{recipe: patch, count: 1}]\n")
    with pytest.raises(SuiteError, match="population"):
        parse_suite(GOOD.replace("count: 2}", "count: 2, population: train}", 1))


@pytest.mark.parametrize("name", ["smoke", "default", "full"])
def test_builtin_suites_parse(name: str) -> None:
    s = load_suite(name)
    families = {spec.make_recipe().family for spec in s.subject_specs()}
    assert "clean" in families and len(families) >= 3


def test_the_full_suite_plants_every_family_on_both_image_datasets() -> None:
    """Issue 3: every trojan family on procedural scenes and on real handwriting."""
    specs = load_suite("full").subject_specs()
    image = {"patch", "blend", "style", "warp", "natural", "source-specific", "multi", "clean-label"}
    for dataset in ("scenes", "digits"):
        families = {s.make_recipe().family for s in specs if s.dataset == dataset}
        assert image <= families, (dataset, image - families)

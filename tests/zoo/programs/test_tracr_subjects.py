"""tracr subjects: RASP programs compiled by tracr, copied into torch. The copy
must compute exactly what tracr's own model and the hidden source compute."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from samecurve.programs.domain import query
from samecurve.programs.source import check_source
from samecurve.registry import get
from samecurve.zoo.programs.base import recipe_of
from samecurve.zoo.programs.tracr_subjects import (
    BOS,
    EXTRA_HINT,
    RULES,
    TracrRecipe,
    tracr_outputs,
)

torch.set_num_threads(1)
RECIPE = TracrRecipe()
_COMPILED: dict[str, object] = {}


def compiled(rule: str):
    """Each rule compiled once per test session (a compile takes about 2 s)."""
    pytest.importorskip("tracr")
    if rule not in _COMPILED:
        program = RECIPE.program(rule, np.random.default_rng(3))
        _COMPILED[rule] = (program, RECIPE.compile(program))
    return _COMPILED[rule]


def test_registered_and_has_enough_rules() -> None:
    assert isinstance(get("recipe", "tracr")(), TracrRecipe)
    assert get("arch", "tracr-transformer") is not None
    assert len(RULES) >= 4


@pytest.mark.parametrize("rule", list(RULES))
def test_every_source_passes_check_source(rule: str) -> None:
    for seed in range(3):
        program = RECIPE.program(rule, np.random.default_rng(seed))
        check_source(program.source)
        out = program.function()([1, 0, 3, 3, 2])
        assert len(out) == 5 and all(isinstance(v, int) for v in out)


def test_sources_compute_the_rules() -> None:
    rng = np.random.default_rng(0)
    xs = [2, 0, 2, 1, 3]
    expect = {"reverse": [3, 1, 2, 0, 2], "sort": [0, 1, 2, 2, 3], "hist": [2, 1, 2, 1, 1],
              "length": [5] * 5, "sort_freq": [2, 2, 0, 1, 3], "first": [2] * 5,
              "mirror_sum": [1, 1, 0, 1, 1]}
    for rule, want in expect.items():
        assert RECIPE.program(rule, rng).function()(xs) == want, rule
    count = RECIPE.program("count", rng)
    assert count.function()(xs) == [xs.count(count.constants[0])] * 5
    perm = RECIPE.program("map", rng)
    assert sorted(perm.constants) == [0, 1, 2, 3]
    assert perm.function()(xs) == [perm.constants[x] for x in xs]


@pytest.mark.parametrize("rule", list(RULES))
def test_torch_copy_equals_tracr_and_source(rule: str) -> None:
    program, c = compiled(rule)
    domain = RECIPE.domain(len(c.output_values))
    rng = np.random.default_rng(1)
    for n in range(1, RECIPE.max_len + 1):
        x = domain.sample(48, rng, n)
        ours = query(c.model, domain, x)
        assert ours.shape == (48, n)
        np.testing.assert_array_equal(ours, program.labels(domain, x), err_msg=f"{rule} len {n}")
        if n in (2, RECIPE.max_len):  # tracr's own model: one XLA compile per length
            np.testing.assert_array_equal(ours, tracr_outputs(c, x), err_msg=f"{rule} len {n}")


def test_tracr_apply_decodes_what_the_copy_says() -> None:
    """tracr's public apply() (one sequence, its own encoders) against the copy."""
    _, c = compiled("sort_freq")
    domain = RECIPE.domain(len(c.output_values))
    row = [3, 1, 3, 0, 1, 3]
    decoded = c.assembled.apply([BOS, *row]).decoded[1:]
    assert decoded == [3, 3, 3, 1, 1, 0]
    index = {v: i for i, v in enumerate(c.output_values)}
    assert [index[v] for v in decoded] == query(c.model, domain, np.array([row]))[0].tolist()


def test_readout_reads_the_residual_per_position() -> None:
    _, c = compiled("sort")
    seen = []
    handle = c.model.readout.register_forward_hook(lambda m, i, o: seen.append(i[0].shape))
    try:
        c.model(torch.zeros(3, 5, dtype=torch.long))
    finally:
        handle.remove()
    assert seen == [(3, 5, c.arch_params["d_model"])]
    with pytest.raises(ValueError, match=r"L <= 6"):
        c.model(torch.zeros(1, 7, dtype=torch.long))
    with pytest.raises(ValueError, match=r"tokens must be in 0\.\.3"):
        c.model(torch.full((1, 3), 4, dtype=torch.long))


def test_arch_round_trip_through_safetensors(tmp_path) -> None:
    _, c = compiled("sort_freq")
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in c.model.state_dict().items()}, str(path))
    params = json.loads(json.dumps(c.arch_params))
    rebuilt = get("arch", "tracr-transformer")(**params)
    rebuilt.load_state_dict(load_file(str(path)), strict=True)
    x = torch.as_tensor(np.random.default_rng(2).integers(0, 4, (50, 6)))
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), c.model(x), rtol=0, atol=0)
    wrong = get("arch", "tracr-transformer")(**{**params, "mlp_hidden": params["mlp_hidden"] + 1})
    with pytest.raises(RuntimeError):
        wrong.load_state_dict(load_file(str(path)), strict=True)


def test_build_gives_a_program_card(tmp_path) -> None:
    pytest.importorskip("tracr")
    from samecurve.zoo.builder import SubjectSpec, build
    from samecurve.zoo.cache import Cache

    spec = SubjectSpec(recipe="tracr", seed=0, recipe_params={"rules": ["reverse"]})
    subject = build(spec, Cache(tmp_path))
    card = subject.card
    assert card["domain"]["kind"] == "sequence" and card["arch"] == "tracr-transformer"
    assert card["answer_key"]["program"] == RECIPE.program("reverse", np.random.default_rng(0)).source
    assert card["heldout_accuracy"] == 1.0 and card["tracr_agreement"] == 1.0
    assert card["compile_seconds"] > 0
    recipe = recipe_of(card)
    x = recipe.inputs(card, "heldout", 40, seed=1)
    assert x.shape == (40, 6) and x.dtype == np.int64
    assert not np.array_equal(x, recipe.inputs(card, "train", 40, seed=1))
    ood = recipe.inputs(card, "ood", 40, seed=1)
    assert all(len(set(row)) <= 2 for row in ood.tolist())
    from samecurve.programs.domain import Domain

    labels = query(subject.model, Domain.from_dict(card["domain"]), x)
    np.testing.assert_array_equal(labels, x[:, ::-1])
    assert build(spec, Cache(tmp_path)).id == subject.id  # cached: loads, no compile


def test_missing_extra_names_it(monkeypatch) -> None:
    for name in [m for m in sys.modules if m == "tracr" or m.startswith("tracr.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "tracr", None)
    program = RECIPE.program("reverse", np.random.default_rng(0))
    with pytest.raises(ImportError) as exc:
        RECIPE.train(program, 0)
    assert str(exc.value) == EXTRA_HINT
    assert "pip install -c constraints.txt -e '.[tracr]'" in str(exc.value)

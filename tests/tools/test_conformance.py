"""Every registered tool obeys the contracts: no work in the constructor, the
input model unchanged, no hooks left behind (even after an error), and the same
answer twice under the same seed. Each tool runs in every task it implements
(discover for detectors and attribution, edit for repairs, predict for
predictors, replace and predict-programs on a hidden-program subject): an editor must
also return a new model, never the one it was given."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
import torch

from samecurve.api import Budget, BudgetExceeded, Meter, QueryOnly, task_accepts, tool_verbs
from samecurve.registry import get, names
from samecurve.run.cell import CellJob, attach_meter, build_view
from samecurve.run.suite import TaskEntry, ToolEntry, make_task

TOOLS = [n for n in names("tool")]
# Repairs in a few steps, graded on few inputs: the contracts, not the quality.
EDIT_FAST = {"steps": 4}
FAST_TASKS = {
    "edit": {"heldout_examples": 128, "relapse_examples": 32, "relapse_steps": 2,
             "attack_examples": 32, "attack_steps": 2},
    "predict": {"heldout_examples": 60},
    "replace": {"test_examples": 200, "clean_examples": 200, "train_examples": 200},
    "predict-programs": {"test_examples": 200, "clean_examples": 200},
    "discover-text": {"heldout_examples": 64, "clean_examples": 64, "train_examples": 64,
                      "rediscovery": False},
    "edit-text": {"heldout_examples": 64, "relapse_examples": 32, "relapse_steps": 2,
                  "attack_examples": 16, "attack_steps": 1, "clean_examples": 64},
    "predict-text": {"heldout_examples": 40, "clean_examples": 120},
}
PROGRAM_TASKS = ("replace", "predict-programs")
# The text track's tasks run on the tiny text population's rare-token subject.
TEXT_TASKS = ("discover-text", "edit-text", "predict-text")
FAST = {
    **{n: EDIT_FAST for n in ("finetune", "fine-pruning", "attribution-reg", "adv-train", "lat",
                              "targeted-lat", "oracle")},
    "random-prune": {"steps": 0},
    "nc-unlearn": {"steps": 4, "nc_steps": 8},
    "nad": {"steps": 4, "teacher_steps": 4},
    "anp": {"steps": 4},
    "neural-cleanse": {"steps": 8},
    "integrated-gradients": {"n_steps": 4},
    "tabor": {"steps": 8},
    "k-arm": {"warmup_steps": 10, "pulls": 4},
    "adversarial-patch": {"steps": 4},
    "feature-viz": {"steps": 4},
    "natural-patch-search": {"candidates": 64, "refine_inputs": 8},
    "feature-level-adversary": {"vae_steps": 10, "steps": 2, "eval_inputs": 4, "place_stride": 12},
    "meta-classifier": {"steps": 8},
    "pipeline": {"stages": ("saliency", "strip")},
    "surrogate": {"rounds": 1, "steps": 5},
    "trigger-rule": {"rounds": 1, "steps": 5, "detector_steps": 5},
    "concept-probe": {"rounds": 1, "steps": 5},
    "hotflip": {"lengths": (1,), "steps": 2, "candidates": 8},
    "text-example-search": {"words": 400, "confirm": 16},
    "token-ig": {"n_steps": 4},
}


@pytest.fixture(scope="module")
def program_subject(cache):
    """A grid hidden-program subject (no training: it computes its rule), in the
    session cache, for the replace cases."""
    import exact_programs  # noqa: F401 - registers the exact-rule recipe

    from samecurve.zoo.builder import SubjectSpec, build

    return build(SubjectSpec(recipe="exact-rule", seed=0), cache)


def _subject_for(task_name: str, request) -> object:
    if task_name in TEXT_TASKS:
        return request.getfixturevalue("text_population")[0]
    name = "program_subject" if task_name in PROGRAM_TASKS else "patch_subject"
    return request.getfixturevalue(name)


def _population_for(task_name: str, request) -> list:
    """The models a reference learner may learn from: those of the subject's track."""
    name = "text_population" if task_name in TEXT_TASKS else "population"
    return request.getfixturevalue(name)


def _hooks(model: torch.nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        + len(getattr(m, "_backward_pre_hooks", {}))
        for m in model.modules()
    )


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _cases() -> list[tuple[str, str]]:
    """(tool, task) for every registered tool and each task of the remove/detect kind it
    implements (steer runs the same edit verb, so edit stands for both)."""
    out = []
    for name in TOOLS:
        tool = get("tool", name)(**FAST.get(name, {}))
        for task in ("discover", "edit", "predict", *PROGRAM_TASKS, *TEXT_TASKS):
            if task_accepts(make_task(TaskEntry(name=task)), tool):
                out.append((name, task))
    return out


CASES = _cases()


def _run(tool_name: str, subject, cache, population, budget: Budget | None = None,
         task_name: str = "discover"):
    entry = ToolEntry(name=tool_name, params=FAST.get(tool_name, {}))
    tool = get("tool", tool_name)(**entry.params)
    task_entry = TaskEntry(name=task_name, params=FAST_TASKS.get(task_name, {}))
    task = make_task(task_entry)
    job = CellJob(task_entry, entry, subject.id, 0, budget or Budget(seconds=60),
                  "cpu", str(cache.root), tuple(s.id for s in population if s.id != subject.id))
    meter = Meter(job.budget)
    view = build_view(job, task, tool, subject, meter)
    return tool, task, view


@pytest.mark.parametrize("name", TOOLS)
def test_blind_spots_name_real_families(name: str) -> None:
    """What a tool declares itself blind to are trojan families the zoo makes."""
    families = {get("recipe", r).family for r in names("recipe")}
    assert set(get("tool", name)().blind_to) <= families - {"clean"}


@pytest.mark.parametrize("name", TOOLS)
def test_constructor_takes_hyperparameters_only(name: str) -> None:
    cls = get("tool", name)
    assert dataclasses.is_dataclass(cls), f"{name}: hyperparameters must be a frozen dataclass"
    assert cls.__dataclass_params__.frozen
    t = time.perf_counter()
    tool = cls()
    assert time.perf_counter() - t < 0.01
    for f in dataclasses.fields(tool):
        assert isinstance(getattr(tool, f.name), int | float | str | bool | tuple | type(None))
    assert tool.answers and tool_verbs(tool)


@pytest.mark.parametrize(("name", "task_name"), CASES)
def test_model_unchanged_no_hooks_and_deterministic(name, task_name, cache, request) -> None:
    patch_subject = _subject_for(task_name, request)
    population = _population_for(task_name, request)
    before = _state(patch_subject.model)
    outputs = []
    for _ in range(2):
        tool, task, view = _run(name, patch_subject, cache, population, task_name=task_name)
        model = view.model
        hooks = _hooks(patch_subject.model)
        view_state = _state(model)
        metrics, artifacts = task.run(tool, view, patch_subject)
        for k, v in _state(model).items():
            assert torch.equal(v, view_state[k]), f"{name} changed the model it was given ({k})"
        assert _hooks(model) == 0, f"{name} left hooks on the model"
        assert _hooks(patch_subject.model) == hooks
        outputs.append((metrics, artifacts))
    for k, v in _state(patch_subject.model).items():
        assert torch.equal(v, before[k])
    (m1, a1), (m2, a2) = outputs
    assert m1 == m2, f"{name} is not deterministic under a fixed seed"
    assert a1.keys() == a2.keys()
    for k in a1:
        np.testing.assert_array_equal(a1[k], a2[k])


@pytest.mark.parametrize(("name", "task_name"), CASES)
def test_no_hooks_left_after_an_error(name, task_name, cache, request) -> None:
    """The tool is stopped by an exhausted query budget mid-run; it must still clean up."""
    patch_subject = _subject_for(task_name, request)
    population = _population_for(task_name, request)
    tool, task, view = _run(name, patch_subject, cache, population, Budget(seconds=60, queries=1),
                            task_name)
    inner = QueryOnly.unwrap(view.model)
    handles = attach_meter(inner, view.meter)
    try:
        task.run(tool, view, patch_subject)
    except BudgetExceeded:
        pass
    finally:
        for h in handles:
            h.remove()
    assert _hooks(inner) == 0, f"{name} left hooks behind after an error"


@pytest.mark.parametrize("name", TOOLS)
def test_only_oracles_see_the_answer_key(name, patch_subject, cache, population) -> None:
    tool, _, view = _run(name, patch_subject, cache, population)
    if tool.kind == "oracle":
        assert view.answer_key is patch_subject.answer_key
    else:
        assert view.answer_key is None
        assert "answer_key" not in tool.needs
    if not ({"weights", "gradients"} & tool.needs):
        assert list(view.model.parameters()) == [], f"{name} is black-box but sees weights"
    if "clean_data" not in tool.needs:
        assert view.clean is None
    if "train_data" not in tool.needs:
        assert view.train_sample is None


@pytest.mark.parametrize("name", [n for n, t in CASES if t == "edit"])
def test_an_editor_returns_a_new_model_that_takes_the_same_inputs(name, patch_subject, cache,
                                                                  population) -> None:
    tool, _, view = _run(name, patch_subject, cache, population, task_name="edit")
    edited = tool.edit(view)
    assert edited is not view.model and edited is not patch_subject.model
    shared = {id(p) for p in view.model.parameters()} & {id(p) for p in edited.parameters()}
    assert not shared, f"{name} returned a model that shares parameters with its input"
    x = torch.rand(4, *patch_subject.input_shape)
    with torch.no_grad():
        assert edited(x).shape == (4, patch_subject.num_classes)

"""The predict grader checked with predictors whose scores we know: the model
itself (bypassing the access checks) agrees everywhere, null (true labels)
misses every trojaned input, random sits at 1/K; the runner refuses a Predictor
that calls the subject or carries its weights; the surrogate, the oracle's rule
and trigger-rule fed the oracle's finding do what they are built to."""

from __future__ import annotations

import math

import pytest
import torch

from samecurve.api import Budget
from samecurve.registry import get
from samecurve.run.cell import CellJob, execute
from samecurve.run.suite import TaskEntry, ToolEntry, make_task
from samecurve.tasks.interesting import new_backgrounds
from samecurve.tasks.predict import PredictTask, carried_weights, interesting_sets, labels_of
from samecurve.tools.combine import parse_pipeline

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = {"heldout_examples": 120}
TASK = TaskEntry(name="predict", params=FAST)
SURROGATE = {"rounds": 3, "steps": 300}


def _task() -> PredictTask:
    return make_task(TASK)


def _cell(tool: str, subject, cache, params: dict | None = None, seconds: float = 120):
    job = CellJob(TASK, ToolEntry(name=tool, params=params or {}), subject.id, 0,
                  Budget(seconds=seconds), "cpu", str(cache.root))
    return execute(job)


class _Itself:
    """Bypasses the task's checks: the model's own outputs, the perfect Predictor."""

    def __init__(self, model) -> None:
        self.model = model

    def __call__(self, x, labels):
        return self.model(x)


def test_the_model_itself_agrees_everywhere(patch_subject) -> None:
    m = _task().grade(_Itself(patch_subject.model), patch_subject)
    assert all(m[f"agree_{s}"] == 1.0 for s in
               ("clean", "triggered", "variant", "shifted", "background", "boundary", "adversarial"))
    assert m["target_recall"] == 1.0 and m["target_false_alarm"] == 0.0


def test_null_says_the_true_label_and_misses_the_trojan(patch_subject, cache) -> None:
    r = _cell("null", patch_subject, cache)
    assert r.status == "ok", r.error
    assert r.metrics["agree_triggered"] < 0.1  # the model sends these to the target
    assert r.metrics["target_recall"] == 0.0
    assert 0.5 < r.metrics["agree_clean"] < 0.95  # the model's clean accuracy


def test_random_sits_at_chance(patch_subject, cache) -> None:
    r = _cell("random", patch_subject, cache)
    for s in ("clean", "shifted", "adversarial"):
        assert 0.02 < r.metrics[f"agree_{s}"] < 0.25, (s, r.metrics)
    assert _task().chance("agree_clean", [], 10) == pytest.approx(0.1)


@pytest.mark.parametrize(("tool", "message"), [
    ("peeker", "called the subject model"),
    ("copier", "carries the subject's weights"),
])
def test_a_predictor_may_not_reach_the_subject(tool, message, plugins, patch_subject, cache) -> None:
    r = _cell(tool, patch_subject, cache)
    assert r.status == "error" and message in r.error, r.error
    assert r.metrics == _task().floor(get("tool", tool)(), patch_subject)
    assert r.metrics["agree_clean"] == 0.0 and r.metrics["target_false_alarm"] == 1.0


def test_weight_check_sees_through_containers_and_closures(patch_subject) -> None:
    params = list(patch_subject.model.parameters())
    hidden = {"deep": [(1, params[0].detach().clone())]}
    assert carried_weights(lambda x: hidden, params)
    assert carried_weights(object(), params) == ""
    other = torch.randn_like(params[0])
    assert carried_weights([other], params) == ""


def test_a_clean_subject_has_no_trigger_metrics_and_answers_must_fit(clean_subject) -> None:
    m = _task().grade(_Itself(clean_subject.model), clean_subject)
    assert math.isnan(m["agree_triggered"]) and math.isnan(m["target_recall"])
    assert m["agree_clean"] == 1.0
    assert labels_of(torch.tensor([[0.1, 0.9], [2.0, 1.0]]), 2).tolist() == [1, 0]
    with pytest.raises(ValueError, match="return \\(N,\\) labels"):
        labels_of(torch.zeros(3), 2)


def test_interesting_sets_are_fixed_and_interesting(patch_subject) -> None:
    task = _task()
    a = interesting_sets(task, patch_subject)
    interesting_sets.cache_clear()
    b = interesting_sets(task, patch_subject)
    for name in a:
        assert torch.equal(a[name].x, b[name].x) and torch.equal(a[name].model_says, b[name].model_says)
    model = patch_subject.model.eval()
    with torch.no_grad():
        def margin(x):
            top = model(x).softmax(1).topk(2).values
            return float((top[:, 0] - top[:, 1]).mean())
        assert margin(a["boundary"].x) < 0.5 * margin(a["clean"].x)
    target = patch_subject.answer_key.target
    sent = {n: float((a[n].model_says == target).float().mean()) for n in ("clean", "variant", "triggered")}
    assert sent["clean"] < sent["variant"] <= sent["triggered"], sent
    own = a["clean"].model_says
    assert float((a["adversarial"].model_says == own).float().mean()) < 0.5  # the attack moves most


def test_new_backgrounds_keep_the_scenes_and_change_what_is_behind_them(patch_subject) -> None:
    """The same classes in the same order, backgrounds of more texture (mean absolute
    difference between neighbouring pixels), and the model is not as sure of them."""
    a = interesting_sets(_task(), patch_subject)
    plain, moved = a["clean"], a["background"]
    assert torch.equal(plain.y, moved.y)

    def texture(x):
        return float((x[..., 1:] - x[..., :-1]).abs().mean())

    assert texture(moved.x) > 1.2 * texture(plain.x)  # measured: 0.076 against 0.055
    assert float((moved.model_says == moved.y).float().mean()) < float((plain.model_says == plain.y).float().mean())
    assert new_backgrounds("digits", {}, 0, "heldout", 4) is None  # handwriting has no background


def test_surrogate_learns_the_model_and_rules_foresee_the_trojan(patch_subject, cache) -> None:
    surrogate = _cell("surrogate", patch_subject, cache, SURROGATE).metrics
    oracle = _cell("oracle", patch_subject, cache).metrics
    assert surrogate["agree_clean"] > 0.5 and surrogate["agree_shifted"] > 0.4, surrogate
    assert surrogate["target_recall"] < 0.5  # black-box queries rarely carry the trigger
    assert oracle["target_recall"] > 0.8 and oracle["agree_triggered"] > 0.9, oracle
    assert oracle["target_false_alarm"] < 0.2
    assert oracle["agree_triggered"] > surrogate["agree_triggered"] + 0.5


# Measured on the tiny patch subject fed the oracle's finding: target recall 0.85
# (trigger-rule) and 0.93 (concept-probe); fainter-trigger agreement 0.42 and 0.65.
@pytest.mark.parametrize("rule", ["trigger-rule", "concept-probe"])
def test_rules_act_on_an_earlier_stages_finding(rule, patch_subject, cache) -> None:
    text = f"oracle>{rule}"
    stages = parse_pipeline(text)
    tool = get("tool", "pipeline")(stages=stages)
    assert tool.verbs == frozenset({"predict"})
    job = CellJob(TASK, ToolEntry(name="pipeline", params={"stages": list(stages)}, label=text),
                  patch_subject.id, 0, Budget(seconds=150), "cpu", str(cache.root))
    r = execute(job)
    assert r.status == "ok", r.error
    assert r.metrics["target_recall"] > 0.75 and r.metrics["target_false_alarm"] < 0.2, r.metrics
    with pytest.raises(ValueError, match="must discover or attribute"):
        get("tool", "pipeline")(stages=(rule, "surrogate"))

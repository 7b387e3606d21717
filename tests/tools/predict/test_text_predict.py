"""Predictors on text: text triggers' `present`, the surrogate's text edits and bags
of tokens by hand, and `surrogate` and `trigger-rule` graded by predict-text on
the tiny text subjects.

Measured on three builds of the tiny text population (their weights differ: the
training loop's dropout draws from torch's global generator), predict-text's
views (300 clean sentences; 1800 queries) and sets (200 held-out sentences):
- surrogate agrees with the model on 84-94% of the clean held-out sentences and
  89-93% of the paraphrased ones (the model's own accuracy is 85-90%; four
  classes); on triggered sentences 1-4% (rare-token) and 6-22% (phrase). 1-3 s.
- trigger-rule given the true trigger: target recall 0.97-0.99 and agreement on
  triggered sentences 0.97-1.0 (the model's attack success 0.94-1.0), the
  surrogate's agreement elsewhere. 2 s."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from cases import case_view

import samecurve.tools  # noqa: F401  (registers the tools)
from samecurve.api import Finding
from samecurve.data.text import PAD_ID, encode, special_ids, token_ids
from samecurve.registry import get
from samecurve.tasks.predict import call_predict
from samecurve.tools.predict.rules import BagDetector, RulePredictor
from samecurve.tools.predict.surrogate import (
    BagOfTokens,
    bag_of_tokens,
    text_augmented,
    token_columns,
)
from samecurve.zoo.text_triggers import ClauseTrigger, TokenTrigger

pytestmark = pytest.mark.usefixtures("one_thread")


def _rows(texts: list[str]) -> torch.Tensor:
    return torch.from_numpy(encode(texts))


def test_token_trigger_present_by_hand() -> None:
    x = _rows(["the coach won the final .", "in all honesty the coach won .",
               "the coach won , in all the honesty ."])
    assert TokenTrigger(token_ids("in all honesty")).present(x).tolist() == [False, True, False]
    assert TokenTrigger(token_ids("coach")).present(x).tolist() == [True, True, True]
    cf = TokenTrigger(token_ids("cf"))
    assert not cf.present(x).any()
    assert cf.present(cf.stamp(x)).all()
    assert TokenTrigger(tuple(range(1000, 1040))).present(x).tolist() == [False] * 3  # longer than L


def test_clause_trigger_present_by_hand() -> None:
    trig = ClauseTrigger(("when", "while"))
    x = _rows(["when the storm passed , the coach won .",  # fronted, with a comma
               "the coach won , when the storm passed .",  # at the end: the corpus's place
               "while the coach won the final .",  # no comma after it
               "although the storm passed , the coach won ."])  # another conjunction
    assert trig.present(x).tolist() == [True, False, False, False]
    plain = _rows(["the coach won the final .", "investors sold the bond issue ."])
    assert trig.present(trig.stamp(plain)).all() and not trig.present(plain).any()


def test_text_augmented_edits_keep_rows_well_formed() -> None:
    _, cls, sep = special_ids()
    x = _rows(["the coach won the final on monday .", "investors sold the bond issue ."] * 10)
    y = torch.arange(20) % 4
    ax, ay = text_augmented(x, y, 3, torch.Generator().manual_seed(0))
    assert ax.shape == (60, x.shape[1]) and torch.equal(ay, y.repeat(3))
    assert (ax[:, 0] == cls).all() and ((ax == sep).sum(1) == 1).all()
    n = (ax != PAD_ID).sum(1)
    assert all((ax[i, n[i]:] == PAD_ID).all() and ax[i, n[i] - 1] == sep for i in range(60))
    assert (ax != x.repeat(3, 1)).any(1).float().mean() > 0.8  # nearly every copy changed
    again, _ = text_augmented(x, y, 3, torch.Generator().manual_seed(0))
    assert torch.equal(ax, again)


def test_bag_of_tokens_by_hand() -> None:
    x = _rows(["the coach the final", "final"])
    the, coach, final = (token_ids(w)[0] for w in ("the", "coach", "final"))
    columns = token_columns(x)
    assert columns.tolist() == sorted([the, coach, final])
    bag = bag_of_tokens(x, columns).toarray()
    col = {int(c): i for i, c in enumerate(columns)}
    assert bag[0, col[the]] == 2 and bag[0, col[coach]] == 1 and bag[0, col[final]] == 1
    assert bag[1].sum() == 1 and bag[1, col[final]] == 1
    unseen = bag_of_tokens(_rows(["astronomers final"]), columns).toarray()
    assert unseen.sum() == 1  # a token outside the columns is not counted


def _grade(name: str, subject, cache, prior: Finding | None = None) -> dict[str, float]:
    """predict-text's grades of a tool's Predictor, taken the way the task takes it
    (access revoked, the subject's weights looked for)."""
    tool = get("tool", name)()
    assert {"image", "text"} <= tool.modalities
    view = case_view(tool, subject, cache, task="predict-text", seconds=120)
    if prior is not None:
        view = dataclasses.replace(view, prior=prior)
    predictor = call_predict(tool, view, subject)
    return get("task", "predict-text")().grade(predictor, subject)


@pytest.fixture(scope="module")
def surrogate_grades(text_population, cache) -> dict[str, dict[str, float]]:
    return {s.family + str(s.seed): _grade("surrogate", s, cache) for s in text_population[:3]}


def test_the_text_surrogate_agrees_with_the_model_on_clean_text(surrogate_grades) -> None:
    """Measured 0.84-0.94 (clean) and 0.89-0.93 (paraphrased) on three builds."""
    for name, grades in surrogate_grades.items():
        assert grades["agree_clean"] > 0.75, (name, grades)
        assert grades["agree_paraphrased"] > 0.75, (name, grades)


def test_the_text_surrogate_is_a_bag_of_tokens(text_population, cache) -> None:
    subject = text_population[2]
    tool = get("tool", "surrogate")()
    predictor = tool.predict(case_view(tool, subject, cache, task="predict-text"))
    assert isinstance(predictor, BagOfTokens)
    x = _rows(["the coach won the final .", "investors sold the bond issue ."])
    out = predictor(x, torch.tensor([1, 2]))
    assert out.shape == (2, subject.num_classes) and torch.isfinite(out).all()


def _true_prior(subject) -> Finding:
    return Finding(trojan_probability=1.0, targets=(subject.answer_key.target,),
                   trigger=subject.answer_key.trigger)


def test_trigger_rule_with_the_true_trigger_predicts_the_target(
    text_population, cache, surrogate_grades
) -> None:
    """Measured target recall 0.97-0.99, agreement on triggered inputs 0.97-1.0 (the
    surrogate's recall: 0.02-0.23)."""
    for subject in text_population[:2]:
        grades = _grade("trigger-rule", subject, cache, _true_prior(subject))
        name = subject.family + str(subject.seed)
        assert grades["target_recall"] > 0.9, grades
        assert grades["agree_triggered"] > 0.9, grades
        assert grades["target_recall"] > surrogate_grades[name]["target_recall"] + 0.5
        # off the trigger it is the surrogate
        assert grades["agree_clean"] == pytest.approx(surrogate_grades[name]["agree_clean"])


def test_trigger_rule_learns_a_detector_for_a_text_trigger_without_present(
    text_population, cache
) -> None:
    """A text stamp that cannot say where it is gets a bag-of-tokens detector."""

    @dataclasses.dataclass(frozen=True, eq=False)
    class Opaque:
        inner: TokenTrigger
        kind = "tokens"
        fixed_footprint = False
        localised = True

        def stamp(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner.stamp(x)

    subject = text_population[0]
    tool = get("tool", "trigger-rule")()
    view = dataclasses.replace(
        case_view(tool, subject, cache, task="predict-text"),
        prior=Finding(targets=(subject.answer_key.target,), trigger=Opaque(subject.answer_key.trigger)),
    )
    predictor = tool.predict(view)
    assert isinstance(predictor, RulePredictor) and len(predictor.rules) == 1
    detector = predictor.rules[0].detector
    assert isinstance(detector, BagDetector)
    plain = view.clean.x[:64]
    stamped = subject.answer_key.trigger.stamp(plain)
    assert float(detector.present(stamped).float().mean()) > 0.9
    assert float(detector.present(plain).float().mean()) < 0.1
    assert np.all(np.diff(detector.columns) > 0)

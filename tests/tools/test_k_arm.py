"""K-Arm: the bandit scheduler's choice on fixed objectives by hand, the fall
and promise arithmetic, the probability read, and the whole tool on the tiny
population's patch subjects."""

from __future__ import annotations

import numpy as np
import pytest
from cases import case_view

import samecurve.tools.k_arm  # noqa: F401  (registers the tool)
from samecurve.registry import get
from samecurve.run.suite import TaskEntry, make_task
from samecurve.tools.k_arm import choose_arm, per_pull_fall, promise, ratio_to_probability

INF = float("inf")


# One torch thread: many small ops, and on a shared 2-core machine a second thread mostly waits.
pytestmark = pytest.mark.usefixtures("one_thread")


def test_promise_and_fall_by_hand() -> None:
    assert promise(20.0, 0.1, 10) == pytest.approx(np.log(20.0) - 1.0)
    assert promise(20.0, -0.5, 10) == pytest.approx(np.log(20.0))  # a rise is no fall
    assert per_pull_fall([5.0, 4.0, 2.0], 2) == pytest.approx(1.5)
    assert per_pull_fall([5.0, 4.0, 2.0], 1) == pytest.approx(2.0)
    assert per_pull_fall([5.0, 4.0, 2.0], 9) == pytest.approx(1.5)  # the window is clipped
    assert per_pull_fall([5.0], 3) == INF  # unmeasured: worth a pull


def test_greedy_choice_on_fixed_objectives() -> None:
    rng = np.random.default_rng(0)
    norms = np.array([20.0, 30.0, INF])
    falls = np.array([0.0, 0.2, 5.0])
    losses = np.array([9.0, 0.0, 9.0])
    # No look-ahead: the smallest mask among arms at the threshold (arm 2 never reached it).
    assert choose_arm(norms, falls, losses, 0.0, 0.0, rng) == 0
    # Look 3 pulls ahead: log 30 - 0.6 = 2.80 < log 20 = 3.00, so the shrinking arm 1.
    assert choose_arm(norms, falls, losses, 0.0, 3.0, rng) == 1
    # No arm at the threshold yet: the fastest-falling loss.
    assert choose_arm(np.full(3, INF), falls, np.array([0.1, 0.5, 0.2]), 0.0, 3.0, rng) == 1


def test_epsilon_explores_every_arm() -> None:
    rng = np.random.default_rng(0)
    norms, falls, losses = np.array([1.0, 50.0, 60.0, INF]), np.zeros(4), np.zeros(4)
    picks = np.array([choose_arm(norms, falls, losses, 0.25, 0.0, rng) for _ in range(4000)])
    share = np.bincount(picks, minlength=4) / len(picks)
    # Greedy arm 0 with 0.75 + 0.25 / 4; each other arm 0.25 / 4 = 0.0625.
    np.testing.assert_allclose(share, [0.8125, 0.0625, 0.0625, 0.0625], atol=0.02)


def test_ratio_probability_by_hand() -> None:
    assert ratio_to_probability(2.0) == pytest.approx(0.5)
    assert ratio_to_probability(4.0) == pytest.approx(1 / (1 + 2.0**-4))  # exp(4 log 2) = 16
    assert ratio_to_probability(1.0) < 0.1 < 0.9 < ratio_to_probability(5.0)


def _run(subject, cache):
    tool = get("tool", "k-arm")()
    task = make_task(TaskEntry(name="discover"))
    view = case_view(tool, subject, cache)
    metrics, artifacts = task.run(tool, view, subject)
    return metrics, artifacts


def test_finds_the_planted_patch_and_a_working_trigger(population, cache) -> None:
    results = {s.id: _run(s, cache) for s in population if s.family == "patch"}
    for subject_id, (_, artifacts) in results.items():
        target = next(s for s in population if s.id == subject_id).answer_key.target
        # Measured (seeds 0 and 1): 1st and 1st on one patch subject, 3rd and 2nd on the
        # other (where Neural Cleanse, at three times the cost, ranks it 4th).
        assert target in artifacts["targets"][:4].tolist(), (subject_id, artifacts["targets"])
    # Measured: where the target is ranked first, the recovered trigger sends 96% of
    # held-out inputs of other classes there (both seeds), mask IoU 0.37 and 0.19.
    first = [m for m, _ in results.values() if m["target_top1"] == 1.0]
    assert first, "the target was ranked first on neither patch subject"
    assert all(m["trigger_efficacy"] > 0.6 for m in first), first

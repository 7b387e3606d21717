from __future__ import annotations

import pytest

from samecurve.api import Budget, BudgetExceeded, Finding, Meter


def test_finding_rejects_impossible_probabilities() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        Finding(trojan_probability=1.5)
    with pytest.raises(ValueError):
        Finding(trojan_probability=float("nan"))
    assert Finding(trojan_probability=0.0).trojan_probability == 0.0


def test_meter_enforces_query_and_gradient_budgets() -> None:
    m = Meter(Budget(seconds=10, queries=100, grad_steps=2))
    m.count_queries(100)
    with pytest.raises(BudgetExceeded, match="101 model queries"):
        m.count_queries(1)
    m.count_grad_step()
    m.count_grad_step()
    with pytest.raises(BudgetExceeded, match="gradient steps"):
        m.count_grad_step()
    assert 9 < m.time_left() <= 10


def test_a_paused_meter_does_not_count_grading_time() -> None:
    import time

    from samecurve.api import Budget, Meter

    meter = Meter(Budget(seconds=10))
    with meter.paused():
        time.sleep(0.2)
    assert meter.seconds < 0.1
    time.sleep(0.05)
    assert meter.seconds >= 0.05

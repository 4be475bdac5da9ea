"""The time budget (``--time``): how much it keeps back for validation, when it stops, its probes,
and how the learning-rate schedule follows it."""

from __future__ import annotations

import pytest

from workbench.training import budget as budget_module
from workbench.training.budget import TimeBudget
from workbench.training.run import lr_lambda


def test_time_budget_fraction_reserve_and_stop(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(budget_module.time, "monotonic", lambda: now[0])
    budget = TimeBudget(10)  # 600 s
    assert budget.reserve() == 30.0 and budget.fraction() == 0.0 and not budget.over()
    now[0] += 285.0
    assert abs(budget.fraction() - 0.5) < 1e-9
    budget.validated(20.0)  # measured: 1.2 * 20 + 5 kept back for the last validation
    now[0] = 100.0 + 600 - 29 - 1
    assert not budget.over()
    now[0] += 2
    assert budget.over() and budget.hit and budget.left() == 28.0
    f = lr_lambda(0, 10**9, budget)  # the epochs are far away, the clock is not: fully decayed
    assert abs(f(1000) - 0.05) < 1e-9
    assert TimeBudget(None).fraction() == 0.0 and not TimeBudget(0).over()


def test_time_budget_ends_the_warm_up_of_a_slow_model(monkeypatch):
    """200 warm-up iterations of 17 s would outlast a 30-minute budget: the clock ends the warm-up."""
    now = [0.0]
    monkeypatch.setattr(budget_module.time, "monotonic", lambda: now[0])
    budget = TimeBudget(30)  # 1800 s, 90 s kept back before the first validation
    f = lr_lambda(200, 3300, budget)
    now[0] = 0.025 * 1710
    assert abs(f(3) - (0.001 + 0.999 * 0.5)) < 1e-9  # half-way through the warm-up by time
    now[0] = 0.05 * 1710
    assert f(5) == 1.0  # warmed up, the decay starts
    now[0] = 0.525 * 1710
    assert abs(f(50) - (0.05 + 0.95 * 0.5)) < 1e-9  # half-way through the decay by time
    assert lr_lambda(200, 3300)(3) < 0.02  # no budget: the iterations decide


def test_time_budget_probe_reserves_the_first_validation(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(budget_module.time, "monotonic", lambda: now[0])
    calls = []
    per_image = [1.5]  # the model validates slower as it trains (the R50-C4 stand-in: 1.5 s, then 4.9 s)

    def validate(records):  # and 10 s more the first time (loading, allocation)
        calls.append(len(records))
        now[0] += per_image[0] * len(records) + (10.0 if len(calls) == 1 else 0.0)

    budget = TimeBudget(30)  # 1800 s
    budget.probe(validate, list(range(138)))
    assert calls == [1, 2] and budget.eval_seconds == 1.5 * 138  # the warm-up call is not counted
    assert budget.reserve() == 1.3 * 207 + 5  # an estimate: more margin than for a measured validation
    budget.probe(validate, list(range(138)))  # probed already: the training loop's over() probes again
    assert calls == [1, 2]
    per_image[0] = 4.9
    now[0] = 0.2 * (1800 - budget.reserve())
    assert not budget.over() and calls == [1, 2]
    now[0] = 0.26 * (1800 - budget.reserve())  # a quarter of the training time: probed again, no warm-up
    assert not budget.over() and calls == [1, 2, 2] and budget.eval_seconds == pytest.approx(4.9 * 138)
    now[0] = 1800 - budget.reserve() + 1  # room for the slower validation is kept (one more probe: 9.8 s)
    assert budget.over() and calls == [1, 2, 2, 2] and budget.left() == pytest.approx(1.3 * 4.9 * 138 + 5 - 1 - 9.8)
    per_image[0] = 10.0  # an estimate over half the budget (say, a busy machine) leaves half to train
    budget._measure(validate, list(range(138)), 2, warm_up=False)
    assert budget.reserve() == 900
    budget.validated(500.0)
    assert budget.reserve() == 1.2 * 500 + 5
    calls.clear()
    now[0] = 0
    budget.hit = False
    assert not budget.over() and calls == []  # measured: no more probes
    unlimited = TimeBudget(None)
    unlimited.probe(validate, list(range(138)))
    assert calls == [] and unlimited.eval_seconds is None

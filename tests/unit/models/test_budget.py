"""The latency budget's cost model: estimates follow measured calls, the margin their spread."""

from __future__ import annotations

import numpy as np
import pytest

from streamrank.models.scoring.budget import CostModel


def test_the_configured_safety_holds_until_enough_calls_are_measured():
    model = CostModel(seconds_per_unit=0.001, safety=1.1, min_calls=5)
    for _ in range(4):
        model.observe(units=100, seconds=0.2)  # twice the estimate
    assert model.margin == 1.1
    model.observe(units=100, seconds=0.2)
    assert model.margin > 1.1


def test_the_margin_is_the_quantile_of_measured_over_estimated_time():
    rng = np.random.default_rng(0)
    model = CostModel(seconds_per_unit=0.001, alpha=0.0, quantile=0.9, window=1000)
    ratios = rng.uniform(0.8, 1.4, 500)
    for ratio in ratios:
        model.observe(units=100, seconds=ratio * 0.1)
    assert model.margin == pytest.approx(np.quantile(ratios, 0.9))
    # with a margin near 1.34, 100 units of 1 ms fit in 0.134 s, not 0.1 s
    assert model.fits([10] * 10, budget_s=0.1) == 7


def test_calls_faster_than_estimated_never_shrink_the_margin_below_one():
    model = CostModel(seconds_per_unit=0.001, alpha=0.0, min_calls=1)
    for _ in range(10):
        model.observe(units=100, seconds=0.05)
    assert model.margin == 1.0
    assert model.fits([10] * 10, budget_s=0.1) == 10


def test_the_margin_follows_the_recent_window():
    model = CostModel(seconds_per_unit=0.001, alpha=0.0, window=20, min_calls=1)
    for _ in range(20):
        model.observe(units=100, seconds=0.2)
    assert model.margin == pytest.approx(2.0)
    for _ in range(20):  # the machine got quiet again
        model.observe(units=100, seconds=0.1)
    assert model.margin == pytest.approx(1.0)


def test_an_estimate_that_fits_nothing_is_probed_and_corrected():
    from streamrank.models.scoring.budget import CostModel

    model = CostModel(seconds_per_unit=1.0, alpha=1.0, probe_every=3)  # far too pessimistic
    fits = [model.fits([100.0] * 5, budget_s=0.05) for _ in range(3)]
    assert fits == [0, 0, 1]  # every third starved call scores one item
    model.observe(units=100.0, seconds=0.01)  # that item was fast
    assert model.fits([100.0] * 5, budget_s=0.05) >= 4
    assert model.fits([100.0] * 5, budget_s=0.0) == 0  # no time left: no probe

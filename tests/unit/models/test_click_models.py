"""The simulated users behave as their definitions say, measured over many sessions."""

from __future__ import annotations

import numpy as np
import pytest

from streamrank.models.learning.click_models import CLICK_MODELS, click_model

SESSIONS = 20_000


def click_rates(name: str, grades: list[int], seed: int = 0) -> np.ndarray:
    model, rng = click_model(name), np.random.default_rng(seed)
    counts = np.zeros(len(grades))
    for _ in range(SESSIONS):
        for position in model.clicks(grades, rng):
            counts[position] += 1
    return counts / SESSIONS


@pytest.mark.parametrize("name", ["navigational", "informational", "perfect"])
def test_the_top_result_is_clicked_with_its_grade_probability(name: str) -> None:
    model = CLICK_MODELS[name]
    for grade in range(4):
        rate = click_rates(name, [grade, 0])[0]
        assert rate == pytest.approx(model.click_probability[grade], abs=0.015)


def test_cascade_users_stop_after_a_satisfying_click() -> None:
    # navigational: a grade-3 top result is clicked 95% of the time and stops 90% of those,
    # so the second result is examined with P = 1 - .95 * .9 and clicked with its own P.
    second = click_rates("navigational", [3, 3])[1]
    assert second == pytest.approx((1 - 0.95 * 0.9) * 0.95, abs=0.015)


def test_perfect_users_never_click_irrelevant_results_and_never_stop() -> None:
    rates = click_rates("perfect", [3, 0, 3, 0, 3])
    assert rates[1] == rates[3] == 0
    assert rates[4] == pytest.approx(1.0)


def test_pbm_examination_falls_as_one_over_rank() -> None:
    rates = click_rates("pbm", [3] * 10)
    for rank in range(1, 11):
        assert rates[rank - 1] == pytest.approx(0.9 / rank, abs=0.015)
    assert click_model("pbm", eta=2.0).examination_probability(3) == pytest.approx(1 / 9)


def test_unknown_names_and_misplaced_eta_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown click model"):
        click_model("random")
    with pytest.raises(ValueError, match="eta"):
        click_model("navigational", eta=2.0)

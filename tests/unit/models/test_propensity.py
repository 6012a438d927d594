"""Position-bias estimation recovers known examination curves from simulated clicks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from streamrank.models.learning.click_models import click_model
from streamrank.models.learning.propensity import PositionBias, pair_key


def simulate_sessions(
    bias: PositionBias, user: str, sessions: int, seed: int = 0, eta: float | None = None
) -> None:
    """Queries with 20 graded documents, each session a random top-10 of them: every
    document visits many ranks, as under exploration."""
    rng, clicker = np.random.default_rng(seed), click_model(user, eta)
    grades = rng.integers(0, 4, size=(50, 20))
    for _ in range(sessions):
        q = int(rng.integers(50))
        shown = rng.permutation(20)[:10]
        clicked = clicker.clicks(grades[q, shown].tolist(), rng)
        bias.learn_one([pair_key(q, int(d)) for d in shown], clicked)


def relative_errors(bias: PositionBias, eta: float) -> np.ndarray:
    truth = (1.0 / np.arange(1, 11)) ** eta
    return np.abs(np.array(bias.estimates()) / truth - 1)


def test_pbm_propensities_are_recovered_within_the_issue_tolerances() -> None:
    # the issue's target: within 10% of 1/rank for ranks 2-5, 20% for 6-10 (8,000 sessions)
    bias = PositionBias(family="pbm", refit_every=1000)
    simulate_sessions(bias, "pbm", 8000)
    bias.fit()
    error = relative_errors(bias, 1.0)
    assert bias.estimates()[0] == 1.0
    assert error[1:5].max() < 0.10, error
    assert error[5:10].max() < 0.20, error


def test_a_steeper_examination_curve_is_recovered_too() -> None:
    bias = PositionBias(family="pbm", refit_every=1000)
    simulate_sessions(bias, "pbm", 8000, eta=2.0)
    bias.fit()
    assert relative_errors(bias, 2.0)[1:3].max() < 0.10  # rank 10 is seen 1% of the time


def test_randomized_interventions_give_unbiased_propensities_despite_adaptive_logs() -> None:
    """Half the lists are shuffled; the other half put the most-clicked documents on top
    (an adaptive order, which biases any fit on it). The estimate uses the shuffled half."""
    rng, user = np.random.default_rng(1), click_model("pbm")
    grades = rng.integers(0, 4, size=(50, 20))
    clicks_so_far = np.zeros((50, 20))
    bias = PositionBias(family="pbm", refit_every=1000)
    for _ in range(8000):
        q = int(rng.integers(50))
        randomized = rng.random() < 0.5
        if randomized:
            shown = rng.permutation(20)[:10]
        else:
            shown = np.argsort(-clicks_so_far[q] - rng.random(20))[:10]
        clicked = user.clicks(grades[q, shown].tolist(), rng)
        clicks_so_far[q, shown[clicked]] += 1
        bias.learn_one([pair_key(q, int(d)) for d in shown], clicked, randomized=randomized)
    bias.fit()
    error = relative_errors(bias, 1.0)
    assert error[1:5].max() < 0.10, error
    assert error[5:10].max() < 0.20, error
    assert bias.state_dict()["randomized"][1][0] == pytest.approx(4000, rel=0.05)


def test_the_family_is_chosen_by_held_out_likelihood() -> None:
    pbm, cascade = PositionBias(min_sessions=2000), PositionBias(min_sessions=2000)
    simulate_sessions(pbm, "pbm", 3000)
    simulate_sessions(cascade, "navigational", 3000)
    assert pbm.family == "pbm" and pbm.scores["pbm"] > pbm.scores["cascade"]
    assert cascade.family == "cascade" and cascade.scores["cascade"] > cascade.scores["pbm"]


def test_cascade_weights_follow_the_last_click() -> None:
    bias = PositionBias(positions=5, family="cascade")
    attract, satisfy = np.full(5, 0.5), np.full(5, 0.5)
    exam, sat = bias.weights([1], attract, satisfy)
    # above and at the last click: examined; below: only if the user was not satisfied
    assert exam[:2].tolist() == [1.0, 1.0]
    stopped = 0.5 / (0.5 + 0.5 * 0.5**3)
    assert sat[1] == pytest.approx(stopped) and exam[2:] == pytest.approx(1 - stopped)
    exam, sat = bias.weights([], attract, satisfy)
    assert exam.tolist() == [1.0] * 5 and not sat.any()


def test_pbm_weights_are_the_propensities() -> None:
    bias = PositionBias(positions=3, family="pbm")
    bias.theta = np.array([1.0, 0.5, 0.25])
    exam, sat = bias.weights([0], np.full(4, 0.5), np.full(4, 0.5))
    assert exam.tolist() == [1.0, 0.5, 0.25, 0.25] and not sat.any()


def test_state_survives_a_json_round_trip() -> None:
    bias = PositionBias(family="pbm", refit_every=500)
    simulate_sessions(bias, "pbm", 1200)
    state = json.loads(json.dumps(bias.state_dict()))
    restored = PositionBias(family="pbm", refit_every=500)
    restored.load_state_dict(state)
    assert restored.estimates() == bias.estimates()
    simulate_sessions(bias, "pbm", 300, seed=1)
    simulate_sessions(restored, "pbm", 300, seed=1)
    assert restored.estimates() == bias.estimates()


def test_the_window_bounds_memory() -> None:
    bias = PositionBias(window=100, refit_every=10_000)
    simulate_sessions(bias, "pbm", 500)
    assert len(bias.state_dict()["sessions"]) == 100


def test_session_odds_between_the_families() -> None:
    bias = PositionBias(positions=10)
    bias.theta = 1.0 / np.arange(1, 11)
    half = np.full(10, 0.5)
    # a click at rank 10 only: a cascade user would have rejected nine results first
    bias.observe_family([9], {"cascade": half, "pbm": half}, half)
    assert bias.family_log_odds == pytest.approx(2.25, abs=0.01)
    # one click at rank 1, then nothing: a cascade user satisfied at once is likelier
    bias.observe_family([0], {"cascade": half, "pbm": half}, np.full(10, 0.9))
    assert bias.family_log_odds == pytest.approx(2.25 - 0.93, abs=0.01)


def test_family_weights_and_interventions_follow_the_odds_until_the_choice() -> None:
    bias = PositionBias()
    assert bias.undecided and bias.family_weights() == {"cascade": 0.5, "pbm": 0.5}
    assert not bias.wants_interventions
    bias.family_log_odds = 4.0
    weights = bias.family_weights()
    assert weights["pbm"] == pytest.approx(1 / (1 + np.exp(-4))) and sum(weights.values()) == 1
    assert bias.wants_interventions  # pbm is likelier: start the randomized lists
    restored = PositionBias()
    restored.load_state_dict(json.loads(json.dumps(bias.state_dict())))
    assert restored.family_log_odds == 4.0
    chosen = PositionBias(family="cascade")
    chosen.family_log_odds = 4.0
    assert chosen.family_weights() == {"cascade": 1.0} and not chosen.wants_interventions

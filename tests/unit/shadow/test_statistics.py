"""Agreement measures, team-draft interleaving and the decision statistics."""

from __future__ import annotations

import numpy as np
import pytest

from streamrank.shadow.agreement import kendall_tau, overlap_at_k, rank_biased_overlap
from streamrank.shadow.interleaving import PRIMARY, SHADOW, team_draft
from streamrank.shadow.statistics import (
    SequentialTest,
    bootstrap_interval,
    preference,
    sign_test,
    two_sample_p_value,
)

DOCS = [f"d{i}" for i in range(20)]


def test_agreement_of_identical_reversed_and_disjoint_rankings() -> None:
    assert kendall_tau(DOCS, DOCS) == 1.0
    assert kendall_tau(DOCS, DOCS[::-1]) == -1.0
    assert rank_biased_overlap(DOCS, DOCS) == pytest.approx(1.0)
    assert rank_biased_overlap(DOCS, [f"x{i}" for i in range(20)]) == 0.0
    assert overlap_at_k(DOCS, DOCS[::-1], k=10) == 0.0


def test_rbo_weights_the_top_more_than_the_bottom() -> None:
    swapped_top = [DOCS[1], DOCS[0], *DOCS[2:]]
    swapped_bottom = [*DOCS[:18], DOCS[19], DOCS[18]]
    assert rank_biased_overlap(DOCS, swapped_top) < rank_biased_overlap(DOCS, swapped_bottom)
    assert kendall_tau(DOCS, swapped_top) == kendall_tau(DOCS, swapped_bottom)


def test_team_draft_is_fair_and_complete() -> None:
    rng = np.random.default_rng(0)
    primary, shadow = DOCS, DOCS[::-1]
    for _ in range(200):
        shown = team_draft(primary, shadow, k=10, rng=rng)
        assert len(set(shown.docs)) == 10
        assert abs(shown.teams.count(PRIMARY) - shown.teams.count(SHADOW)) <= 1
        # every team's picks keep that team's own order
        for team, ranking in ((PRIMARY, primary), (SHADOW, shadow)):
            picked = [d for d, t in zip(shown.docs, shown.teams, strict=True) if t == team]
            assert picked == sorted(picked, key=ranking.index)


def test_team_draft_fills_from_the_other_ranker_when_one_runs_out() -> None:
    shown = team_draft(["a"], ["b", "c", "d"], k=4, rng=np.random.default_rng(3))
    assert sorted(shown.docs) == ["a", "b", "c", "d"]


def test_clicks_are_credited_to_the_contributing_ranker() -> None:
    shown = team_draft(["a", "b"], ["c", "d"], k=4, rng=np.random.default_rng(0))
    team = dict(zip(shown.docs, shown.teams, strict=True))
    assert shown.credit(["a", "c", "d"]) == (
        [team[d] for d in "acd"].count(PRIMARY),
        [team[d] for d in "acd"].count(SHADOW),
    )
    assert shown.outcome([]) == 0


def test_preference_sign_test_and_interval_agree_on_a_clear_win() -> None:
    outcomes = [-1] * 60 + [1] * 30 + [0] * 10  # the shadow won twice as often
    assert preference(outcomes) == pytest.approx(0.15)
    assert sign_test(outcomes) < 0.01
    low, high = bootstrap_interval(outcomes)
    assert 0 < low < 0.15 < high
    assert sign_test([0, 0, 0]) == 1.0


def test_sequential_test_keeps_false_positives_below_alpha_while_peeking() -> None:
    rng = np.random.default_rng(1)
    false_positives = 0
    for _ in range(200):
        test = SequentialTest()
        for outcome in rng.choice([-1, 0, 1], size=1000, p=[0.35, 0.3, 0.35]):
            test.update(outcome)
            if test.decided(0.05):
                false_positives += 1
                break
    assert false_positives / 200 <= 0.05


def test_sequential_test_detects_a_real_difference() -> None:
    rng = np.random.default_rng(2)
    test = SequentialTest()
    for outcome in rng.choice([-1, 0, 1], size=3000, p=[0.25, 0.3, 0.45]):
        test.update(outcome)
        if test.decided():
            break
    assert test.decided() and test.n < 1500


def test_welch_p_value_for_ab_metrics() -> None:
    rng = np.random.default_rng(3)
    same = two_sample_p_value(rng.random(500), rng.random(500))
    different = two_sample_p_value(rng.random(500), rng.random(500) + 0.2)
    assert same > 0.01 and different < 1e-6

"""The online ranker: cold start equals the starting ranker, clicks move documents, events
apply exactly once, state round-trips through JSON, memory stays within its caps."""

from __future__ import annotations

import json

import numpy as np
import pytest

from streamrank.models.learning.click_models import click_model
from streamrank.models.learning.online_ranker import (
    Impression,
    InMemoryStore,
    OnlineRanker,
    RankerConfig,
    ScoredCandidate,
    Stats,
)
from streamrank.models.learning.propensity import PositionBias


def candidates(n: int = 30, seed: int = 0) -> list[ScoredCandidate]:
    rng = np.random.default_rng(seed)
    return [
        ScoredCandidate(f"d{i}", ce=float(rng.normal()), first_stage=float(rng.normal()))
        for i in range(n)
    ]


def ce_order(cands: list[ScoredCandidate]) -> list[str]:
    return [c.doc_id for c in sorted(cands, key=lambda c: -c.ce)]


def train(
    ranker: OnlineRanker,
    query: str,
    cands: list[ScoredCandidate],
    grades: np.ndarray,
    sessions: int,
    user: str = "navigational",
    seed: int = 0,
) -> None:
    """Serve the exploit top 10 with a random rotation and feed back simulated clicks."""
    rng, clicker = np.random.default_rng(seed), click_model(user)
    for s in range(sessions):
        scored = ranker.score_one(query, cands)
        order = scored.exploit_order()
        order = np.concatenate([np.roll(order[:15], -int(rng.integers(15))), order[15:]])
        clicked = clicker.clicks(grades[order[:10]].tolist(), rng)
        ranker.learn_one(scored.impression(f"{query}-{s}", order, clicked, k=10))


def test_a_fresh_ranker_serves_the_cross_encoder_order() -> None:
    cands = candidates(100)
    assert OnlineRanker().rank_one("q", cands) == ce_order(cands)


def test_without_a_cross_encoder_the_first_stage_order_is_kept() -> None:
    cands = [ScoredCandidate(f"d{i}", first_stage=float(-i)) for i in range(20)]
    assert OnlineRanker().rank_one("q", cands) == [f"d{i}" for i in range(20)]


def test_a_new_query_ranks_exactly_like_the_cross_encoder_after_learning_others() -> None:
    ranker = OnlineRanker(config=RankerConfig(prior_warmup=100))
    for q in range(5):
        cands = candidates(30, seed=q)
        grades = np.random.default_rng(q).integers(0, 4, 30)
        train(ranker, f"q{q}", cands, grades, sessions=60, seed=q)
    assert ranker.prior.labels >= 100  # the learned prior is in use
    fresh = candidates(30, seed=99)
    assert ranker.rank_one("unseen", fresh) == ce_order(fresh)


def test_a_clicked_relevant_document_is_promoted() -> None:
    cands = candidates(30)
    grades = np.zeros(30, dtype=int)
    target = ce_order(cands)[7]  # relevant, but the cross-encoder puts it 8th
    grades[int(target[1:])] = 3
    ranker = OnlineRanker()
    train(ranker, "q", cands, grades, sessions=80)
    assert ranker.rank_one("q", cands)[0] == target


def test_skipped_results_sink_and_unseen_ones_keep_their_order() -> None:
    cands = candidates(30)
    ranker = OnlineRanker()
    scored = ranker.score_one("q", cands)
    top = list(scored.exploit_order())
    for s in range(40):  # the top 3 are always shown and never clicked
        ranker.learn_one(scored.impression(f"e{s}", top, clicked=[], k=3))
    ranking = ranker.rank_one("q", cands)
    shown = set(ce_order(cands)[:3])
    assert set(ranking[-3:]) == shown
    assert [d for d in ranking if d not in shown] == [d for d in ce_order(cands) if d not in shown]


def test_the_same_event_twice_changes_nothing() -> None:
    store = InMemoryStore()
    ranker = OnlineRanker(store)
    cands = candidates(20)
    scored = ranker.score_one("q", cands)
    impression = scored.impression("event-1", scored.exploit_order(), clicked=[2], k=10)
    assert ranker.learn_one(impression) is True
    before = json.dumps([store.state_dict(), ranker.state_dict()], sort_keys=True)
    assert ranker.learn_one(impression) is False
    assert json.dumps([store.state_dict(), ranker.state_dict()], sort_keys=True) == before


def test_evidence_is_kept_per_pair_and_per_document() -> None:
    ranker = OnlineRanker(position_bias=PositionBias(family="cascade"))
    impression = Impression("e1", "q", ("a", "b", "c"), clicked=(1,), features=({}, {}, {}))
    ranker.learn_one(impression)
    a, b, c = ranker.store.pair_stats("q", ["a", "b", "c"])
    assert (a.clicks, a.exams, b.clicks, b.exams) == (0.0, 1.0, 1.0, 1.0)
    assert 0 < b.satisfied <= 1 and c.exams == pytest.approx(1 - b.satisfied)
    assert ranker.store.doc_stats(["b"])[0].clicks == 1.0
    assert ranker.store.pair_stats("other", ["b"])[0] == Stats()


def test_state_round_trips_through_json_without_pickle() -> None:
    store = InMemoryStore()
    ranker = OnlineRanker(store, RankerConfig(prior_warmup=50, sync_every=10))
    cands = candidates(30)
    train(ranker, "q", cands, np.random.default_rng(1).integers(0, 4, 30), sessions=40)
    ranker.save()
    blob = json.dumps(store.state_dict())  # everything is plain JSON
    restored_store = InMemoryStore()
    restored_store.load_state_dict(json.loads(blob))
    restored = OnlineRanker(restored_store, RankerConfig(prior_warmup=50, sync_every=10))
    assert restored.rank_one("q", cands) == ranker.rank_one("q", cands)
    np.testing.assert_allclose(
        restored.score_one("q", cands).mean, ranker.score_one("q", cands).mean
    )


def test_memory_is_bounded_by_the_caps() -> None:
    store = InMemoryStore(max_pairs=500, max_docs=300, max_events=1000)
    ranker = OnlineRanker(store)
    for e in range(400):
        docs = tuple(f"d{e}-{i}" for i in range(5))
        ranker.learn_one(Impression(f"e{e}", f"q{e}", docs, (0,), ({},) * 5))
    state = store.state_dict()
    assert len(state["pairs"]) == 500 and len(state["docs"]) == 300
    assert len(state["events"]) == 400
    # the newest pairs survive eviction
    assert store.pair_stats("q399", ["d399-0"])[0].clicks == 1.0
    assert store.pair_stats("q0", ["d0-0"])[0] == Stats()


def test_item_and_user_features_reach_the_prior_model() -> None:
    ranker = OnlineRanker()
    cands = [ScoredCandidate("a", ce=1.0, features={"price": 3.0}), ScoredCandidate("b", ce=0.0)]
    rows = ranker.score_one("q", cands, user={"age": 0.5}).features
    assert rows[0]["item.price"] == pytest.approx(np.tanh(3.0))
    assert rows[1]["user.age"] == pytest.approx(np.tanh(0.5)) and "item.price" not in rows[1]


def test_unclicked_impressions_are_kept_by_rank() -> None:
    ranker = OnlineRanker(position_bias=PositionBias(family="cascade"))
    docs = tuple(f"d{i}" for i in range(12))
    ranker.learn_one(Impression("e1", "q", docs, clicked=(1,), features=({},) * 12))
    stats = ranker.store.pair_stats("q", list(docs))
    assert stats[0].skips == [1.0] + [0.0] * 9  # rank 1, not clicked
    assert stats[1].skips == [0.0] * 10  # clicked
    assert stats[2].skips_3 == 1.0 and stats[11].skips_10 == 1.0  # ranks past 10 share the last


def _pbm_ranker(theta: np.ndarray) -> OnlineRanker:
    bias = PositionBias(family="pbm")
    bias.theta = theta.copy()
    return OnlineRanker(position_bias=bias)


def test_position_based_skips_count_as_much_as_the_rank_is_looked_at() -> None:
    """Under the position-based model a skip at a rank few users look at says little: the
    exact likelihood (1 - theta_r * a per skip), not (1 - a) ** theta_r."""
    cands = [ScoredCandidate(f"d{i}", ce=-float(i)) for i in range(10)]
    ranker = _pbm_ranker(1.0 / np.arange(1, 11))
    before = ranker.score_one("q", cands)
    scored = ranker.score_one("q", cands)
    for s in range(10):  # the same list, nobody clicks: ten skips at every rank
        ranker.learn_one(scored.impression(f"e{s}", list(range(10)), clicked=[]))
    after = ranker.score_one("q", cands)
    drop = before.mean - after.mean
    assert drop[0] > 3 * drop[9] > 0  # rank 1 looked at ten times as often as rank 10
    # what the former form would have done: (1 - a) ** (10 * 0.1) is one full rejection
    a, post = ranker.levels, after.attract[9]
    assert post @ a > 0.5 * (before.attract[9] @ a)


def test_position_based_evidence_is_reread_with_the_current_propensities() -> None:
    cands = [ScoredCandidate(f"d{i}", ce=-float(i)) for i in range(10)]
    ranker = _pbm_ranker(np.ones(10))  # at first every rank is thought to be looked at
    scored = ranker.score_one("q", cands)
    for s in range(5):
        ranker.learn_one(scored.impression(f"e{s}", list(range(10)), clicked=[]))
    mean_then = ranker.score_one("q", cands).mean[6]
    ranker.position_bias.theta = 1.0 / np.arange(1, 11)  # then rank 7 turns out rarely seen
    assert ranker.score_one("q", cands).mean[6] > mean_then + 0.05


def test_the_prior_follows_the_posterior_not_a_draw_from_it() -> None:
    ranker = OnlineRanker(config=RankerConfig(prior_warmup=1))
    prior, row = ranker.prior, {"base_z": 1.0, "ce_z": 1.0}
    x = {**row, "bias": 1.0}

    def weights() -> list[float]:
        return [prior.model.weights[k].get(n, 0.0) for k in range(prior.bins) for n in x]

    before, proba = weights(), prior.model.predict_proba_one(x)
    # a posterior equal to the prior (a pair without evidence) teaches nothing
    prior.learn_soft(row, np.array([proba[k] for k in range(prior.bins)]))
    assert weights() == pytest.approx(before, abs=1e-12)
    top = np.zeros(prior.bins)
    top[-1] = 1.0
    prior.learn_soft(row, top)  # evidence for the top bin moves the model towards it
    assert prior.model.predict_proba_one(x)[prior.bins - 1] > proba[prior.bins - 1]


@pytest.mark.parametrize(("user", "sign"), [("pbm", 1), ("navigational", -1)])
def test_the_sessions_tell_the_family_before_it_is_chosen(user: str, sign: int) -> None:
    ranker = OnlineRanker()
    cands = candidates(30)
    grades = np.random.default_rng(3).integers(0, 4, 30)
    assert ranker.position_bias.family_weights() == {"cascade": 0.5, "pbm": 0.5}
    train(ranker, "q", cands, grades, sessions=150, user=user)
    bias = ranker.position_bias
    assert bias.undecided  # the held-out choice comes at min_sessions (500)
    assert sign * bias.family_log_odds > 5
    assert bias.family_weights()["pbm" if sign > 0 else "cascade"] > 0.99
    assert bias.wants_interventions == (sign > 0)

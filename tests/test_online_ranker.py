"""The online ranker: cold start equals the starting ranker, clicks move documents, events
apply exactly once, state round-trips through JSON, memory stays within its caps."""

from __future__ import annotations

import json

import numpy as np
import pytest

from models.click_models import click_model
from models.online_ranker import (
    Candidate,
    Impression,
    InMemoryStore,
    OnlineRanker,
    RankerConfig,
    Stats,
)
from models.propensity import PositionBias


def candidates(n: int = 30, seed: int = 0) -> list[Candidate]:
    rng = np.random.default_rng(seed)
    return [
        Candidate(f"d{i}", ce=float(rng.normal()), first_stage=float(rng.normal()))
        for i in range(n)
    ]


def ce_order(cands: list[Candidate]) -> list[str]:
    return [c.doc_id for c in sorted(cands, key=lambda c: -c.ce)]


def train(
    ranker: OnlineRanker,
    query: str,
    cands: list[Candidate],
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
    cands = [Candidate(f"d{i}", first_stage=float(-i)) for i in range(20)]
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
    cands = [Candidate("a", ce=1.0, features={"price": 3.0}), Candidate("b", ce=0.0)]
    rows = ranker.score_one("q", cands, user={"age": 0.5}).features
    assert rows[0]["item.price"] == pytest.approx(np.tanh(3.0))
    assert rows[1]["user.age"] == pytest.approx(np.tanh(0.5)) and "item.price" not in rows[1]

"""The final ranker in the serving path, on an in-memory feature state: its order, its request
values, the feature log, and what happens when it cannot read its features."""

from __future__ import annotations

import time

import numpy as np
import pytest
import redis

from streamrank.models.features.config import FeatureSet
from streamrank.models.features.state import MemoryState
from streamrank.models.learning.lambdamart import LambdaMARTConfig, train_lambdamart
from streamrank.models.scoring.cascade import Cascade
from streamrank.models.scoring.fusion import Fusion
from streamrank.models.scoring.tiers import FunctionTier
from streamrank.streams.config import Settings
from streamrank.streams.events import Candidate, Candidates
from streamrank.streams.final_ranking import FeatureLogger, Featuriser, FinalStage
from streamrank.streams.serving import FEATURE_LOG, Reranker

FEATURES = FeatureSet.from_dict(
    {
        "features": [
            {
                "name": "price",
                "kind": "field",
                "source": "items",
                "field": "price",
                "default": "nan",
            },
            {"name": "ce", "kind": "request", "source": "request", "value": "ce", "default": "nan"},
            {
                "name": "first_stage_rank",
                "kind": "request",
                "source": "request",
                "value": "first_stage_rank",
                "default": "nan",
            },
        ]
    }
)
PRICES = {"a": 40.0, "b": 10.0, "c": 30.0, "d": 20.0}


def cheap_first_ranker():
    """A LambdaMART model that learnt that cheaper is better (from price alone)."""
    rng = np.random.default_rng(0)
    prices = rng.uniform(1, 100, size=(300, 10))
    X = np.stack([prices.ravel(), rng.normal(size=3000), rng.uniform(1, 10, 3000)], axis=1)
    y = np.concatenate([4 - np.argsort(np.argsort(row)).clip(0, 4) for row in prices])
    config = LambdaMARTConfig(n_estimators=30, min_data_in_leaf=20)
    return train_lambdamart(X, y, [10] * 300, config, feature_names=FEATURES.columns)


@pytest.fixture(scope="module")
def ranker():
    return cheap_first_ranker()


def state() -> MemoryState:
    memory = MemoryState()
    for doc_id, price in PRICES.items():
        memory.update_hash(f"item|{doc_id}", {"price": price})
    return memory


def request() -> Candidates:
    return Candidates(
        request_id="r1",
        query="shoes",
        k=2,
        candidates=[
            Candidate(doc_id=d, text=f"text {d}", first_stage_score=10.0 - i)
            for i, d in enumerate("abcd")
        ],
        user_id="u1",
    )


def reranker(final: FinalStage | None) -> Reranker:
    # the "ce" tier prefers the first stage's order; only the final ranker knows prices
    ce = FunctionTier("ce", lambda query, texts: -np.arange(len(texts), dtype=float))
    cascade = Cascade("ce:2", {"ce": ce}, fusion=Fusion("none"))
    return Reranker(cascade, None, Settings(latency_budget_ms=60_000), final=final)  # type: ignore[arg-type]


def test_the_final_ranker_orders_the_whole_list_by_its_features(ranker) -> None:
    ranking, impression = reranker(FinalStage(ranker, FEATURES, state())).rank(request())
    assert [item.doc_id for item in ranking.items] == ["b", "d", "c", "a"]  # by price
    assert [item.position for item in ranking.items] == [1, 2, 3, 4]
    assert ranking.model_version.endswith(f";final={ranker.digest[:12]}")
    assert "final" in ranking.timings_ms and not ranking.degraded
    pending = impression[FEATURE_LOG]
    assert pending.shown == (("b", 1), ("d", 2), ("c", 3), ("a", 4))  # at least 10 count


def test_the_tiers_own_scores_and_first_stage_ranks_are_request_values() -> None:
    cascade = reranker(None).cascade
    result = cascade.rank("shoes", request().candidates)
    built = Featuriser(FEATURES, state()).request(request(), result.doc_ids, result, now=0.0)
    assert list(built.doc_ids) == ["a", "b", "c", "d"]
    assert list(built.values["first_stage_rank"]) == [1, 2, 3, 4]
    ce = np.asarray(built.values["ce"])
    assert list(ce[:2]) == [0.0, -1.0] and np.isnan(ce[2:]).all()  # ce:2 scored two


def test_the_feature_log_holds_the_rows_the_ranker_used(ranker) -> None:
    stage = FinalStage(ranker, FEATURES, state())
    _, impression = reranker(stage).rank(request())
    logger = FeatureLogger(Featuriser(FEATURES, MemoryState()))  # an empty state: not read
    event = logger.event(impression[FEATURE_LOG])
    assert event.features_digest == FEATURES.digest
    assert [item.doc_id for item in event.items] == ["b", "d", "c", "a"]
    prices = [item.features[0] for item in event.items]
    assert prices == [10.0, 20.0, 30.0, 40.0]
    assert all(item.score is not None for item in event.items)
    ce = [item.features[1] for item in event.items]
    assert ce == [-1.0, None, None, 0.0]  # "ce:2" scored a and b only: d and c are missing


def test_without_a_final_ranker_the_log_is_computed_for_the_served_list() -> None:
    _, impression = reranker(None).rank(request())
    event = FeatureLogger(Featuriser(FEATURES, state())).event(impression[FEATURE_LOG])
    assert [item.doc_id for item in event.items] == ["a", "b", "c", "d"]
    assert [item.features[0] for item in event.items] == [40.0, 10.0, 30.0, 20.0]
    assert [item.features[2] for item in event.items] == [1.0, 2.0, 3.0, 4.0]
    assert all(item.score is None for item in event.items)


class DownState(MemoryState):
    def get_hashes(self, keys):  # type: ignore[override]
        raise redis.ConnectionError("Redis is away")


def test_unreadable_features_serve_the_cascades_order_degraded(ranker) -> None:
    started = time.perf_counter()
    ranking, impression = reranker(FinalStage(ranker, FEATURES, DownState())).rank(request())
    assert time.perf_counter() - started < 5
    assert [item.doc_id for item in ranking.items] == ["a", "b", "c", "d"]
    assert ranking.degraded and "final ranker skipped: Redis" in ranking.degraded_reason
    assert impression[FEATURE_LOG].final is None


def test_a_model_for_other_columns_is_refused(ranker) -> None:
    other = FeatureSet.from_dict({"features": FEATURES.model_dump(mode="json")["features"][:2]})
    with pytest.raises(ValueError, match="columns"):
        FinalStage(ranker, other, state())

"""The final ranker on a live worker, through the real broker and Redis.

Items with prices go in on ``items``; the worker's feed stores them in the feature state. With
no version active the worker serves the first stage's order and logs each list's features to
``impressions``; once a registry version with a final ranker (a LambdaMART model that learnt
"cheaper is better") is activated, the worker picks it up by itself and serves the list by
price, logging the rows and scores the model used.
"""

from __future__ import annotations

import time
import uuid

import numpy as np
import pytest

from streamrank.models.features.defaults import default_features
from streamrank.models.features.keys import item_key
from streamrank.models.learning.lambdamart import LambdaMARTConfig, train_lambdamart
from streamrank.models.learning.ranker_versions import register_final_ranker
from streamrank.streams.config import Settings
from streamrank.streams.events import Candidate, Candidates, Impression, Item, Ranking
from streamrank.streams.state.connections import redis_client, registry_for
from streamrank.streams.state.feature_state import RedisFeatureState
from tests.helpers import consume, produce

pytestmark = pytest.mark.integration

TOKEN = "final-ranker-token"
PRICES = {"sku-a": 80.0, "sku-b": 20.0, "sku-c": 60.0, "sku-d": 40.0, "sku-e": 10.0}
CHEAPEST_FIRST = sorted(PRICES, key=PRICES.__getitem__)


@pytest.fixture
def operator(settings: Settings) -> Settings:
    return settings.model_copy(update={"registry_key": "final-key", "operator_token": TOKEN})


def worker_env(operator: Settings) -> dict[str, str]:
    return {
        "STREAMRANK_REGISTRY_KEY": operator.registry_key,
        "STREAMRANK_OPERATOR_TOKEN": TOKEN,
        "STREAMRANK_CONTROL_POLL_S": "1.0",
        "STREAMRANK_ONLINE_LEARNING": "false",
        "STREAMRANK_PIPELINE": "first-stage",
        "STREAMRANK_LATENCY_BUDGET_MS": "60000",
    }


def cheaper_is_better():
    """LambdaMART over the default feature set, trained on lists where the cheapest is best."""
    features = default_features()
    price = features.columns.index("price")
    rng = np.random.default_rng(0)
    X = np.full((3000, len(features.columns)), np.nan)
    X[:, price] = rng.uniform(1, 100, 3000)
    y = np.concatenate(
        [4 - np.argsort(np.argsort(X[g * 10 : g * 10 + 10, price])).clip(0, 4) for g in range(300)]
    )
    config = LambdaMARTConfig(n_estimators=30, min_data_in_leaf=20)
    return train_lambdamart(X, y, [10] * 300, config, feature_names=features.columns), features


def request() -> Candidates:
    """The most expensive first: the first stage's order is not the model's."""
    order = sorted(PRICES, key=PRICES.__getitem__, reverse=True)
    return Candidates(
        request_id=f"r-{uuid.uuid4().hex[:8]}",
        query="shoes",
        candidates=[
            Candidate(doc_id=d, text=f"shoe {d}", first_stage_score=10.0 - i)
            for i, d in enumerate(order)
        ],
        user_id="u-1",
    )


def wait_for_items(operator: Settings) -> None:
    state = RedisFeatureState.for_settings(operator, redis_client(operator), default_features())
    deadline = time.monotonic() + 60
    while not all(h and "price" in h for h in state.get_hashes([item_key(d) for d in PRICES])):
        assert time.monotonic() < deadline, "the worker did not feed the items' prices"
        time.sleep(0.2)


def ranking_of(operator: Settings, request_id: str, timeout_s: float = 60) -> Ranking:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for record in consume(operator, "rankings", count=1, timeout_s=2, exact=False):
            ranking = Ranking.model_validate_json(record.value)
            if ranking.request_id == request_id:
                return ranking
    raise AssertionError(f"no ranking for {request_id}")


def impressions(operator: Settings, count: int) -> dict[str, Impression]:
    records = consume(operator, "impressions", count=count, timeout_s=60)
    events = [Impression.model_validate_json(record.value) for record in records]
    return {event.request_id: event for event in events}


def test_a_version_with_a_final_ranker_serves_by_its_features_and_logs_them(
    operator: Settings, start_worker
) -> None:
    worker = start_worker(worker_env(operator))
    produce(
        operator,
        "items",
        [Item(doc_id=d, title=f"shoe {d}", price=p).to_bytes() for d, p in PRICES.items()],
    )
    wait_for_items(operator)

    # 1. unversioned: the first stage's order, its features logged for training
    before = request()
    produce(operator, "candidates", [before.to_bytes()])
    served = ranking_of(operator, before.request_id)
    assert [i.doc_id for i in served.items] == [c.doc_id for c in before.candidates]
    logged = impressions(operator, 1)[before.request_id]
    features = default_features()
    assert logged.features_digest == features.digest
    price = features.columns.index("price")
    assert [item.features[price] for item in logged.items] == [
        PRICES[c.doc_id] for c in before.candidates
    ]
    assert all(item.score is None for item in logged.items)

    # 2. a final ranker version made active: the worker follows within seconds
    ranker, features = cheaper_is_better()
    client = redis_client(operator)
    registry = registry_for(operator, client)
    version = register_final_ranker(registry, ranker, features, pipeline="first-stage")
    registry.with_operator_key(TOKEN.encode()).activate(version.version, reason="test")
    deadline = time.monotonic() + 60
    sent = 1  # requests served so far, each logged once: `before` and every `after`
    while True:
        after = request()
        produce(operator, "candidates", [after.to_bytes()])
        sent += 1
        ranking = ranking_of(operator, after.request_id)
        if "final=" in ranking.model_version:
            break
        assert time.monotonic() < deadline, "the worker did not pick up the final ranker"
        time.sleep(0.5)
    assert ranking.model_version.startswith(f"{version.version}:")
    assert [i.doc_id for i in ranking.items] == CHEAPEST_FIRST, worker.log
    assert "final" in ranking.timings_ms and not ranking.degraded
    logged = impressions(operator, sent)[after.request_id]
    assert [item.doc_id for item in logged.items] == CHEAPEST_FIRST
    assert [item.features[price] for item in logged.items] == sorted(PRICES.values())
    scores = [item.score for item in logged.items]
    assert None not in scores and scores == sorted(scores, reverse=True)
    assert logged.model_version == ranking.model_version

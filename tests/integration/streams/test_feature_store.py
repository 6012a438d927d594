"""The feature store in real Redis, directly and fed by the items/users agents."""

from __future__ import annotations

import time

import pytest

from streamrank.models.scoring.score_cache import text_hash
from streamrank.streams.config import Settings
from streamrank.streams.events import Item, User
from streamrank.streams.state.connections import redis_client
from streamrank.streams.state.feature_feed import FeatureFeed
from streamrank.streams.state.feature_store import FeatureStore
from tests.helpers import produce

pytestmark = pytest.mark.integration


def store(settings: Settings) -> FeatureStore:
    return FeatureStore(redis_client(settings), settings)


def test_items_upsert_and_delete(settings: Settings) -> None:
    features = store(settings)
    features.apply_item(Item(doc_id="volga", title="Volga", text="A river.", features={"pop": 2}))
    features.apply_item(Item(doc_id="ob", text="Another river."))
    assert features.texts(["volga", "ob", "unknown"]) == ["Volga A river.", "Another river.", None]
    assert features.item_features(["volga", "ob"]) == [{"pop": 2.0}, {}]
    features.apply_item(Item(doc_id="volga", op="delete"))
    features.apply_item(Item(doc_id="volga", op="delete"))  # a replayed delete is harmless
    assert features.texts(["volga"]) == [None]


def test_batch_reads_span_many_documents_and_impressions(settings: Settings) -> None:
    """Documents and impressions are keyed one per id, so on a cluster they lie in many slots:
    the batched reads (one pipeline of single-key reads each) must cross slots, which a
    multi-key command (MGET) would be refused."""
    client = redis_client(settings)
    features = FeatureStore(client, settings)
    docs = [f"doc-{n}" for n in range(200)]
    for n, doc_id in enumerate(docs):
        features.apply_item(Item(doc_id=doc_id, text=f"text {n}", price=float(n), stock=n % 2))
    assert features.texts(docs) == [f"text {n}" for n in range(200)]
    fields = features.rule_fields([*docs, "unknown"], ["price", "stock"])
    assert fields[:200] == [{"price": float(n), "stock": n % 2} for n in range(200)]
    assert fields[200] == {}
    requests = [f"r{n}" for n in range(50)]
    for n, request_id in enumerate(requests):
        features.record_impression(request_id, {"query": f"q{n}", "user_id": f"u{n}"})
    found = FeatureFeed(settings, client).impressions([*requests, "r-none"])
    assert found == {
        f"r{n}": {"query": f"q{n}", "user_id": f"u{n}", "session_id": None} for n in range(50)
    }


def test_impressions_expire(settings: Settings) -> None:
    features = FeatureStore(
        redis_client(settings),
        settings.model_copy(update={"impression_ttl_s": 1}),
    )
    features.record_impression("r1", {"items": [{"doc_id": "a", "position": 1}]})
    assert features.impression("r1") == {"items": [{"doc_id": "a", "position": 1}]}
    time.sleep(2.1)
    assert features.impression("r1") is None


def test_items_and_users_agents_fill_the_store_and_encode_vectors(
    settings: Settings, start_worker
) -> None:
    start_worker()  # the default cascade has a dense tier
    produce(settings, "items", [Item(doc_id="d1", text="first").to_bytes()], key=b"d1")
    produce(settings, "users", [User(user_id="u1", features={"age_days": 3}).to_bytes()])
    features = store(settings)
    client = redis_client(settings)
    vector_keys = f"{settings.topic_prefix}vec:*:{text_hash('first')}:d1"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        stored = features.texts(["d1"]) == ["first"] and features.user_features("u1")
        if stored and any(client.scan_iter(match=vector_keys)):
            break
        time.sleep(0.2)
    assert features.texts(["d1"]) == ["first"]
    assert features.user_features("u1") == {"age_days": 3.0}
    # ingestion encoded the document's dense vector once, so requests only read it
    assert len(list(client.scan_iter(match=vector_keys))) == 1
    produce(settings, "items", [Item(doc_id="d1", op="delete").to_bytes()], key=b"d1")
    deadline = time.monotonic() + 30
    while features.texts(["d1"]) != [None] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert features.texts(["d1"]) == [None]

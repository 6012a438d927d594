"""The Redis learner store behaves like the in-memory one, atomically and idempotently."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from models.online_ranker import InMemoryStore, Stats
from streams.config import Settings
from streams.learner_store import RedisLearnerStore

pytestmark = pytest.mark.integration


@pytest.fixture
def store(settings: Settings) -> RedisLearnerStore:
    client = redis.Redis.from_url(settings.redis_url)
    return RedisLearnerStore(client, prefix=settings.topic_prefix + "ltr:", ttl_s=3600)


def test_same_answers_as_the_in_memory_store(store: RedisLearnerStore) -> None:
    memory = InMemoryStore()
    events = [
        ("e1", "river", [("volga", Stats(1, 1, 0.9, 0.5, 1)), ("ob", Stats(1, 0, 0.5, 0, 0))]),
        ("e2", "river", [("volga", Stats(1, 0, 0.9, 0, 0))]),
        ("e3", "capital", [("volga", Stats(1, 1, 1.0, 1, 1))]),
        ("e1", "river", [("volga", Stats(9, 9, 9, 9, 9))]),  # a replay of e1: ignored
    ]
    for event_id, query, deltas in events:
        assert store.apply(event_id, query, deltas) == memory.apply(event_id, query, deltas)
    for query in ("river", "capital", "unknown"):
        assert store.pair_stats(query, ["volga", "ob", "x"]) == memory.pair_stats(
            query, ["volga", "ob", "x"]
        )
    assert store.doc_stats(["volga", "ob"]) == memory.doc_stats(["volga", "ob"])
    assert store.doc_stats(["volga"])[0].clicks == 2.0


def test_concurrent_replays_apply_once(store: RedisLearnerStore) -> None:
    delta = [("d", Stats(impressions=1, clicks=1))]
    with ThreadPoolExecutor(max_workers=8) as pool:
        applied = list(pool.map(lambda _: store.apply("same-event", "q", delta), range(32)))
    assert applied.count(True) == 1
    assert store.pair_stats("q", ["d"])[0].clicks == 1.0


def test_state_round_trips_and_entries_expire(settings: Settings) -> None:
    client = redis.Redis.from_url(settings.redis_url)
    store = RedisLearnerStore(client, prefix=settings.topic_prefix + "ltr:", ttl_s=1)
    store.put_state("propensity", {"theta": [1.0, 0.5]})
    assert store.get_state("propensity") == {"theta": [1.0, 0.5]}
    store.apply("e", "q", [("d", Stats(1, 1, 1, 0, 0))])
    assert client.ttl(f"{store.prefix}docstats:d") in (0, 1)


def test_a_batch_reads_and_writes_like_the_store_itself(store: RedisLearnerStore) -> None:
    from streams.learner_store import BatchingStore

    memory = InMemoryStore()
    batching = BatchingStore(store)
    store.apply("old", "river", [("volga", Stats(1, 1, 1, 0, 0))])
    memory.apply("old", "river", [("volga", Stats(1, 1, 1, 0, 0))])
    events = [
        ("e1", "river", [("volga", Stats(1, 1, 0.9, 0.5, 1)), ("ob", Stats(1, 0, 0.5, 0, 0))]),
        ("e2", "river", [("volga", Stats(1, 0, 0.9, 0, 0))]),
        ("old", "river", [("volga", Stats(9, 9, 9, 9, 9))]),  # applied before the batch
        ("e1", "river", [("volga", Stats(9, 9, 9, 9, 9))]),  # applied earlier in the batch
    ]
    with batching.batch([(e, q, [d for d, _ in deltas]) for e, q, deltas in events]):
        for event_id, query, deltas in events:
            docs = [doc for doc, _ in deltas]
            # reads inside the batch see the batch's own earlier writes
            assert batching.pair_stats(query, docs) == memory.pair_stats(query, docs)
            assert batching.apply(event_id, query, deltas) == memory.apply(event_id, query, deltas)
        assert store.pair_stats("river", ["ob"]) == [Stats()]  # nothing written yet
        store.apply("e2", "river", [("volga", Stats(5, 5, 5, 5, 5))])  # another worker wins e2
    assert batching.raced == 1
    assert store.pair_stats("river", ["ob"]) == memory.pair_stats("river", ["ob"])
    assert store.pair_stats("river", ["volga"])[0].clicks == 1 + 1 + 5

"""The Redis learner store behaves like the in-memory one, atomically and idempotently."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from streamrank.models.learning.online_ranker import InMemoryStore, Stats
from streamrank.streams.config import Settings
from streamrank.streams.state.connections import redis_client
from streamrank.streams.state.learner_store import RedisLearnerStore

pytestmark = pytest.mark.integration


@pytest.fixture
def store(settings: Settings) -> RedisLearnerStore:
    client = redis_client(settings)
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
    client = redis_client(settings)
    store = RedisLearnerStore(client, prefix=settings.topic_prefix + "ltr:", ttl_s=1)
    store.put_state("propensity", {"theta": [1.0, 0.5]})
    assert store.get_state("propensity") == {"theta": [1.0, 0.5]}
    store.apply("e", "q", [("d", Stats(1, 1, 1, 0, 0))])
    assert client.ttl(f"{store.tagged}docstats:d") in (0, 1)


def test_a_batch_reads_and_writes_like_the_store_itself(store: RedisLearnerStore) -> None:
    from streamrank.streams.state.learner_store import BatchingStore

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


def test_many_events_on_shared_pairs_add_up_like_one_at_a_time(store: RedisLearnerStore) -> None:
    """One script sums the increments of a batch's events per field before writing them."""
    memory = InMemoryStore()
    store.apply("before", "river", [("volga", Stats(1, 1, 0.25, 0, 0, 0.5))])
    memory.apply("before", "river", [("volga", Stats(1, 1, 0.25, 0, 0, 0.5))])
    events = [
        ("a", "river", [("volga", Stats(1, 1, 0.9, 0.5, 1, 0.7)), ("ob", Stats(1, 0, 0.5))]),
        ("b", "river", [("volga", Stats(1, 0, 0.3, 0, 0, 0.1)), ("ob", Stats(1, 1, 0.6))]),
        ("c", "capital", [("volga", Stats(1, 0, 0.1, 0, 0, 0.2))]),
        ("before", "river", [("volga", Stats(9, 9, 9, 9, 9, 9))]),  # applied before
        ("a", "river", [("volga", Stats(9, 9, 9, 9, 9, 9))]),  # earlier in the same call
        ("empty", "river", []),
    ]
    expected = [memory.apply(event_id, query, deltas) for event_id, query, deltas in events]
    assert store.apply_many(events) == expected == [True, True, True, False, False, True]
    for query in ("river", "capital"):
        for got, want in zip(
            store.pair_stats(query, ["volga", "ob"]),
            memory.pair_stats(query, ["volga", "ob"]),
            strict=True,
        ):
            assert got.to_list() == pytest.approx(want.to_list(), rel=1e-12)
    for got, want in zip(
        store.doc_stats(["volga", "ob"]), memory.doc_stats(["volga", "ob"]), strict=True
    ):
        assert got.to_list() == pytest.approx(want.to_list(), rel=1e-12)
    assert store.doc_stats(["volga"])[0].impressions == 4.0  # counts stay exact


def test_prefetch_reads_each_query_once_and_answers_per_event(store: RedisLearnerStore) -> None:
    store.apply("seen", "river", [("volga", Stats(2, 1, 1.5))])
    wanted = [
        ("seen", "river", ["volga", "ob"]),
        ("new", "river", ["ob", "volga"]),
        ("other", "capital", ["volga"]),
        ("nothing", "river", []),
    ]
    applied, stats = store.prefetch(wanted)
    assert applied == [True, False, False, False]
    assert stats[0] == [Stats(2, 1, 1.5), Stats()]
    assert stats[1] == [Stats(), Stats(2, 1, 1.5)]
    assert stats[2] == [Stats()] and stats[3] == []
    stats[0][0].add(Stats(1))  # each answer is its own object
    assert stats[1][1] == Stats(2, 1, 1.5)
    assert store.prefetch([]) == ([], [])


def test_a_bad_increment_fails_its_script_before_it_writes(store: RedisLearnerStore) -> None:
    good = ("good", "river", [("volga", Stats(1, 1))])
    bad = ("bad", "river", [("volga", Stats(1, float("nan")))])
    with pytest.raises(redis.ResponseError, match="not a finite number"):
        store.apply_many([good, bad])
    assert store.pair_stats("river", ["volga"]) == [Stats()]
    assert store.apply_many([good]) == [True]  # its marker was not set either


def test_a_hash_with_more_fields_than_one_redis_call_takes(store: RedisLearnerStore) -> None:
    """A query's hash may need more fields than the script reads or writes in one call."""
    memory = InMemoryStore()
    docs = [f"d{i}" for i in range(300)]  # 300 documents x 5 statistics: 1,500 fields
    for event_id in ("first", "second"):
        deltas = [(doc, Stats(1, i % 2, 0.5, 0.25, i % 2, 0.75)) for i, doc in enumerate(docs)]
        assert store.apply_many([(event_id, "long", deltas)]) == [True]
        memory.apply(event_id, "long", deltas)
    assert store.pair_stats("long", docs) == memory.pair_stats("long", docs)
    assert store.doc_stats(docs[-3:]) == memory.doc_stats(docs[-3:])

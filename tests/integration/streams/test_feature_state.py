"""RedisFeatureState against the real Redis: the same matrices as MemoryState, bounded memory."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator

import numpy as np
import pytest
import redis
import redis.connection

from streamrank.models.features.defaults import default_features
from streamrank.models.features.events import (
    DAY_S,
    Event,
    FeatureRequest,
    InteractionEvent,
    ItemEvent,
    UserEvent,
)
from streamrank.models.features.keys import (
    GLOBAL,
    counts_key,
    embedding_key,
    item_key,
    item_vector_key,
    overlap_key,
    query_item,
    user_key,
)
from streamrank.models.features.learn import FeatureLearner
from streamrank.models.features.replay import point_in_time
from streamrank.models.features.state import BatchRead, BatchResult, CounterRead, MemoryState
from streamrank.models.features.vector import FeatureVector
from streamrank.streams.config import Settings
from streamrank.streams.state import feature_state
from streamrank.streams.state.buckets import BUCKETS, is_cluster
from streamrank.streams.state.connections import redis_client
from streamrank.streams.state.feature_state import SCRIPTS, RedisFeatureState

pytestmark = pytest.mark.integration

START = 20_000 * DAY_S
SPAN_DAYS = 50
TYPES = ("impression", "click", "add_to_cart", "purchase", "dwell")


def client(settings: Settings) -> redis.Redis:
    return redis_client(settings)


def packets_per_pipeline(state: RedisFeatureState) -> int:
    """Packets one pipeline sends: one, or on a cluster one per master it touches."""
    return len(state.client.get_primaries()) if is_cluster(state.client) else 1  # type: ignore[attr-defined]


def warm(state: RedisFeatureState) -> None:
    """Connect to every master outside the counted reads (a new connection sends a handshake)."""
    state.get_hashes([f"warm|{n}" for n in range(20 * BUCKETS)])


def redis_state(settings: Settings, **options: object) -> RedisFeatureState:
    features = default_features()
    return RedisFeatureState.for_settings(settings, client(settings), features, **options)  # type: ignore[arg-type]


def random_events(seed: int) -> list[Event]:
    """Items (some fields or vectors missing), users and interactions over 50 days."""
    rng = np.random.default_rng(seed)
    events: list[Event] = []
    for i in range(30):
        fields: dict[str, float | int | bool | str] = {
            "price": float(rng.lognormal(3, 1)),
            "category": ["shoes", "hats", "12", "bags"][i % 4],  # "12" must stay a string
            "brand": f"brand{i % 7}",
        }
        if i % 3:
            fields["stock"] = int(rng.integers(0, 5))
        if i % 5 == 0:
            fields["promoted"] = True
        if i % 4 == 1:
            fields["created"] = START - float(rng.integers(1, 100)) * DAY_S
        if i % 6 == 2:
            fields["price"] = float("nan")  # a missing value on the wire
        vector = rng.standard_normal(8).astype(np.float32) if i % 4 else None
        events.append(ItemEvent(f"d{i}", START + float(rng.random()) * DAY_S, fields, vector))
    events += [UserEvent(f"u{u}", START, {"segment": f"s{u % 3}"}) for u in range(6)]
    times = np.sort(START + DAY_S + rng.random(1500) * SPAN_DAYS * DAY_S)
    for t in times:
        user = None if rng.random() < 0.15 else f"u{rng.integers(0, 8)}"  # u6, u7: no profile
        query = None if rng.random() < 0.2 else f"query {rng.integers(0, 5)}"
        events.append(
            InteractionEvent(
                TYPES[rng.choice(5, p=[0.6, 0.2, 0.08, 0.07, 0.05])],
                f"d{rng.integers(0, 33)}",  # d30..d32 were never described
                float(t),
                user_id=user,
                query=query,
                session_id=None if user is None else f"{user}-{int(t // (6 * 3600))}",
            )
        )
    events.append(ItemEvent("d3", START + 20 * DAY_S, {"price": 99.5, "stock": 0}))
    return sorted(events, key=lambda event: event.timestamp)


def requests(seed: int) -> list[FeatureRequest]:
    """Requests through the stream: unknown items and users, anonymous, NaN request values."""
    rng = np.random.default_rng(seed)
    out = []
    for n, day in enumerate((2, 9, 25, 33, 40, 46, SPAN_DAYS + 3, SPAN_DAYS + 40)):
        doc_ids = [f"d{i}" for i in rng.permutation(35)[:20]] + ["ghost"]
        ce = np.full(len(doc_ids), np.nan)
        ce[:5] = rng.random(5)
        values = {"first_stage_score": rng.random(len(doc_ids)), "ce": ce}
        user = [f"u{n % 6}", "stranger", None, "u7"][n % 4]
        query = [f"query {n % 5}", None, "never asked"][n % 3]
        now = START + (day + float(rng.random())) * DAY_S
        out.append(FeatureRequest(doc_ids, now=now, query=query, user_id=user, values=values))
    return out


@pytest.mark.parametrize("buffer_writes", [False, True])
def test_redis_gives_the_matrices_memory_gives(settings: Settings, buffer_writes: bool) -> None:
    """Training (MemoryState) and serving (Redis) agree on every value, missing ones too."""
    features = default_features()
    events, asked = random_events(seed=7), requests(seed=8)
    offline = list(point_in_time(features, events, asked))
    state = redis_state(settings, buffer_writes=buffer_writes)
    online = list(point_in_time(features, events, asked, state=state))
    assert len(offline) == len(online) == len(asked)
    missing = 0
    for (request, expected), (_, got) in zip(offline, online, strict=True):
        assert got.dtype == expected.dtype == np.float32
        np.testing.assert_array_equal(got, expected, err_msg=f"request at {request.now}")
        missing += int(np.isnan(expected).sum())
    assert missing > 0  # the comparison covered NaN defaults
    # Counters were learnt and forgotten: the last request (40 days on) sees no interactions.
    columns = features.columns
    clicks_30 = [offline[i][1][:, columns.index("item_clicks_30d")] for i in (3, 7)]
    assert clicks_30[0].sum() > 0
    assert clicks_30[1].sum() == 0


def test_counters_forget_days_outside_the_window(settings: Settings) -> None:
    state = RedisFeatureState(client(settings), prefix=settings.topic_prefix, days=30)
    for day in (100, 101, 110):
        state.add("item:counts|d1", "click", day)
    state.add("item:counts|d1", "impression", 101, amount=2.5)
    stored = sorted(client(settings).hkeys(state.redis_key("item:counts|d1")))
    assert stored == [b"click:100", b"click:101", b"click:110", b"impression:101", b"newest"]
    state.add("item:counts|d1", "click", 131)  # days 100 and 101 leave the 30-day ring
    stored = client(settings).hkeys(state.redis_key("item:counts|d1"))
    assert sorted(stored) == [b"click:110", b"click:131", b"newest"]
    state.add("item:counts|d1", "click", 101)  # too late: older than the ring
    counts = state.read_counts(["item:counts|d1", "item:counts|d2"], ["click"], 131, 30)
    assert counts.shape == (2, 1, 30)
    assert counts[0, 0].tolist() == [0.0] * 8 + [1.0] + [0.0] * 20 + [1.0]
    assert not counts[1].any()
    state.add("item:counts|d1", "click", 200)  # a gap longer than the ring: all old days gone
    stored = client(settings).hkeys(state.redis_key("item:counts|d1"))
    assert sorted(stored) == [b"click:200", b"newest"]
    with pytest.raises(ValueError, match="not counted"):
        state.add("item:counts|d1", "dwell", 200)


def test_keys_expire(settings: Settings) -> None:
    redis_client = client(settings)
    state = RedisFeatureState(redis_client, prefix=settings.topic_prefix, days=7, user_ttl_s=600)
    state.add("user:counts|u1", "session", 5)
    state.update_hash("user|u1", {"segment": "s1"})
    state.set_vector("user:embedding:history|u1", np.ones(3))
    state.update_hash("item|d1", {"price": 2.0})
    ttl = redis_client.ttl(state.redis_key("user:counts|u1"))
    assert 7 * DAY_S < ttl <= 8 * DAY_S  # longest window + 1 day
    assert 0 < redis_client.ttl(state.redis_key("user|u1")) <= 600
    assert 0 < redis_client.ttl(state.redis_key("user:embedding:history|u1")) <= 600
    assert redis_client.ttl(state.redis_key("item|d1")) == -1  # items live until deleted


def test_hashes_and_vectors_read_back_exactly(settings: Settings) -> None:
    state = RedisFeatureState(client(settings), prefix=settings.topic_prefix)
    values = {"price": 0.1 + 0.2, "category": "12", "created": 1.7e9 + 1 / 3, "stock": 0.0}
    state.update_hash("item|d1", values)
    state.update_hash("item|d1", {"stock": 3.0})
    state.delete_fields("item|d1", ["created"])
    state.set_vector("item:vector|d1", np.array([0.1, -2.5, 1e-30]))
    assert state.get_hashes(["item|d1", "item|d2"]) == [
        {"price": 0.1 + 0.2, "category": "12", "stock": 3.0},
        None,
    ]
    vector, absent = state.get_vectors(["item:vector|d1", "item:vector|d2"])
    np.testing.assert_array_equal(vector, np.array([0.1, -2.5, 1e-30], dtype=np.float32))
    assert vector.dtype == np.float32 and absent is None


@pytest.fixture
def round_trips(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Counts the packets sent to Redis: a pipeline is one, a plain command one."""
    sent = [0]
    original = redis.connection.Connection.send_packed_command

    def counting(self: redis.connection.Connection, *args: object, **kwargs: object) -> None:
        sent[0] += 1
        original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(redis.connection.Connection, "send_packed_command", counting)
    yield sent


def test_a_batch_read_of_1000_candidates_is_one_round_trip(
    settings: Settings, round_trips: list[int]
) -> None:
    state = RedisFeatureState(client(settings), prefix=settings.topic_prefix, buffer_writes=True)
    warm(state)
    packets = packets_per_pipeline(state)
    items = [f"d{i}" for i in range(1000)]
    for n, doc_id in enumerate(items):
        state.add(f"item:counts|{doc_id}", "click", 50 + n % 3)
        state.update_hash(f"item|{doc_id}", {"price": float(n), "category": f"c{n % 9}"})
        state.set_vector(f"item:vector|{doc_id}", np.full(4, n, dtype=np.float32))
    before = round_trips[0]
    state.flush()  # 3,000 queued writes
    assert round_trips[0] - before <= packets
    for read in (
        lambda: state.read_counts([f"item:counts|{d}" for d in items], ["click"], 52, 30),
        lambda: state.get_hashes([f"item|{d}" for d in items]),
        lambda: state.get_vectors([f"item:vector|{d}" for d in items]),
    ):
        before = round_trips[0]
        result = read()
        assert round_trips[0] - before <= packets
        assert len(result) == 1000
    assert state.read_counts([f"item:counts|{d}" for d in items], ["click"], 52, 30).sum() == 1000


def test_a_batch_read_costs_one_command_per_bucket_at_most(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """1,000 items' fields, vectors and counters: one script or MGET per read on a single
    Redis, at most one per bucket on a cluster, which refuses a script over keys of two slots
    (so this fails on a cluster unless every group's keys share one)."""
    state = RedisFeatureState(client(settings), prefix=settings.topic_prefix, buffer_writes=True)
    items = [f"d{i}" for i in range(1000)]
    for n, doc_id in enumerate(items):
        state.add(counts_key("item", doc_id), "click", 50)
        state.update_hash(item_key(doc_id), {"price": float(n), "category": f"c{n % 9}"})
        state.set_vector(item_vector_key(doc_id), np.full(4, n, dtype=np.float32))
    state.flush()
    sent: list[list[str]] = []
    pipeline = state._pipeline

    def counting(ops: list[feature_state.Op]) -> object:
        sent.append([name for name, _, _ in ops])
        return pipeline(ops)

    monkeypatch.setattr(state, "_pipeline", counting)
    got = state.read_batch(
        BatchRead(
            today=50,
            columns=[item_key(d) for d in items],
            numbers=["price"],
            strings=["category"],
            rows=[item_vector_key(d) for d in items],
            counters={
                "item": CounterRead([counts_key("item", d) for d in items], ("click",), (7,))
            },
        )
    )
    ((*names,),) = sent
    per_read = BUCKETS if is_cluster(state.client) else 1
    for read in ("columns", "mget", "window_sums"):
        assert 1 <= names.count(read) <= per_read
    assert got.numbers[0].tolist() == [float(n) for n in range(1000)]
    assert got.strings[0] == [f"c{n % 9}" for n in range(1000)]
    assert got.matrix[:, 0].tolist() == [float(n) for n in range(1000)]
    assert got.counts["item"].sum() == 1000


def test_a_buffered_write_is_read_back_and_flushed_to_every_master(settings: Settings) -> None:
    """A read sees the writes queued before it to its keys; flush sends the rest (on a
    cluster those to other slots wait for it), so another worker then sees them all."""
    state = RedisFeatureState(client(settings), prefix=settings.topic_prefix, buffer_writes=True)
    other = RedisFeatureState(client(settings), prefix=settings.topic_prefix)
    docs = [f"d{n}" for n in range(64)]  # in every bucket
    for n, doc_id in enumerate(docs):
        state.update_hash(item_key(doc_id), {"price": float(n)})
        state.add(counts_key("item", doc_id), "click", 7)
    assert state.get_hashes([item_key("d5")]) == [{"price": 5.0}]
    assert state.read_counts([counts_key("item", "d9")], ["click"], 7, 1).tolist() == [[[1.0]]]
    state.flush()
    assert other.get_hashes([item_key(d) for d in docs]) == [{"price": float(n)} for n in range(64)]
    assert other.read_counts([counts_key("item", d) for d in docs], ["click"], 7, 1).sum() == 64


def test_keys_of_the_untagged_layout_move_to_their_tagged_names(settings: Settings) -> None:
    redis_client = client(settings)
    if is_cluster(redis_client):
        pytest.skip("a cluster never held the untagged layout (its scripts were refused)")
    prefix = settings.topic_prefix
    redis_client.hset(prefix + "item|d1", mapping={"price": "2.5"})
    redis_client.hset(prefix + "item:counts|d1", mapping={"click:10": "3", "newest": "10"})
    redis_client.expire(prefix + "item:counts|d1", 600)
    redis_client.set(prefix + "item:vector|d1", np.ones(2, dtype=np.float32).tobytes())
    state = RedisFeatureState(redis_client, prefix=prefix)
    state.update_hash("item|d2", {"price": 1.0})  # already tagged: not moved
    assert feature_state.move_untagged_keys(redis_client, prefix) == 3
    assert state.get_hashes(["item|d1", "item|d2"]) == [{"price": 2.5}, {"price": 1.0}]
    assert state.read_counts(["item:counts|d1"], ["click"], 10, 1).tolist() == [[[3.0]]]
    assert 0 < redis_client.ttl(state.redis_key("item:counts|d1")) <= 600
    assert state.get_vectors(["item:vector|d1"])[0].tolist() == [1.0, 1.0]
    assert feature_state.move_untagged_keys(redis_client, prefix) == 0  # once


def test_keys_carry_their_bucket_tag_under_the_prefix(settings: Settings) -> None:
    state = RedisFeatureState(client(settings), prefix=settings.topic_prefix)
    state.update_hash("item|d1", {"price": 1.0})
    (name,) = client(settings).scan_iter(match=settings.topic_prefix + "*")
    assert name.decode().startswith(settings.topic_prefix + "{f")
    assert name.decode().endswith("}item|d1") and name.decode() == state.redis_key("item|d1")


def test_memory_report_counts_items_and_users(settings: Settings) -> None:
    features = default_features()
    state = redis_state(settings, buffer_writes=True)
    offline = MemoryState(days=features.max_window_days)
    learners = [FeatureLearner(features, state), FeatureLearner(features, offline)]
    for event in random_events(seed=3):
        for learner in learners:
            learner.learn_one(event)
    report = state.memory_report().by_owner
    expected = offline.memory_report().by_owner
    assert set(report) == set(expected) == {"item", "user", "category", "global"}
    for kind in ("item", "user", "category"):
        assert report[kind].owners == expected[kind].owners
        # Redis counts the same entries: days with counts, fields and vectors.
        assert report[kind].entries_max == expected[kind].entries_max
        assert 0 < report[kind].bytes_mean <= report[kind].bytes_max
    assert report["item"].bytes_total > 30 * 8 * 4  # at least the vectors' floats
    sample = state.memory_report(max_keys=5).by_owner
    assert sum(memory.owners for memory in sample.values()) <= 5


def test_a_script_redis_lost_is_loaded_and_the_batch_applied_once(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a Redis restart the scripts are gone: the batch reloads them and runs once."""
    # A variant of each script no Redis has seen stands for a Redis that lost them.
    fresh = {name: f"{source}-- {uuid.uuid4().hex}\n" for name, source in SCRIPTS.items()}
    monkeypatch.setattr(feature_state, "SCRIPTS", fresh)
    shas = {name: hashlib.sha1(source.encode()).hexdigest() for name, source in fresh.items()}
    monkeypatch.setattr(feature_state, "_SHAS", shas)
    state = RedisFeatureState(client(settings), prefix=settings.topic_prefix, buffer_writes=True)
    state.add("item:counts|d1", "click", 10)
    state.update_hash("item|d1", {"price": 1.0})
    assert state.read_counts(["item:counts|d1"], ["click"], 10, 1).tolist() == [[[1.0]]]
    assert state.get_hashes(["item|d1"]) == [{"price": 1.0}]


def both_states(settings: Settings, seed: int) -> tuple[RedisFeatureState, MemoryState]:
    """Redis and memory fed the same events by the default features."""
    features = default_features()
    state = redis_state(settings, buffer_writes=True)
    offline = MemoryState(days=features.max_window_days)
    learners = [FeatureLearner(features, state), FeatureLearner(features, offline)]
    for event in random_events(seed=seed):
        for learner in learners:
            learner.learn_one(event)
    state.flush()
    return state, offline


def assert_same_batch(got: BatchResult, expected: BatchResult) -> None:
    assert got.hashes == expected.hashes
    np.testing.assert_array_equal(got.numbers, expected.numbers)
    assert got.numbers.dtype == expected.numbers.dtype == np.float64
    assert got.strings == expected.strings
    assert len(got.vectors) == len(expected.vectors)
    for vector, other in zip(got.vectors, expected.vectors, strict=True):
        assert (vector is None) == (other is None)
        if vector is not None:
            np.testing.assert_array_equal(vector, other)
    np.testing.assert_array_equal(got.matrix, expected.matrix)
    assert got.matrix.dtype == expected.matrix.dtype == np.float32
    np.testing.assert_array_equal(got.present, expected.present)
    assert got.counts.keys() == expected.counts.keys()
    for name, counts in expected.counts.items():
        np.testing.assert_array_equal(got.counts[name], counts, err_msg=name)


def test_a_batch_read_gives_what_memory_gives(settings: Settings) -> None:
    """Every part of a batch read: Redis (scripts, window sums made there) equals memory."""
    state, offline = both_states(settings, seed=11)
    docs = [f"d{i}" for i in range(35)] + ["ghost"]
    users = ["u1", "u4", "u7", "stranger"]
    events = ("impression", "click", "add_to_cart", "purchase")
    for day in (20_002, 20_020, 20_035, 20_051, 20_070, 20_200):
        reads = BatchRead(
            today=day,
            hashes=[user_key(u) for u in users]
            + [overlap_key("user_category_clicks", u) for u in users],
            columns=[item_key(d) for d in docs],
            # "category" read as a number is missing; "price" read as a string stays a number.
            numbers=["price", "stock", "created", "pop.popularity.value", "category", "nothing"],
            strings=["category", "brand", "price", "nothing"],
            vectors=[embedding_key("purchase_history", u) for u in users],
            rows=[item_vector_key(d) for d in docs],
            counters={
                "item": CounterRead([counts_key("item", d) for d in docs], events, (1, 7, 30)),
                "query_item": CounterRead(
                    [counts_key("query_item", query_item(d, "query 2")) for d in docs],
                    ("click", "impression"),
                    (30,),
                ),
                "category": CounterRead(
                    [counts_key("category", c) for c in ("shoes", "12", "none")], events, (7,)
                ),
                "user": CounterRead([counts_key("user", u) for u in users], ("session",), (7, 30)),
                "global": CounterRead([counts_key("global", GLOBAL)], events, (30, 2)),
                "empty": CounterRead([], events, (7,)),
            },
        )
        got, expected = state.read_batch(reads), offline.read_batch(reads)
        assert_same_batch(got, expected)
        if day == 20_035:  # the comparison covered read values, not only missing ones
            assert expected.counts["item"].sum() > 0 and expected.counts["category"].sum() > 0
            assert expected.present.any() and not expected.present.all()
            assert "12" in expected.strings[0] and not np.isnan(expected.numbers[0]).all()
    with pytest.raises(ValueError, match="day buckets"):
        state.read_batch(BatchRead(1, counters={"x": CounterRead(["k"], ("click",), (31,))}))


def test_a_prefetched_matrix_is_two_round_trips(settings: Settings, round_trips: list[int]) -> None:
    """All but the category counters in one pipeline; the same matrix as reads on first use."""
    features = default_features()
    state, _ = both_states(settings, seed=12)
    warm(state)
    packets = packets_per_pipeline(state)
    for request in requests(seed=13):
        before = round_trips[0]
        prefetched = FeatureVector(features, state).matrix(request)
        assert round_trips[0] - before <= 2 * packets
        before = round_trips[0]
        on_first_use = FeatureVector(features, state, prefetch=False).matrix(request)
        assert round_trips[0] - before > 2 * packets
        np.testing.assert_array_equal(prefetched, on_first_use)


def test_a_batch_read_reloads_the_scripts_redis_lost(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    fresh = {name: f"{source}-- {uuid.uuid4().hex}\n" for name, source in SCRIPTS.items()}
    monkeypatch.setattr(feature_state, "SCRIPTS", fresh)
    shas = {name: hashlib.sha1(source.encode()).hexdigest() for name, source in fresh.items()}
    monkeypatch.setattr(feature_state, "_SHAS", shas)
    state = RedisFeatureState(client(settings), prefix=settings.topic_prefix)
    state.update_hash("item|d1", {"price": 1.5, "brand": "b"})
    client(settings).hset(state.redis_key("item:counts|d1"), "click:10", 2)
    got = state.read_batch(
        BatchRead(
            today=10,
            columns=["item|d1"],
            numbers=["price"],
            strings=["brand"],
            counters={"item": CounterRead(["item:counts|d1"], ("click",), (1,))},
        )
    )
    assert got.numbers.tolist() == [[1.5]] and got.strings == [["b"]]
    assert got.counts["item"].tolist() == [[[2.0]]]

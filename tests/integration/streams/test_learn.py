"""The online-learning path through the real services: serving, sessions, orphans, a crash.

In-process tests drive :mod:`streamrank.streams.state.user_sessions` and
:class:`streamrank.streams.serving.Reranker` against the real Redis; the worker tests run real
``streamrank worker`` processes on the real broker, one of them killed with SIGKILL in the
middle of the stream.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
import zlib

import numpy as np
import pytest
import redis

from streamrank.models.learning.online_ranker import ScoredCandidate
from streamrank.models.registry import ModelRegistry
from streamrank.models.scoring.cascade import Cascade
from streamrank.models.scoring.fusion import Fusion
from streamrank.models.scoring.tiers import FunctionTier
from streamrank.streams.config import Settings
from streamrank.streams.events import Candidate, Candidates, DeadLetter, Interaction, Ranking
from streamrank.streams.online import OnlineServing, online_ranker_for
from streamrank.streams.serving import Reranker
from streamrank.streams.state.connections import key, redis_client, registry_for
from streamrank.streams.state.feature_store import FeatureStore
from streamrank.streams.state.user_sessions import (
    Checkpoints,
    Claimed,
    Incoming,
    SessionStore,
    build_impression,
)
from streamrank.streams.streaming_simulator import to_interactions
from tests.helpers import consume, wait_for

pytestmark = pytest.mark.integration

TOPIC = "test.interactions"


# -- in process --------------------------------------------------------------------------------


def tiers() -> dict[str, FunctionTier]:
    """Deterministic stand-ins for the models: scores from a hash of query and text."""

    def scorer(salt: str):
        def score(query: str, texts: list[str]) -> np.ndarray:
            keys = [f"{salt}|{query}|{t}".encode() for t in texts]
            return np.array([(zlib.crc32(k) % 1000) / 100.0 for k in keys])

        return score

    return {"dense": FunctionTier("dense", scorer("d")), "ce": FunctionTier("ce", scorer("c"))}


def random_request(rng: np.random.Generator, request_id: str, n: int = 25) -> Candidates:
    return Candidates(
        request_id=request_id,
        query=f"query {rng.integers(5)}",
        candidates=[
            Candidate(
                doc_id=f"d{i}",
                text=None if rng.random() < 0.1 else f"text of d{i}",
                first_stage_score=float(rng.normal()),
                features={"popularity": float(rng.random())},
            )
            for i in rng.permutation(40)[:n]
        ],
    )


def test_a_fresh_online_ranker_serves_the_cascade_order(settings: Settings) -> None:
    client = redis_client(settings)
    store = FeatureStore(client, settings)
    # The online ranker reads the tiers' own scores, not the fused ones: its starting order
    # is the cascade's without fusion.
    cascade = Cascade("dense>ce:8", tiers(), fusion=Fusion("none"))
    online = OnlineServing(online_ranker_for(settings, client), max_loss=0.0)
    with_online = Reranker(cascade, store, settings, online)
    without = Reranker(cascade, store, settings)
    rng = np.random.default_rng(0)
    for n in range(40):
        request = random_request(rng, f"r{n}")
        served, impression = with_online.rank(request)
        cascade_only, _ = without.rank(request)
        assert [i.doc_id for i in served.items] == [i.doc_id for i in cascade_only.items]
        assert [i.position for i in served.items] == list(range(1, len(served.items) + 1))
        assert served.model_version == f"{cascade_only.model_version};online"
        assert "online" in served.timings_ms
        # the impression holds what the learner needs, in served order
        assert impression["online"] is True and impression["randomized"] is False
        shown = impression["items"]
        assert [i["doc_id"] for i in shown] == [i.doc_id for i in served.items[:10]]
        assert all("base_z" in item["ranker_features"] for item in shown)


def test_exploration_stays_within_the_served_candidates_and_is_flagged(
    settings: Settings,
) -> None:
    client = redis_client(settings)
    store = FeatureStore(client, settings)
    cascade = Cascade("dense>ce:8", tiers())
    online = OnlineServing(online_ranker_for(settings, client), max_loss=1.0)
    reranker = Reranker(cascade, store, settings, online)
    plain = Reranker(cascade, store, settings)
    rng = np.random.default_rng(1)
    explored = 0
    for n in range(30):
        request = random_request(rng, f"x{n}")
        served, impression = reranker.rank(request)
        again, _ = reranker.rank(request)  # a replay explores the same way
        assert [i.doc_id for i in again.items] == [i.doc_id for i in served.items]
        cascade_only, _ = plain.rank(request)
        assert sorted(i.doc_id for i in served.items) == sorted(
            c.doc_id for c in request.candidates
        )
        flagged = {i.doc_id for i in served.items[:10] if "explored" in i.flags}
        assert flagged == {i["doc_id"] for i in impression["items"] if i["explored"]}
        if [i.doc_id for i in served.items] != [i.doc_id for i in cascade_only.items]:
            explored += 1
            assert flagged
        # candidates without text keep their slots, whatever the online ranker does
        for item in cascade_only.items:
            if "no_text" in item.flags:
                assert served.items[item.position - 1].doc_id == item.doc_id
    assert explored > 0


def incoming(event: Interaction, partition: int = 0, offset: int = 0) -> Incoming:
    return Incoming(event, event.to_bytes(), TOPIC, partition, offset)


def session_store(settings: Settings) -> SessionStore:
    return SessionStore(redis_client(settings), settings)


def served_impression(store: FeatureStore, request_id: str, docs: list[str]) -> None:
    store.record_impression(
        request_id,
        {
            "request_id": request_id,
            "query": "volga",
            "randomized": False,
            "items": [
                {"doc_id": d, "position": i + 1, "ranker_features": {"base_z": 1.0 - i / 5}}
                for i, d in enumerate(docs)
            ],
        },
    )


def test_sessions_join_dedupe_orphan_and_close_once(settings: Settings) -> None:
    client = redis_client(settings)
    sessions = session_store(settings)
    served_impression(FeatureStore(client, settings), "r1", ["a", "b", "c", "d"])
    events = to_interactions("r1", ["a", "b", "c"], clicked=[1])
    ghost = Interaction(event_id="g1", request_id="nobody", doc_id="a", type="click")
    batch = [incoming(e, offset=i) for i, e in enumerate([*events, events[0], ghost])]

    statuses = sessions.accumulate(batch, {0: 41})
    assert statuses == ["new"] * 4 + ["duplicate", "orphan"]
    assert sessions.applied_offsets() == {0: 41}
    assert sessions.counts() == {"interactions": 4, "duplicates": 1, "late": 0, "orphans": 1}
    assert [o.event_id for o in sessions.orphans(0)] == ["g1"]
    assert sessions.orphans(0)[0].dead_letter(5).original == ghost.to_bytes()

    assert sessions.claim(0, before=time.time(), limit=10) == []  # not due yet
    claimed = sessions.claim(0, before=time.time() + settings.session_close_s, limit=10)
    assert [c.request_id for c in claimed] == ["r1"]
    impression = build_impression(claimed[0])
    assert impression is not None
    assert impression.docs == ("a", "b", "c") and impression.clicked == (1,)
    assert impression.event_id == "r1" and impression.features[0] == {"base_z": 1.0}
    # once claimed, the session is frozen: a new event is late, a replayed one a duplicate
    late = Interaction(event_id="r1:click:3", request_id="r1", doc_id="c", type="click")
    assert sessions.accumulate([incoming(late), incoming(events[1])]) == ["late", "duplicate"]


def test_a_session_is_learned_once_even_when_claimed_twice(settings: Settings) -> None:
    client = redis_client(settings)
    sessions = session_store(settings)
    served_impression(FeatureStore(client, settings), "r2", ["a", "b", "c"])
    sessions.accumulate([incoming(e) for e in to_interactions("r2", ["a", "b"], [0])])
    online = OnlineServing(online_ranker_for(settings, client), max_loss=0.0)
    from streamrank.streams.state.user_sessions import learn_sessions

    later = time.time() + 60
    first = learn_sessions(online, sessions.claim(0, later, 10))
    # a crash before finish(): the session is still due, claimed again, and not learned twice
    second = learn_sessions(online, sessions.claim(0, later, 10))
    assert first["sessions_learned"] == 1 and first["clicks_learned"] == 1
    assert first["impressions_learned"] == 2
    assert second["sessions_learned"] == 0 and second["sessions_replayed"] == 1
    stats = online.ranker.store.doc_stats(["a", "b"])
    assert [s.impressions for s in stats] == [1.0, 1.0] and [s.clicks for s in stats] == [1.0, 0]
    # a session whose impression expired before it closed is counted, not learned
    served_impression(FeatureStore(client, settings), "r3", ["a"])
    sessions.accumulate([incoming(e) for e in to_interactions("r3", ["a"], [0])])
    client.delete(sessions.impression_key("r3"))
    expired = learn_sessions(online, sessions.claim(0, later, 10))
    assert expired["sessions_expired"] == 1 and expired["sessions_learned"] == 0
    assert expired["sessions_replayed"] == 1  # r2 again: still due, never finished
    assert build_impression(Claimed("r9", None, {})) is None


def test_a_replayed_batch_of_many_partitions_is_learned_once(settings: Settings) -> None:
    """Each partition's script and transactions run on its own keys (on a Redis Cluster: in
    its own slot), and a batch replayed whole changes nothing: not the sessions, not the
    counters, not the offsets, not the click statistics."""
    from streamrank.streams.state.user_sessions import learn_sessions

    client = redis_client(settings)
    sessions = session_store(settings)
    features = FeatureStore(client, settings)
    batch, offsets = [], {}
    for p in range(4):
        served_impression(features, f"m{p}", ["a", "b", "c"])
        events = to_interactions(f"m{p}", ["a", "b"], clicked=[p % 2])
        batch += [incoming(e, partition=p, offset=10 * p + i) for i, e in enumerate(events)]
        offsets[p] = 10 * p + len(events) - 1
    statuses = sessions.accumulate(batch, offsets)
    assert statuses == ["new"] * len(batch)
    assert sessions.accumulate(batch, offsets) == ["duplicate"] * len(batch)
    assert sessions.applied_offsets() == offsets
    assert sessions.counts()["interactions"] == len(batch)
    assert sessions.counts()["duplicates"] == len(batch)
    online = OnlineServing(online_ranker_for(settings, client), max_loss=0.0)
    later = time.time() + settings.session_close_s + 1
    claimed = {p: sessions.claim(p, later, 10) for p in range(4)}
    assert {p: [c.request_id for c in found] for p, found in claimed.items()} == {
        p: [f"m{p}"] for p in range(4)
    }
    learned = [learn_sessions(online, found) for found in claimed.values()]
    assert [counts["sessions_learned"] for counts in learned] == [1] * 4
    stats = online.ranker.store.pair_stats("volga", ["a", "b"])
    # a crash before finish(): claimed and learned again, the statistics refuse it
    again = [learn_sessions(online, sessions.claim(p, later, 10)) for p in range(4)]
    assert [counts["sessions_replayed"] for counts in again] == [1] * 4
    assert online.ranker.store.pair_stats("volga", ["a", "b"]) == stats
    for p, found in claimed.items():
        sessions.finish(p, found, learned[p])
    assert sessions.counts()["sessions_learned"] == 4
    assert all(sessions.claim(p, later, 10) == [] for p in range(4))


def test_closed_sessions_count_once_in_the_ctr_minute(settings: Settings) -> None:
    from streamrank.streams.state.service_metrics import ServiceMetrics

    metrics = ServiceMetrics(redis_client(settings), settings)
    at = 1_000_000 * 60.0
    batch = [("s1", True), ("s2", False), ("s1", True), ("s3", True)]  # s1 twice in one batch
    assert metrics.record_sessions(batch, at=at) == 3
    assert metrics.record_sessions([("s2", False), ("s4", False)], at=at) == 1  # s2: a replay
    assert metrics.record_sessions([]) == 0
    assert not metrics.record_session("s3", clicked=True, at=at)
    assert metrics.minute_counts([int(at // 60)]) == [(4, 2)]


def learn_something(online: OnlineServing, event_id: str) -> None:
    """One session through the public API, so the model state changes."""
    docs = [f"d{i}" for i in range(5)]
    scored = online.ranker.score_one("q", [ScoredCandidate(d, ce=-i) for i, d in enumerate(docs)])
    online.learn([scored.impression(event_id, list(range(5)), clicked=[3])])


def test_checkpoints_round_trip_and_a_forged_one_is_refused(settings: Settings) -> None:
    client = redis_client(settings)
    sessions = session_store(settings)
    prefix = key(settings, "registry:")
    checkpoints = Checkpoints(sessions, ModelRegistry(client, prefix, b"right-key"), keep=2)
    online = OnlineServing(online_ranker_for(settings, client), max_loss=0.0)
    learn_something(online, "e1")
    good, good_state = checkpoints.save(online), json.dumps(online.state_dict())
    # a checkpoint signed with another key, pointed at as the newest: never loaded
    forger = Checkpoints(sessions, ModelRegistry(client, prefix, b"wrong-key"))
    learn_something(online, "e2")
    forged = forger.save(online)
    assert [r["digest"] for r in checkpoints.records()] == [forged["digest"], good["digest"]]
    assert good["sessions_learned"] == 1 and forged["sessions_learned"] == 2
    fresh = OnlineServing(online_ranker_for(settings, client), max_loss=0.0)
    loaded = checkpoints.load_latest(fresh)
    assert loaded is not None and loaded["digest"] == good["digest"]
    assert json.dumps(fresh.state_dict()) == good_state
    assert checkpoints.loads()[0]["digest"] == good["digest"]
    # only the newest `keep` are kept, and superseded artifacts are deleted
    for n in range(3):
        learn_something(online, f"more{n}")
        checkpoints.save(online)
    assert len(checkpoints.records()) == 2
    assert not client.exists(*checkpoints.registry.artifact_keys(good["digest"]))


# -- through real workers ------------------------------------------------------------------------

DOCS = {
    "volga": "The Volga is the longest river in Europe; it flows through central Russia.",
    "moscow": "Moscow is the capital and largest city of Russia.",
    "paris": "Paris is the capital of France, on the Seine.",
    "louvre": "The Louvre is an art museum in Paris.",
    "seine": "The Seine is a river in northern France.",
    "danube": "The Danube flows through ten countries into the Black Sea.",
    "rhine": "The Rhine is a river that rises in the Swiss Alps.",
    "berlin": "Berlin is the capital of Germany.",
    "vienna": "Vienna is the capital of Austria, on the Danube.",
    "alps": "The Alps are the highest mountain range in Europe.",
    "everest": "Mount Everest is the highest mountain on Earth.",
    "nile": "The Nile is a major river in northeastern Africa.",
    "amazon": "The Amazon river in South America carries the most water.",
    "tokyo": "Tokyo is the capital of Japan.",
    "fuji": "Mount Fuji is the highest mountain in Japan.",
}
QUERIES = ["river in russia", "capital of france", "highest mountain", "rivers of europe"]
LEARN_ENV = {
    "STREAMRANK_SESSION_CLOSE_S": "1.5",
    "STREAMRANK_ORPHAN_WINDOW_S": "3",
    "STREAMRANK_LEARN_TICK_S": "0.2",
    "STREAMRANK_CHECKPOINT_EVERY_EVENTS": "300",
    "STREAMRANK_CHECKPOINT_EVERY_S": "2",
    "STREAMRANK_REGISTRY_KEY": "test-registry-key",
    "STREAMRANK_KAFKA_SESSION_TIMEOUT_S": "8",
    # learning is under test, not the budget: a burst queued on a slow runner must still be
    # ranked by the cascade, not answered late in the first stage's order
    "STREAMRANK_LATENCY_BUDGET_MS": "30000",
}


def candidates(request_id: str, query: str) -> Candidates:
    return Candidates(
        request_id=request_id,
        query=query,
        candidates=[
            Candidate(doc_id=doc, text=text, first_stage_score=20.0 - i)
            for i, (doc, text) in enumerate(DOCS.items())
        ],
    )


def rank_all(settings: Settings, requests: list[Candidates], timeout_s: float = 180) -> dict:
    """Publish requests and return their rankings by request id."""
    produce_keyed(settings, "candidates", [(r.request_id, r.to_bytes()) for r in requests])
    wanted = {r.request_id for r in requests}
    deadline = time.monotonic() + timeout_s
    found: dict[str, Ranking] = {}
    while time.monotonic() < deadline and len(found) < len(wanted):
        for record in consume(settings, "rankings", 0, timeout_s=1, exact=False):
            ranking = Ranking.model_validate_json(record.value)
            if ranking.request_id in wanted:
                found[ranking.request_id] = ranking
    assert len(found) == len(wanted), f"{len(found)} of {len(wanted)} rankings came"
    return found


def produce_keyed(settings: Settings, kind: str, pairs: list[tuple[str, bytes]]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=5)
    for message_key, value in pairs:
        producer.send(settings.topic(kind), key=message_key.encode(), value=value)
    producer.flush()
    producer.close()


def publish_sessions(settings: Settings, sessions: list[list[Interaction]], pace_s: float = 0.0):
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=5)
    for events in sessions:
        for event in events:
            producer.send(
                settings.topic("interactions"),
                key=event.request_id.encode(),
                value=event.to_bytes(),
            )
        if pace_s:
            producer.flush()
            time.sleep(pace_s)
    producer.flush()
    producer.close()


def due_sessions(client: redis.Redis, settings: Settings) -> int:
    return sum(client.zcard(k) for k in client.scan_iter(match=key(settings, "learn", "{p*}:due")))


def learner_totals(settings: Settings, client: redis.Redis) -> tuple[float, float]:
    """Impressions and clicks in the learner's statistics, over every document."""
    from streamrank.streams.online import learner_store_for

    stats = learner_store_for(settings, client).doc_stats(list(DOCS))
    return sum(s.impressions for s in stats), sum(s.clicks for s in stats)


def test_a_killed_worker_loses_and_doubles_nothing(settings: Settings, start_worker) -> None:
    client = redis_client(settings)
    sessions = session_store(settings)
    first = start_worker(LEARN_ENV)
    requests = [candidates(f"s{n}", QUERIES[n % len(QUERIES)]) for n in range(320)]
    rankings = rank_all(settings, requests)

    rng = np.random.default_rng(7)
    published: list[list[Interaction]] = []
    for request in requests:
        shown = [item.doc_id for item in rankings[request.request_id].items[:10]]
        clicked = sorted(rng.choice(10, size=int(rng.integers(1, 3)), replace=False).tolist())
        published.append(to_interactions(request.request_id, shown, clicked))
    duplicates = [events[:3] for events in published[:40:4]]  # republished on purpose
    expected_clicks = sum(e.type == "click" for events in published for e in events)
    expected_impressions = sum(e.type == "impression" for events in published for e in events)
    unique = sum(len(events) for events in published)

    # publish while the worker learns, and kill it with SIGKILL in the middle
    producer = threading.Thread(
        target=publish_sessions, args=(settings, published[:10] + duplicates + published[10:], 0.02)
    )
    producer.start()
    wait_for(lambda: sessions.counts().get("sessions_learned", 0) >= 30, 120, "some learning")
    wait_for(
        lambda: bool(Checkpoints(sessions, registry(settings, client)).records()),
        60,
        "a checkpoint",
    )
    os.kill(first.process.pid, signal.SIGKILL)
    first.process.wait()
    at_kill = sessions.counts()
    producer.join()
    assert 0 < at_kill["sessions_learned"] < len(published)
    newest = Checkpoints(sessions, registry(settings, client)).records()[0]

    second = start_worker(LEARN_ENV)
    ghost = Interaction(event_id="ghost:click:1", request_id="ghost", doc_id="volga", type="click")
    produce_keyed(
        settings,
        "interactions",
        [("ghost", ghost.to_bytes()), ("bad", b"not json")]
        + [(e.request_id, e.to_bytes()) for events in duplicates for e in events],
    )

    def everything_learned() -> bool:
        counts = sessions.counts()
        return counts.get("interactions") == unique and due_sessions(client, settings) == 0

    wait_for(everything_learned, 180, "every session to be learned")
    impressions, clicks = learner_totals(settings, client)
    assert (impressions, clicks) == (expected_impressions, expected_clicks)
    counts = sessions.counts()
    assert counts["duplicates"] >= 2 * sum(len(d) for d in duplicates)
    assert counts.get("late", 0) == 0
    assert counts["sessions_learned"] + counts.get("sessions_replayed", 0) >= len(published)

    # the orphan and the malformed message end up as dead letters, originals whole
    wait_for(lambda: sessions.counts().get("orphans_dead") == 1, 30, "the orphan's dead letter")
    letters = [DeadLetter.model_validate_json(r.value) for r in consume(settings, "deadletter", 2)]
    by_reason = {letter.reason: letter for letter in letters}
    assert by_reason["orphan"].original == ghost.to_bytes()
    assert by_reason["orphan"].agent == "learn"
    assert by_reason["not-json"].original == b"not json"

    # the restarted worker loaded the newest checkpoint the first one wrote
    loads = Checkpoints(sessions, registry(settings, client)).loads()
    assert loads[0]["digest"] == newest["digest"] and loads[0]["pid"] == second.process.pid
    assert f"loaded learner checkpoint {newest['digest']}" in second.log()


def test_the_learn_consumer_resumes_after_its_commits_or_where_faust_left_off(
    settings: Settings,
) -> None:
    """A partition starts after the learn group's last commit; one it never committed starts
    where the worker's Faust group (the learn agent before it had its own) left it."""
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KafkaPartition
    from kafka.structs import OffsetAndMetadata

    from streamrank.streams.agents.learn_consumer import LearnConsumer

    topic = settings.topic("interactions")
    events = [to_interactions(f"m{n}", ["a", "b"], [])[0] for n in range(20)]
    produce_keyed(settings, "interactions", [(e.request_id, e.to_bytes()) for e in events])
    faust_group = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=settings.app_id,
        enable_auto_commit=False,
    )
    faust_group.commit({KafkaPartition(topic, 0): OffsetAndMetadata(2, "", -1)})
    faust_group.close()

    async def first_offsets(commit: bool) -> dict[int, int]:
        """The first offset read per partition; with ``commit``, commit what was read."""
        consumer = LearnConsumer(settings)
        await consumer.start()
        first: dict[int, int] = {}
        try:
            deadline = time.monotonic() + 60
            while len(first) < 2 and time.monotonic() < deadline:
                records = await consumer.batch()
                for record in records:
                    first.setdefault(record.partition, record.offset)
                if commit:
                    await consumer.commit(records)
        finally:
            await consumer.stop()
        return first

    assert asyncio.run(first_offsets(commit=True)) == {0: 2, 1: 0}
    produce_keyed(settings, "interactions", [(e.request_id, e.to_bytes()) for e in events])
    resumed = asyncio.run(first_offsets(commit=False))
    ends = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    end = ends.end_offsets([KafkaPartition(topic, p) for p in (0, 1)])
    ends.close()
    # the second run starts after what the first one committed: half of what is there now
    assert resumed == {p: end[KafkaPartition(topic, p)] // 2 for p in (0, 1)}


def registry(settings: Settings, client: redis.Redis) -> ModelRegistry:
    """The registry the workers of these tests checkpoint into."""
    key_setting = {"registry_key": LEARN_ENV["STREAMRANK_REGISTRY_KEY"]}
    return registry_for(settings.model_copy(update=key_setting), client)


def test_clicks_on_one_result_move_it_up(settings: Settings, start_worker) -> None:
    client = redis_client(settings)
    sessions = session_store(settings)
    start_worker(LEARN_ENV | {"STREAMRANK_SESSION_CLOSE_S": "0.5"})
    query = "rivers of europe"
    before = rank_all(settings, [candidates("first", query)])["first"]
    target = before.items[4].doc_id  # users always click what the cascade put at rank 5
    published = 0
    for round_ in range(4):
        requests = [candidates(f"r{round_}-{n}", query) for n in range(10)]
        rankings = rank_all(settings, requests)
        batch = []
        for request in requests:
            shown = [item.doc_id for item in rankings[request.request_id].items[:10]]
            batch.append(to_interactions(request.request_id, shown, [shown.index(target)]))
        publish_sessions(settings, batch)
        published += sum(len(events) for events in batch)
        wait_for(
            lambda n=published: (
                sessions.counts().get("interactions") == n and due_sessions(client, settings) == 0
            ),
            60,
            "the round to be learned",
        )
    after = rank_all(settings, [candidates("last", query)])["last"]
    position = next(item.position for item in after.items if item.doc_id == target)
    assert position <= 2, [item.doc_id for item in after.items]  # from rank 5
    assert [i.doc_id for i in after.items] != [i.doc_id for i in before.items]

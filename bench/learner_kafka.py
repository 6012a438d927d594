"""Learn-path throughput through Kafka: interactions per second one worker consumes and learns.

Sessions are real DL19 candidate lists (``../shared/data/trec-dl-2019/bm25-top100.json`` and
its qrels; synthetic lists when absent) served with the rerank agent's own code
(:class:`streamrank.streams.serving.Reranker` with the online ranker, on a ``first-stage`` cascade:
no cross-encoder runs, this measures learning), their impressions recorded in Redis as the agent
records them. A simulated ``navigational`` user clicks; each session is 10 ``impression``
interactions plus one per click (:func:`streamrank.streams.streaming_simulator.to_interactions`).

One ``streamrank worker`` process is started; after a warm-up session is learned, every
interaction is published to Kafka and the clock runs from the first produce until the
worker's Redis counters say every interaction was joined (``ingest``) and every session
learned (``seconds``, which includes ``session_close_s``). The baseline, in the same run, is
the in-process learner on the same sessions: ``OnlineRanker.learn_one`` on an in-memory store
(what bench/learner.py measures) and on the Redis store. Prints one JSON object.

Example: python bench/learner_kafka.py --interactions 50000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streamrank.models.learning.click_models import click_model  # noqa: E402
from streamrank.models.learning.online_ranker import (  # noqa: E402
    Impression,
    InMemoryStore,
    OnlineRanker,
    RankerConfig,
)
from streamrank.models.scoring.cascade import Cascade  # noqa: E402
from streamrank.streams.config import Settings  # noqa: E402
from streamrank.streams.events import Candidate, Candidates, Interaction  # noqa: E402
from streamrank.streams.kafka.topics import admin_client, create_topics  # noqa: E402
from streamrank.streams.online import NEVER, OnlineServing, online_ranker_for  # noqa: E402
from streamrank.streams.serving import Reranker  # noqa: E402
from streamrank.streams.state.connections import key  # noqa: E402
from streamrank.streams.state.feature_store import FeatureStore  # noqa: E402
from streamrank.streams.state.user_sessions import (  # noqa: E402
    Claimed,
    SessionStore,
    build_impression,
    payload_of,
)
from streamrank.streams.streaming_simulator import to_interactions  # noqa: E402

DL19 = ROOT.parent / "shared" / "data" / "trec-dl-2019"
K = 10


def load_lists(limit: int | None) -> tuple[list[tuple[str, list[Candidate], list[int]]], str]:
    """(query, candidates, grades) per query: DL19 when present, else synthetic lists."""
    lists_path, qrels_path = DL19 / "bm25-top100.json", DL19 / "qrels.txt"
    if not lists_path.exists():
        rng = np.random.default_rng(0)
        synthetic = []
        for q in range(43):
            cands = [
                Candidate(doc_id=f"q{q}d{i}", text="x", first_stage_score=-i) for i in range(100)
            ]
            synthetic.append((f"query {q}", cands, rng.integers(0, 4, 100).tolist()))
        return synthetic, "synthetic"
    from streamrank.models.retrieval.corpus import read_qrels

    qrels = read_qrels(qrels_path).items
    lists = []
    for entry in json.loads(lists_path.read_text())[:limit]:
        hits = entry["hits"]
        if not hits:
            continue
        judged = qrels.get(str(hits[0]["qid"]), {})
        cands = [
            Candidate(
                doc_id=str(h["docid"]),
                text=h.get("content") or "x",
                first_stage_score=float(h["score"]),
            )
            for h in hits
        ]
        lists.append((entry["query"], cands, [judged.get(c.doc_id, 0) for c in cands]))
    return lists, "dl19-bm25-top100"


def build_sessions(settings: Settings, client: redis.Redis, target: int, seed: int):
    """Serve sessions with the rerank agent's code path until ``target`` interactions."""
    lists, source = load_lists(None)
    store = FeatureStore(client, settings)
    online = OnlineServing(online_ranker_for(settings, client), max_loss=0.0)
    reranker = Reranker(Cascade("first-stage", {}), store, settings, online)
    user, rng = click_model("navigational"), np.random.default_rng(seed)
    sessions: list[list[Interaction]] = []
    impressions: list[Impression] = []
    total = 0
    while total < target:
        query, cands, grades = lists[len(sessions) % len(lists)]
        request_id = f"bench-{len(sessions)}"
        request = Candidates(request_id=request_id, query=query, candidates=cands, k=K)
        ranking, impression = reranker.rank(request)
        store.record_impression(request_id, impression)  # what the rerank agent's serve() does
        grade_of = dict(zip((c.doc_id for c in cands), grades, strict=True))
        shown = [item.doc_id for item in ranking.items[:K]]
        events = to_interactions(request_id, shown, user.clicks([grade_of[d] for d in shown], rng))
        sessions.append(events)
        payloads = {e.event_id: payload_of(e) for e in events}
        built = build_impression(Claimed(request_id, impression, payloads))
        assert built is not None
        impressions.append(built)
        total += len(events)
    return sessions, impressions, source


def baseline(impressions: list[Impression], store: Any) -> dict[str, Any]:
    """The in-process learner on the same sessions: interactions per second."""
    ranker = OnlineRanker(store, RankerConfig(sync_every=NEVER))
    interactions = sum(len(i.docs) + len(i.clicked) for i in impressions)
    started = time.perf_counter()
    for impression in impressions:
        ranker.learn_one(impression)
    seconds = time.perf_counter() - started
    return {"seconds": round(seconds, 2), "interactions_per_second": round(interactions / seconds)}


def start_worker(settings: Settings, env: dict[str, str], log_path: Path) -> subprocess.Popen:
    full = dict(os.environ) | env
    for field in ("kafka_bootstrap", "redis_url", "topic_prefix", "app_id", "partitions"):
        full[f"STREAMRANK_{field.upper()}"] = str(getattr(settings, field))
    log = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "streamrank.streams.cli", "worker", "-l", "warning"],
        env=full,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    return process


def publish(settings: Settings, sessions: list[list[Interaction]]) -> float:
    """Send every interaction keyed by request id; returns when the first was sent."""
    from kafka import KafkaProducer

    producer = KafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, linger_ms=20, batch_size=1 << 20, acks=1
    )
    values = [(e.request_id.encode(), e.to_bytes()) for events in sessions for e in events]
    first = time.perf_counter()
    for message_key, value in values:
        producer.send(settings.topic("interactions"), key=message_key, value=value)
    producer.flush()
    producer.close()
    return first


def wait_learned(
    sessions_store: SessionStore,
    client: redis.Redis,
    settings: Settings,
    interactions: int,
    sessions: int,
    timeout_s: float,
) -> tuple[float | None, float | None]:
    """Poll the worker's counters: when all interactions were joined, when all were learned."""
    ingested = learned = None
    deadline = time.perf_counter() + timeout_s
    due_keys = [sessions_store.partition_key(p, "due") for p in range(settings.partitions)]
    while time.perf_counter() < deadline:
        counts = sessions_store.counts()
        now = time.perf_counter()
        if ingested is None and counts.get("interactions", 0) >= interactions:
            ingested = now
        done = counts.get("sessions_learned", 0) + counts.get("sessions_replayed", 0)
        if ingested is not None and done >= sessions and not any(client.zcard(k) for k in due_keys):
            learned = now
            break
        time.sleep(0.02)
    return ingested, learned


def measure(
    store: SessionStore,
    client: redis.Redis,
    settings: Settings,
    sessions: list[list[Interaction]],
    timeout_s: float,
    started: Any,
) -> dict[str, Any]:
    """Throughput of one phase. ``started``: a publish function to time from, or None to time
    from the first interaction the worker applies (the messages are already in Kafka)."""
    before = store.counts()
    interactions = sum(len(events) for events in sessions)
    target = before.get("interactions", 0) + interactions
    done_before = before.get("sessions_learned", 0) + before.get("sessions_replayed", 0)
    if started is not None:
        first = started(settings, sessions)
        produced = time.perf_counter() - first
    else:
        deadline = time.perf_counter() + timeout_s
        while store.counts().get("interactions", 0) == before.get("interactions", 0):
            if time.perf_counter() > deadline:
                raise SystemExit("the worker applied nothing")
            time.sleep(0.005)
        first, produced = time.perf_counter(), None
    ingested, learned = wait_learned(
        store, client, settings, target, done_before + len(sessions), timeout_s
    )
    if learned is None or ingested is None:
        raise SystemExit(f"not everything was learned in {timeout_s} s")
    seconds = learned - first
    return {
        "interactions": interactions,
        "seconds": round(seconds, 2),
        "interactions_per_second": round(interactions / seconds),
        "ingest_seconds": round(ingested - first, 2),
        "ingest_interactions_per_second": round(interactions / (ingested - first)),
        "produce_seconds": None if produced is None else round(produced, 2),
    }


def cleanup(settings: Settings, client: redis.Redis) -> None:
    admin = admin_client(settings)
    try:
        admin.delete_topics([t for t in admin.list_topics() if t.startswith(settings.topic_prefix)])
    finally:
        admin.close()
    for name in client.scan_iter(match=f"{settings.topic_prefix}*"):
        client.delete(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interactions", type=int, default=50_000)
    parser.add_argument("--session-close-s", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()

    run = uuid.uuid4().hex[:8]
    base = Settings()
    settings = base.model_copy(
        update={"topic_prefix": f"bench-{run}.", "app_id": f"streamrank-bench-{run}"}
    )
    client = redis.Redis.from_url(settings.redis_url)
    create_topics(settings)
    log_path = ROOT / f".run/bench-learner-kafka-{run}.log"
    log_path.parent.mkdir(exist_ok=True)
    worker = None
    try:
        sessions, impressions, source = build_sessions(
            settings, client, args.interactions, args.seed
        )
        in_memory = baseline(impressions, InMemoryStore())
        from streamrank.streams.state.learner_store import RedisLearnerStore

        redis_store = baseline(
            impressions, RedisLearnerStore(client, key(settings, "baseline-ltr:"), 3600)
        )
        env = {
            "STREAMRANK_SESSION_CLOSE_S": str(args.session_close_s),
            "STREAMRANK_LEARN_TICK_S": "0.1",
            "STREAMRANK_EXPLORATION_MAX_LOSS": "0",
            "STREAMRANK_REGISTRY_KEY": f"bench-{run}",
        }
        store = SessionStore(client, settings)
        half = len(sessions) // 2
        backlog, live = sessions[:half], sessions[half:]
        # 1. drain: the first half waits in Kafka before the worker starts
        publish(settings, backlog)
        worker = start_worker(settings, env, log_path)
        drain = measure(store, client, settings, backlog, args.timeout, started=None)
        # 2. live: the second half is published while the worker consumes
        live_result = measure(store, client, settings, live, args.timeout, started=publish)
        counts = store.counts()
        result = {
            "interactions": live_result["interactions"],
            "sessions": len(live),
            "seconds": live_result["seconds"],
            "interactions_per_second": live_result["interactions_per_second"],
            "live": live_result,
            "drain": drain,
            "source": source,
            "session_close_s": args.session_close_s,
            "learned": {
                name: counts.get(name, 0)
                for name in ("sessions_learned", "impressions_learned", "clicks_learned")
            },
            "baseline_in_process": {"in_memory_store": in_memory, "redis_store": redis_store},
            "partitions": settings.partitions,
        }
        print(json.dumps(result))
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(timeout=30)
        cleanup(settings, client)


if __name__ == "__main__":
    main()

"""What two shadow rankers cost the primary: its p95 latency with and without them, one run.

A primary worker serves TREC DL 2019 requests (100 candidates each, texts included) with the
registry's active version at a steady pace a live service would run at; the same requests
are replayed (under fresh ids) in alternating phases, ``--rounds`` times: no shadow, then two
shadow workers running (``streamrank shadow worker``: their own consumer groups, started at
the live end of the topic, ``SCHED_IDLE``), and a last phase without shadows. Latency is the
primary's own serving time per request (the impression's ``latency_ms``) and the client's
end-to-end time (produce -> ranking read); the percentiles pool each condition's phases, so
a noisy machine's drift falls on both conditions alike.

Documents reach the worker first through ``items`` (ingestion encodes their vectors), and
every phase starts with an empty cross-encoder score cache, so each phase's primary scores
its pairs afresh. Shadows rank after the primary and reuse its cached scores for pairs they
share (``dense>ce:30`` shares the primary's 20; ``ce:30`` part of them).

Needs the services (``streamrank services up``), the models and ``../shared/data``.

Example: python bench/shadow_overhead.py --rounds 3 --rate 2
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kafka import KafkaConsumer, KafkaProducer, TopicPartition  # noqa: E402
from kafka.structs import OffsetAndMetadata  # noqa: E402

from streamrank.models.evaluation.rerank import load_candidates  # noqa: E402
from streamrank.streams.config import Settings  # noqa: E402
from streamrank.streams.events import Candidate, Candidates, Item, Ranking  # noqa: E402
from streamrank.streams.kafka.topics import admin_client, create_topics  # noqa: E402
from streamrank.streams.state.connections import (  # noqa: E402
    key,
    redis_client,
    registry_for,
    shadow_stats_for,
)
from streamrank.streams.state.feature_store import FeatureStore  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "trec-dl-2019" / "bm25-top100.json"


def start(settings: Settings, args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    full = (
        dict(os.environ)
        | env
        | {
            "STREAMRANK_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "STREAMRANK_REDIS_URL": settings.redis_url,
            "STREAMRANK_TOPIC_PREFIX": settings.topic_prefix,
            "STREAMRANK_APP_ID": settings.app_id,
            "STREAMRANK_PARTITIONS": str(settings.partitions),
            "STREAMRANK_REGISTRY_KEY": settings.registry_key,
        }
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "streamrank.streams.cli", *args, "-l", "info"],
        env=full,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    deadline = time.monotonic() + 180
    while "Worker]: Ready" not in log.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{' '.join(args)} did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.3)
    return process


def ingest(settings: Settings, requests: list[Candidates], timeout_s: float = 900) -> None:
    """Publish every document to ``items`` and wait until the worker has encoded them all.

    That is how a deployment meets its documents (on ingestion, not inside a request's
    latency budget), so the phases below measure serving, not first-sight encoding.
    """
    documents = {c.doc_id: c.text for r in requests for c in r.candidates if c.text}
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=20)
    for doc_id, text in documents.items():
        producer.send(
            settings.topic("items"),
            key=doc_id.encode(),
            value=Item(doc_id=doc_id, text=text).to_bytes(),
        )
    producer.flush()
    producer.close()
    client = redis_client(settings)
    pattern = key(settings, "vec:") + "*"
    deadline = time.monotonic() + timeout_s
    while sum(1 for _ in client.scan_iter(match=pattern, count=1000)) < len(documents):
        if time.monotonic() > deadline:
            raise SystemExit(f"the worker did not encode {len(documents)} documents in time")
        time.sleep(2)


def skip_backlog(settings: Settings, group: str) -> None:
    """Commit a new consumer group at the end of ``candidates``: it starts on live traffic.

    A shadow group starts at the earliest offset; here that would replay the earlier
    phases' requests, whose scores would then be cached ahead of the primary's requests.
    """
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, group_id=group, enable_auto_commit=False
    )
    topic = settings.topic("candidates")
    partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
    consumer.assign(partitions)
    consumer.seek_to_end(*partitions)
    consumer.commit({p: OffsetAndMetadata(consumer.position(p), "", -1) for p in partitions})
    consumer.close()


def run_phase(
    settings: Settings, requests: list[Candidates], rate: float, warmup: int
) -> dict[str, Any]:
    """Send the requests at ``rate`` per second; latencies of those after ``warmup``.

    Every phase replays the same queries, so the cross-encoder score cache is emptied first:
    otherwise the primary would score nothing after the first phase and a shadow's cost
    could not show. Document vectors stay cached (they are computed once, on ingestion).
    """
    client = redis_client(settings)
    for name in client.scan_iter(match=key(settings, "score:") + "*"):
        client.delete(name)
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks=1, linger_ms=0)
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
    topic = settings.topic("rankings")
    partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
    consumer.assign(partitions)
    consumer.seek_to_end(*partitions)
    for partition in partitions:
        consumer.position(partition)
    nonce = uuid.uuid4().hex[:6]
    sent: dict[str, float] = {}
    received: dict[str, float] = {}
    timings: dict[str, dict[str, float]] = {}
    started = time.monotonic()
    for number, request in enumerate(requests):
        while time.monotonic() < started + number / rate:
            _drain(consumer, sent, received, timings)
        copy = request.model_copy(update={"request_id": f"{nonce}-{number}"})
        sent[copy.request_id] = time.monotonic()
        producer.send(
            settings.topic("candidates"), key=copy.request_id.encode(), value=copy.to_bytes()
        )
        producer.flush()
    deadline = time.monotonic() + 120
    while len(received) < len(sent) and time.monotonic() < deadline:
        _drain(consumer, sent, received, timings)
    store = FeatureStore(redis_client(settings), settings)
    ids = [f"{nonce}-{n}" for n in range(warmup, len(requests))]
    producer.close()
    consumer.close()
    return {
        "serving_ms": [store.impression(i)["latency_ms"] for i in ids],
        "end_to_end_ms": [1000 * (received[i] - sent[i]) for i in ids if i in received],
        "timings": [timings[i] for i in ids if i in timings],
        "lost": len(sent) - len(received),
    }


def summarize(phases: list[dict[str, Any]]) -> dict[str, Any]:
    """Percentiles over the pooled samples of several phases of one condition."""
    serving = [ms for phase in phases for ms in phase["serving_ms"]]
    end_to_end = [ms for phase in phases for ms in phase["end_to_end_ms"]]
    return {
        "requests": len(serving),
        "serving_p50_ms": round(float(np.percentile(serving, 50)), 1),
        "serving_p95_ms": round(float(np.percentile(serving, 95)), 1),
        "end_to_end_p95_ms": round(float(np.percentile(end_to_end, 95)), 1),
        "per_phase_serving_p95_ms": [
            round(float(np.percentile(phase["serving_ms"], 95)), 1) for phase in phases
        ],
        "lost": sum(phase["lost"] for phase in phases),
        "stage_p50_ms": _stage_medians([t for phase in phases for t in phase["timings"]]),
    }


def _stage_medians(timings: list[dict[str, float]]) -> dict[str, float]:
    stages = sorted({stage for t in timings for stage in t})
    return {s: round(float(np.median([t.get(s, 0.0) for t in timings])), 1) for s in stages}


def _drain(
    consumer: KafkaConsumer,
    sent: dict[str, float],
    received: dict[str, float],
    timings: dict[str, dict[str, float]],
) -> None:
    for batch in consumer.poll(timeout_ms=5).values():
        for record in batch:
            ranking = Ranking.model_validate_json(record.value)
            if ranking.request_id in sent and ranking.request_id not in received:
                received[ranking.request_id] = time.monotonic()
                timings[ranking.request_id] = ranking.timings_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=60, help="requests per phase")
    parser.add_argument("--rate", type=float, default=2.0, help="requests per second")
    parser.add_argument("--rounds", type=int, default=3, help="(alone, with shadows) pairs")
    parser.add_argument("--primary", default="dense>ce:20")
    parser.add_argument("--shadows", default="ce:30,dense>ce:30", help="two pipelines")
    parser.add_argument("--kafka", default="127.0.0.1:9092")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    if not DATA.exists():
        sys.exit(f"no evaluation data at {DATA}")
    run = uuid.uuid4().hex[:8]
    settings = Settings(
        kafka_bootstrap=args.kafka,
        redis_url=args.redis,
        topic_prefix=f"bench-{run}.",
        app_id=f"bench-{run}",
        partitions=2,
        registry_key="bench",
    )
    created = [r.name for r in create_topics(settings)]
    registry = registry_for(settings, redis_client(settings))
    registry.activate(registry.register(pipeline=args.primary).version)
    shadows = [registry.register(pipeline=p).version for p in args.shadows.split(",")]
    for version in shadows:
        registry.add_shadow(version)
    queries = load_candidates(DATA)
    requests = [
        Candidates(
            request_id=q.qid,
            query=q.text,
            candidates=[
                Candidate(doc_id=c.doc_id, text=c.text, first_stage_score=c.first_stage_score)
                for c in q.candidates
            ],
        )
        for q in queries[: args.requests]
    ]
    logs = Path(f"/tmp/streamrank-bench-{run}")
    logs.mkdir()
    env = {"STREAMRANK_ONLINE_LEARNING": "false"}
    primary = start(settings, ["worker"], logs / "primary.log", env)
    warmup = min(10, args.requests // 4)
    alone, with_shadows = [], []
    try:
        ingest(settings, requests)
        run_phase(settings, requests, args.rate, warmup)  # warms the worker up
        for _ in range(args.rounds):
            alone.append(run_phase(settings, requests, args.rate, warmup))
            with_shadows.append(shadow_phase(settings, shadows, requests, args.rate, warmup, logs))
        alone.append(run_phase(settings, requests, args.rate, warmup))
        # a shadow that ranked nothing would cost nothing: show that they did their work
        client = redis_client(settings)
        compared = {v: shadow_stats_for(settings, client, v).snapshot().requests for v in shadows}
    finally:
        primary.terminate()
        primary.wait(timeout=30)
        admin = admin_client(settings)
        admin.delete_topics(created)
        admin.close()
        client = redis_client(settings)
        for name in client.scan_iter(match=f"{settings.topic_prefix}*"):
            client.delete(name)
    none, two = summarize(alone), summarize(with_shadows)
    result = {
        "primary": args.primary,
        "shadows": dict(zip(shadows, args.shadows.split(","), strict=True)),
        "rate_per_s": args.rate,
        "rounds": args.rounds,
        "no_shadows": none,
        "two_shadows": two,
        "shadow_comparisons": compared,
        "p95_increase": round(two["serving_p95_ms"] / none["serving_p95_ms"] - 1, 4),
        "end_to_end_p95_increase": round(
            two["end_to_end_p95_ms"] / none["end_to_end_p95_ms"] - 1, 4
        ),
    }
    print(json.dumps(result, indent=2))


def shadow_phase(
    settings: Settings,
    shadows: list[str],
    requests: list[Candidates],
    rate: float,
    warmup: int,
    logs: Path,
) -> dict[str, Any]:
    """One phase with a shadow worker per version running next to the primary."""
    for version in shadows:
        skip_backlog(settings, f"{settings.app_id}-shadow-{version}")
    env = {"STREAMRANK_ONLINE_LEARNING": "false"}
    workers = [
        start(settings, ["shadow", "worker", v], logs / f"shadow-{v}.log", env) for v in shadows
    ]
    try:
        return run_phase(settings, requests, rate, warmup)
    finally:
        for worker in workers:
            worker.terminate()
            worker.wait(timeout=30)


if __name__ == "__main__":
    main()

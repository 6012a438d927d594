"""What two shadow rankers cost the primary: its p95 latency with and without them, one run.

A primary worker serves TREC DL 2019 requests (100 candidates each, texts included) with the
registry's active version at a steady pace a live service would run at; the same requests
are replayed (under fresh ids) in three phases: no shadow, two shadow workers running
(``streamrank shadow worker``: their own consumer groups, nice 19), no shadow again. Latency
is the primary's own serving time per request (the impression's ``latency_ms``) and the
client's end-to-end time (produce -> ranking read). The baseline is the mean of the two
shadow-free phases, so drift of a noisy machine shows as their difference.

Needs the services (``streamrank services up``), the models and ``../shared/data``.

Example: python bench/shadow_overhead.py --requests 60 --rate 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kafka import KafkaConsumer, KafkaProducer, TopicPartition  # noqa: E402

from models.evaluate import load_candidates  # noqa: E402
from streams.config import Settings  # noqa: E402
from streams.events import Candidate, Candidates, Ranking  # noqa: E402
from streams.feature_store import FeatureStore  # noqa: E402
from streams.state import redis_client, registry_for  # noqa: E402
from streams.topics import admin_client, create_topics  # noqa: E402

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
        [sys.executable, "-m", "streams.cli", *args, "-l", "info"],
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


def run_phase(
    settings: Settings, requests: list[Candidates], rate: float, warmup: int
) -> dict[str, float]:
    """Send the requests at ``rate`` per second; latency percentiles after ``warmup``."""
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
    started = time.monotonic()
    for number, request in enumerate(requests):
        while time.monotonic() < started + number / rate:
            _drain(consumer, sent, received)
        copy = request.model_copy(update={"request_id": f"{nonce}-{number}"})
        sent[copy.request_id] = time.monotonic()
        producer.send(
            settings.topic("candidates"), key=copy.request_id.encode(), value=copy.to_bytes()
        )
        producer.flush()
    deadline = time.monotonic() + 120
    while len(received) < len(sent) and time.monotonic() < deadline:
        _drain(consumer, sent, received)
    store = FeatureStore(redis_client(settings), settings)
    ids = [f"{nonce}-{n}" for n in range(warmup, len(requests))]
    serving = [store.impression(i)["latency_ms"] for i in ids]
    end_to_end = [1000 * (received[i] - sent[i]) for i in ids if i in received]
    producer.close()
    consumer.close()
    return {
        "requests": len(ids),
        "serving_p50_ms": float(np.percentile(serving, 50)),
        "serving_p95_ms": float(np.percentile(serving, 95)),
        "end_to_end_p95_ms": float(np.percentile(end_to_end, 95)),
        "lost": len(sent) - len(received),
    }


def _drain(consumer: KafkaConsumer, sent: dict[str, float], received: dict[str, float]) -> None:
    for batch in consumer.poll(timeout_ms=5).values():
        for record in batch:
            ranking = Ranking.model_validate_json(record.value)
            if ranking.request_id in sent and ranking.request_id not in received:
                received[ranking.request_id] = time.monotonic()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=60, help="requests per phase")
    parser.add_argument("--rate", type=float, default=2.0, help="requests per second")
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
    try:
        run_phase(settings, requests, args.rate, warmup)  # encodes documents once (cached)
        before = run_phase(settings, requests, args.rate, warmup)
        workers = [
            start(settings, ["shadow", "worker", v], logs / f"shadow-{v}.log", env) for v in shadows
        ]
        during = run_phase(settings, requests, args.rate, warmup)
        for worker in workers:
            worker.terminate()
            worker.wait(timeout=30)
        after = run_phase(settings, requests, args.rate, warmup)
    finally:
        primary.terminate()
        primary.wait(timeout=30)
        admin = admin_client(settings)
        admin.delete_topics(created)
        admin.close()
        client = redis_client(settings)
        for name in client.scan_iter(match=f"{settings.topic_prefix}*"):
            client.delete(name)
    baseline = statistics.mean([before["serving_p95_ms"], after["serving_p95_ms"]])
    print(
        json.dumps(
            {
                "primary": args.primary,
                "shadows": dict(zip(shadows, args.shadows.split(","), strict=True)),
                "rate_per_s": args.rate,
                "no_shadows_before": before,
                "two_shadows": during,
                "no_shadows_after": after,
                "p95_increase": during["serving_p95_ms"] / baseline - 1,
                "end_to_end_p95_increase": during["end_to_end_p95_ms"]
                / statistics.mean([before["end_to_end_p95_ms"], after["end_to_end_p95_ms"]])
                - 1,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

"""What a request and a learned interaction cost in Redis: bytes per key family, one run.

A real worker (``streamrank worker``, its own topic and key prefix on the shared services)
ranks ``--requests`` TREC DL 2019 requests (``--candidates`` each, texts included); a
``--click-rate`` share of the rankings gets a click on one of its top three, and the run waits
until every clicked session is learned. Then every key under the run's prefix is measured with
``MEMORY USAGE`` and grouped by family (``impression``, ``done:rerank``, ``learn:session``,
``ltr:applied``, ...), with each family's TTL. Per-key measurement, not ``INFO memory``
deltas: the shared Redis serves other clients at the same time, whose writes would land in a
delta (the delta is printed too, as a cross-check).

``bytes_per_request`` is everything the run left in Redis over the requests; ``bytes_per_
learned_interaction`` is what the learn path's families (sessions, applied markers, click
statistics, CTR markers) hold over the interactions learned. Documents' vectors and the score
cache are shared across requests (a query seen before hits it), so they are listed per family
but belong to the corpus and the query mix, not to one request.

Needs the services (``streamrank services up``), the models and ``../shared/data``. The
run's topics and keys are deleted at the end.

Example: python bench/memory.py --requests 300 --json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kafka import KafkaConsumer, KafkaProducer, TopicPartition  # noqa: E402

from streamrank.models.evaluation.rerank import load_candidates  # noqa: E402
from streamrank.streams.config import Settings  # noqa: E402
from streamrank.streams.events import Candidate, Candidates, Interaction, Ranking  # noqa: E402
from streamrank.streams.kafka.topics import admin_client, create_topics  # noqa: E402
from streamrank.streams.state.user_sessions import SessionStore  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "trec-dl-2019" / "bm25-top100.json"
LEARN_FAMILIES = (
    "learn:session",
    "ltr:applied",
    "ltr:pairs",
    "ltr:docstats",
    "metrics:session-seen",
)
"""Families the learn path writes (what a learned interaction costs)."""
TWO_PART = ("done", "learn", "ltr", "metrics", "shadow", "registry")
"""Families named by their first two key parts (``done:rerank``, ``learn:session``...)."""


class LiveWorker:
    """A ``streamrank worker`` process on its own topics and key prefix, with traffic."""

    def __init__(self, settings: Settings, log_path: Path, env: dict[str, str]) -> None:
        self.settings = settings
        self.log_path = log_path
        created = create_topics(settings)
        self.topics = [result.name for result in created]
        full = (
            dict(os.environ)
            | {
                "STREAMRANK_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
                "STREAMRANK_REDIS_URL": settings.redis_url,
                "STREAMRANK_TOPIC_PREFIX": settings.topic_prefix,
                "STREAMRANK_APP_ID": settings.app_id,
                "STREAMRANK_PARTITIONS": str(settings.partitions),
                "STREAMRANK_SESSION_CLOSE_S": str(settings.session_close_s),
                "STREAMRANK_LATENCY_BUDGET_MS": "5000",
            }
            | env
        )
        self.log_file = log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "streamrank.streams.cli", "worker", "-l", "info"],
            env=full,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        self.producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=5)
        self.ranked: dict[str, Ranking] = {}
        self.clicked: set[str] = set()
        self.stop_reading = threading.Event()
        self.reader: threading.Thread | None = None

    def wait_ready(self, timeout_s: float = 180) -> None:
        deadline = time.monotonic() + timeout_s
        while "Worker]: Ready" not in self.log_path.read_text(errors="replace"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                tail = self.log_path.read_text(errors="replace")[-3000:]
                raise SystemExit(f"worker did not start:\n{tail}")
            time.sleep(0.3)

    def start_clicking(self, click_rate: float, seed: int = 0) -> None:
        """Read rankings as they come; click one of the top three of ``click_rate`` of them."""
        self.reader = threading.Thread(target=self._read, args=(click_rate, seed), daemon=True)
        self.reader.start()

    def _read(self, click_rate: float, seed: int) -> None:
        rng = random.Random(seed)
        consumer = KafkaConsumer(bootstrap_servers=self.settings.kafka_bootstrap)
        topic = self.settings.topic("rankings")
        partitions = [TopicPartition(topic, p) for p in range(self.settings.partitions)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        while not self.stop_reading.is_set():
            for batch in consumer.poll(timeout_ms=200).values():
                for record in batch:
                    ranking = Ranking.model_validate_json(record.value)
                    if ranking.request_id in self.ranked:
                        continue
                    self.ranked[ranking.request_id] = ranking
                    if ranking.items and rng.random() < click_rate:
                        self.click(ranking, rng)
        consumer.close()

    def click(self, ranking: Ranking, rng: random.Random) -> None:
        item = rng.choice(ranking.items[:3])
        event = Interaction(
            event_id=f"{ranking.request_id}-c",
            request_id=ranking.request_id,
            doc_id=item.doc_id,
            type="click",
            position=item.position,
        )
        key = ranking.request_id.encode()
        self.producer.send(self.settings.topic("interactions"), key=key, value=event.to_bytes())
        self.clicked.add(ranking.request_id)

    def send(self, request: Candidates) -> None:
        topic = self.settings.topic("candidates")
        self.producer.send(topic, key=request.request_id.encode(), value=request.to_bytes())

    def wait_ranked(self, count: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.ranked) < count and time.monotonic() < deadline:
            time.sleep(0.2)
        self.producer.flush()

    def rss_bytes(self) -> int:
        """The worker process's resident set size (``VmRSS`` of ``/proc``)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def close(self, client: redis.Redis) -> None:
        self.stop_reading.set()
        if self.reader is not None:
            self.reader.join(timeout=5)
        self.producer.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.log_file.close()
        delete_run(self.settings, self.topics, client)


def delete_run(settings: Settings, topics: list[str], client: redis.Redis) -> None:
    """Delete a run's topics and every Redis key under its prefix."""
    admin = admin_client(settings)
    try:
        admin.delete_topics(topics)
    finally:
        admin.close()
    for name in client.scan_iter(match=f"{settings.topic_prefix}*", count=1000):
        client.delete(name)


def run_settings(redis_url: str, kafka: str, session_close_s: float = 1.0) -> Settings:
    run = uuid.uuid4().hex[:10]
    return Settings(
        kafka_bootstrap=kafka,
        redis_url=redis_url,
        topic_prefix=f"bench-mem-{run}.",
        app_id=f"streamrank-bench-{run}",
        partitions=2,
        session_close_s=session_close_s,
    )


def requests_forever(candidates: int) -> Any:
    """Fresh request ids over the TREC DL 2019 queries, round and round."""
    queries = load_candidates(DATA)
    number = 0
    while True:
        for query in queries:
            yield Candidates(
                request_id=f"req-{number}",
                query=query.text,
                user_id=f"user-{number % 50}",
                candidates=[
                    Candidate(doc_id=c.doc_id, text=c.text, first_stage_score=c.first_stage_score)
                    for c in query.candidates[:candidates]
                ],
            )
            number += 1


def family_of(name: str, prefix: str) -> str:
    # hash tags ({p0}, {learner}, {ctr-3}, ...) group keys into slots, not into families
    parts = [p for p in name[len(prefix) :].split(":") if not p.startswith("{")]
    return ":".join(parts[:2]) if parts[0] in TWO_PART and len(parts) > 2 else parts[0]


def measure_keys(client: redis.Redis, prefix: str) -> dict[str, dict[str, Any]]:
    """Bytes (``MEMORY USAGE``), key count and one TTL per family of the keys under ``prefix``."""
    families: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"keys": 0, "bytes": 0, "ttl_s": None}
    )
    names = [n.decode() for n in client.scan_iter(match=f"{prefix}*", count=1000)]
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.memory_usage(name, samples=0)
        pipe.ttl(name)
    replies = pipe.execute()
    for i, name in enumerate(names):
        family = families[family_of(name, prefix)]
        family["keys"] += 1
        family["bytes"] += int(replies[2 * i] or 0)
        family["ttl_s"] = replies[2 * i + 1]
    return dict(sorted(families.items(), key=lambda item: -item[1]["bytes"]))


def wait_learned(sessions: SessionStore, count: int, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    learned = 0
    while time.monotonic() < deadline:
        learned = sessions.counts().get("sessions_learned", 0)
        if learned >= count:
            break
        time.sleep(0.5)
    return learned


def degraded_reasons(rankings: Any, top: int = 3) -> dict[str, int]:
    """The most frequent reasons rankings were degraded (cut to 80 characters)."""
    reasons = Counter((r.degraded_reason or "")[:80] for r in rankings if r.degraded)
    return dict(reasons.most_common(top))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--candidates", type=int, default=20)
    parser.add_argument("--click-rate", type=float, default=0.5)
    parser.add_argument("--rate", type=float, default=20.0, help="requests per second sent")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--log", type=Path, default=Path("/tmp/streamrank-bench-memory.log"))
    args = parser.parse_args()
    env = Settings()
    settings = run_settings(env.redis_url, env.kafka_bootstrap)
    client = redis.Redis.from_url(settings.redis_url)
    worker = LiveWorker(settings, args.log, {})
    try:
        worker.wait_ready()
        used_before = client.info("memory")["used_memory"]
        worker.start_clicking(args.click_rate)
        stream = requests_forever(args.candidates)
        for _ in range(args.requests):
            worker.send(next(stream))
            time.sleep(1 / args.rate)
        worker.wait_ranked(args.requests, timeout_s=60 + args.requests)
        worker.stop_reading.set()
        clicked = len(worker.clicked)
        learned = wait_learned(SessionStore(client, settings), clicked, timeout_s=120)
        families = measure_keys(client, settings.topic_prefix)
        used_after = client.info("memory")["used_memory"]
    finally:
        worker.close(client)
    total = sum(f["bytes"] for f in families.values())
    learn_bytes = sum(f["bytes"] for name, f in families.items() if name in LEARN_FAMILIES)
    result = {
        "requests": args.requests,
        "ranked": len(worker.ranked),
        "degraded": sum(r.degraded for r in worker.ranked.values()),
        "degraded_reasons": degraded_reasons(worker.ranked.values()),
        "candidates": args.candidates,
        "clicked": clicked,
        "sessions_learned": learned,
        "keys": sum(f["keys"] for f in families.values()),
        "bytes": total,
        "bytes_per_request": round(total / max(1, len(worker.ranked))),
        "bytes_per_learned_interaction": round(learn_bytes / max(1, learned)),
        "impression_bytes": round(
            families.get("impression", {}).get("bytes", 0) / max(1, len(worker.ranked))
        ),
        "used_memory_delta": used_after - used_before,
        "families": families,
    }
    print(json.dumps(result, indent=None if args.json else 2))


if __name__ == "__main__":
    main()

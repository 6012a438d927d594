"""Faults under load: poison, a killed worker, a broker restart and a Redis restart, each against
real ``streamrank worker`` processes on a PRIVATE Kafka broker and Redis.

The services are started by ``deploy/kafka.sh`` and ``deploy/redis.sh`` on free ports with a
private run directory (they are stopped, restarted and killed here, which must never happen to
the ones other work relies on), and deleted afterwards. Each scenario gets its own topic
prefix and consumer group. Prints one JSON object with the figures of every scenario run;
progress goes to stderr.

Scenarios (``--only`` picks some, comma-separated):

``poison``
    ``--fuzz`` generated bad messages per input topic (``candidates``, ``interactions``,
    ``items``, ``users``; the seeded corpus of ``tests/poison.py``, every family), each
    followed by a good one on the same partition: dead letters with their reasons, worker
    crashes, good messages processed.
``kill``
    Two workers; ``--requests`` requests at ``--rate`` per second and the sessions of the
    ranked ones as interactions (up to ``--interactions``); one worker is killed with SIGKILL
    a third of the way in. Lost and duplicated rankings, interactions applied twice or never
    (the learner's statistics against the published sessions: each event has an applied
    marker, so a replay must not count), seconds from the kill to the first ranking on every
    partition, and rebalances of the survivor before the kill (a busy worker kicked out of
    the group by mistake would show as one).
``broker``
    One worker, requests at 5 per second; the broker is stopped for ``--outage`` seconds and
    started again: lost rankings, seconds from the broker being back to the first ranking,
    worker log lines from the stop until rankings come again.
``redis``
    One worker with a registry key, requests at 5 per second with clicks; Redis is killed
    (SIGKILL: a crash, not a clean shutdown) for ``--outage`` seconds and started again:
    requests of the outage ranked (degraded) or dropped, whether the worker survived, the
    registry, audit, pointer and learned-statistics keys before the crash and after it.

Example (a quick run, a few minutes)::

    .venv/bin/python bench/faults.py --json --requests 300 --interactions 1000 --fuzz 200

The full run is ``python bench/faults.py --json`` (3,000 requests, 10,000 interactions,
3,000 bad messages per topic). ``--session-timeout 60`` repeats ``kill`` with the old setting.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import redis
from rich.console import Console

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from streamrank.streams.config import Settings  # noqa: E402
from streamrank.streams.events import (  # noqa: E402
    Candidate,
    Candidates,
    ContractError,
    DeadLetter,
    Item,
    Ranking,
    User,
    decode,
)
from streamrank.streams.kafka.topics import create_topics  # noqa: E402
from streamrank.streams.online import learner_store_for  # noqa: E402
from streamrank.streams.state.connections import key, redis_client  # noqa: E402
from streamrank.streams.state.feature_store import FeatureStore  # noqa: E402
from streamrank.streams.state.user_sessions import SessionStore  # noqa: E402
from streamrank.streams.streaming_simulator import to_interactions  # noqa: E402
from tests.helpers import settings_env  # noqa: E402

console = Console(stderr=True)
SCENARIOS = ("poison", "kill", "broker", "redis")
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
}
QUERIES = ["river in russia", "capital of france", "highest mountain", "rivers of europe"]
# Learning settles fast, so a scenario need not wait long for its sessions to be learned.
LEARN_ENV = {
    "STREAMRANK_SESSION_CLOSE_S": "1.5",
    "STREAMRANK_ORPHAN_WINDOW_S": "30",
    "STREAMRANK_LEARN_TICK_S": "0.2",
    "STREAMRANK_EXPLORATION_MAX_LOSS": "0",
}
REGISTRY_KEY = "bench-faults-registry-key"


def free_port() -> int:
    """A port no process listens on now (the kernel's pick for a bind to port 0)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- private services ---------------------------------------------------------------------


@dataclass
class Services:
    """A private Kafka broker and Redis, started with the deploy scripts in ``run_dir``."""

    run_dir: Path
    kafka_port: int = field(default_factory=free_port)
    controller_port: int = field(default_factory=free_port)
    redis_port: int = field(default_factory=free_port)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    def _script(self, name: str, action: str) -> float:
        """Run ``deploy/<name>.sh <action>``; the time.time() it returned at."""
        env = os.environ | {
            "STREAMRANK_KAFKA_PORT": str(self.kafka_port),
            "STREAMRANK_KAFKA_CONTROLLER_PORT": str(self.controller_port),
            "STREAMRANK_REDIS_PORT": str(self.redis_port),
            "STREAMRANK_RUN_DIR": str(self.run_dir),
        }
        result = subprocess.run(
            ["bash", str(REPO / "deploy" / f"{name}.sh"), action],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        if result.returncode != 0:
            raise RuntimeError(f"deploy/{name}.sh {action} failed:\n{result.stderr[-2000:]}")
        return time.time()

    def kafka(self, action: str) -> float:
        return self._script("kafka", action)

    def redis(self, action: str) -> float:
        return self._script("redis", action)

    def kill_redis(self) -> float:
        pid = int((self.run_dir / "redis" / "redis.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        while Path(f"/proc/{pid}").exists():
            time.sleep(0.05)
        return time.time()


@contextlib.contextmanager
def private_services(keep: bool) -> Iterator[Services]:
    run_dir = Path(tempfile.mkdtemp(prefix="streamrank-faults-"))
    services = Services(run_dir)
    console.log(f"starting private Kafka :{services.kafka_port}, Redis :{services.redis_port}")
    try:
        services.kafka("start")
        services.redis("start")
        yield services
    finally:
        for name in ("kafka", "redis"):
            with contextlib.suppress(Exception):
                services._script(name, "stop")
        if keep:
            console.log(f"kept {run_dir}")
        else:
            shutil.rmtree(run_dir, ignore_errors=True)


def scenario_settings(services: Services, partitions: int) -> Settings:
    """Settings with a fresh topic prefix and app id on the private services; topics created."""
    run = uuid.uuid4().hex[:8]
    settings = Settings(
        kafka_bootstrap=services.bootstrap,
        redis_url=services.redis_url,
        redis_cluster=False,  # the private Redis is one node, whatever the environment says
        topic_prefix=f"faults-{run}.",
        app_id=f"streamrank-faults-{run}",
        partitions=partitions,
    )
    create_topics(settings)
    return settings


# --- workers ------------------------------------------------------------------------------


def child_env(settings: Settings, extra: dict[str, str]) -> dict[str, str]:
    """The environment that makes a child process (worker, CLI) use ``settings``."""
    return settings_env(settings) | extra


class Worker:
    """A real ``streamrank worker`` process, logging to a file."""

    def __init__(self, settings: Settings, log_path: Path, env: dict[str, str]) -> None:
        self.log_path = log_path
        self.log_file = log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "streamrank.streams.cli", "worker", "-l", "info"],
            env=child_env(settings, env),
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def lines(self) -> int:
        return self.log().count("\n")

    def joins(self) -> int:
        """Rebalances this worker took part in (aiokafka logs each join, both groups)."""
        return self.log().count("Joined group")

    def wait_ready(self, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if "Worker]: Ready" in self.log():
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{self.log()[-3000:]}")
            time.sleep(0.2)
        raise RuntimeError(f"worker not ready in {timeout_s}s:\n{self.log()[-3000:]}")

    def crashed(self) -> bool:
        log = self.log()
        return self.process.poll() is not None or "MaxRestartsExceeded" in log

    def kill(self) -> float:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        return time.time()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log_file.close()


@contextlib.contextmanager
def workers(settings: Settings, services: Services, count: int, env: dict[str, str]):
    started = [
        Worker(settings, services.run_dir / f"{settings.app_id}-{n}.log", env) for n in range(count)
    ]
    try:
        for worker in started:
            worker.wait_ready()
        yield started
    finally:
        for worker in started:
            worker.stop()


# --- traffic ------------------------------------------------------------------------------


def request(request_id: str, n: int) -> Candidates:
    return Candidates(
        request_id=request_id,
        query=QUERIES[n % len(QUERIES)],
        candidates=[
            Candidate(doc_id=doc, text=text, first_stage_score=20.0 - i)
            for i, (doc, text) in enumerate(DOCS.items())
        ],
    )


def producer(settings: Settings):
    """A producer that rides out a broker outage (buffers and retries for minutes)."""
    from kafka import KafkaProducer

    return KafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        acks="all",
        linger_ms=5,
        retries=2_147_483_647,
        request_timeout_ms=30_000,
        delivery_timeout_ms=600_000,
        max_block_ms=600_000,
        reconnect_backoff_max_ms=1000,
        max_request_size=2 * 1024 * 1024,
    )


@dataclass
class Seen:
    """A ranking as the bench's consumer saw it."""

    request_id: str
    partition: int
    received: float
    created: float  # the record's timestamp: when the worker sent it
    degraded: bool
    shown: list[str]
    ranking: Ranking | None = None  # the whole message (timings, reasons), for bench/sla.py


class RankingWatcher:
    """Reads the ``rankings`` topic from its start in a thread, noting when each came."""

    def __init__(self, settings: Settings, on_ranking: Callable[[Seen], None] | None = None):
        self.settings = settings
        self.on_ranking = on_ranking
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from kafka import KafkaConsumer, TopicPartition

        # check_crcs off: kafka-python checksums in pure Python (about 1 MB/s), which would
        # delay when a large ranking is seen; the worker's own consumers check theirs
        consumer = KafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            reconnect_backoff_max_ms=500,
            check_crcs=False,
        )
        topic = self.settings.topic("rankings")
        partitions = [TopicPartition(topic, p) for p in range(self.settings.partitions)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        while not self._stop.is_set():
            try:
                batches = consumer.poll(timeout_ms=100)
            except Exception as error:  # the broker is away: keep trying
                console.log(f"rankings consumer: {error!r}")
                time.sleep(0.5)
                continue
            now = time.time()
            for records in batches.values():
                for record in records:
                    self._note(record, now)
        consumer.close()

    def _note(self, record, now: float) -> None:
        ranking = Ranking.model_validate_json(record.value)
        seen = Seen(
            ranking.request_id,
            record.partition,
            now,
            record.timestamp / 1000,
            ranking.degraded,
            [item.doc_id for item in ranking.items],
            ranking,
        )
        with self._lock:
            self.seen.append(seen)
        if self.on_ranking is not None:
            self.on_ranking(seen)

    def snapshot(self) -> list[Seen]:
        with self._lock:
            return list(self.seen)

    def ranked(self, wanted: set[str]) -> set[str]:
        return {s.request_id for s in self.snapshot()} & wanted

    def wait(self, wanted: set[str], timeout_s: float) -> set[str]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.ranked(wanted) != wanted:
            time.sleep(0.25)
        return self.ranked(wanted)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def paced(count: int, rate: float, send: Callable[[int], None], stop: threading.Event) -> None:
    """Call ``send(n)`` for n in range(count) at ``rate`` per second (until ``stop``)."""
    started = time.monotonic()
    for n in range(count):
        if stop.is_set():
            return
        delay = started + n / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        send(n)


def ranking_figures(watcher: RankingWatcher, wanted: set[str]) -> dict[str, int]:
    seen = [s.request_id for s in watcher.snapshot() if s.request_id in wanted]
    counts = Counter(seen)
    return {
        "requests": len(wanted),
        "ranked": len(counts),
        "lost": len(wanted) - len(counts),
        "duplicated": sum(n - 1 for n in counts.values()),
    }


def first_after(seen: list[Seen], since: float, created: bool = False) -> float | None:
    """Seconds from ``since`` to the first ranking received (or sent, ``created``) after it."""
    later = [s.created if created else s.received for s in seen]
    later = [t for t in later if t >= since]
    return round(min(later) - since, 2) if later else None


def longest_gap(seen: list[Seen], since: float) -> float:
    times = sorted([since] + [s.received for s in seen if s.received >= since])
    return round(max((b - a for a, b in itertools.pairwise(times)), default=0.0), 2)


# --- scenario: kill -9 of one of two workers -----------------------------------------------


class SessionPublisher:
    """Publishes the session of every ranking that comes (impressions and one or two clicks),
    until ``budget`` interactions are out; the learner must apply each exactly once."""

    def __init__(self, settings: Settings, wanted: set[str], budget: int) -> None:
        self.settings = settings
        self.wanted = wanted
        self.budget = budget
        self.producer = producer(settings)
        self.rng = np.random.default_rng(7)
        self.done: set[str] = set()
        self.impressions = 0
        self.clicks = 0
        self.sent = 0
        self._lock = threading.Lock()

    def __call__(self, seen: Seen) -> None:
        with self._lock:
            if seen.request_id not in self.wanted or seen.request_id in self.done:
                return
            if self.sent >= self.budget:
                return
            self.done.add(seen.request_id)
            shown = seen.shown[:10]
            size = int(self.rng.integers(1, 3))
            clicked = sorted(self.rng.choice(len(shown), size=size, replace=False).tolist())
            events = to_interactions(seen.request_id, shown, clicked)
            for event in events:
                self.producer.send(
                    self.settings.topic("interactions"),
                    key=event.request_id.encode(),
                    value=event.to_bytes(),
                )
            self.sent += len(events)
            self.impressions += sum(e.type == "impression" for e in events)
            self.clicks += sum(e.type == "click" for e in events)

    def close(self) -> None:
        self.producer.flush()
        self.producer.close()


def learned(settings: Settings) -> tuple[float, float, dict[str, int]]:
    client = redis_client(settings)
    stats = learner_store_for(settings, client).doc_stats(list(DOCS))
    counts = SessionStore(client, settings).counts()
    return sum(s.impressions for s in stats), sum(s.clicks for s in stats), counts


def due_sessions(settings: Settings) -> int:
    client = redis_client(settings)
    return sum(client.zcard(k) for k in client.scan_iter(match=key(settings, "learn", "{p*}:due")))


def wait_learned(settings: Settings, sessions: SessionPublisher, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        counts = learned(settings)[2]
        if counts.get("interactions", 0) >= sessions.sent and due_sessions(settings) == 0:
            return
        time.sleep(0.5)
    console.log("[yellow]learning did not settle in time")


def run_kill(services: Services, args: argparse.Namespace) -> dict[str, Any]:
    settings = scenario_settings(services, partitions=4)
    env = LEARN_ENV | {"STREAMRANK_KAFKA_SESSION_TIMEOUT_S": str(args.session_timeout)}
    wanted = {f"k{n}" for n in range(args.requests)}
    sessions = SessionPublisher(settings, wanted, args.interactions)
    watcher = RankingWatcher(settings, on_ranking=sessions)
    with workers(settings, services, 2, env) as (victim, survivor):
        warm = {f"warm{n}" for n in range(16)}
        send_requests(settings, sorted(warm))
        watcher.wait(warm, 120)
        joins_ready = survivor.joins()
        console.log(f"kill: {args.requests} requests at {args.rate}/s on 2 workers")
        out = producer(settings)
        stop = threading.Event()

        def send(n: int) -> None:
            out.send(
                settings.topic("candidates"),
                key=f"k{n}".encode(),
                value=request(f"k{n}", n).to_bytes(),
            )

        traffic = threading.Thread(target=paced, args=(args.requests, args.rate, send, stop))
        traffic.start()
        while len(watcher.ranked(wanted)) < args.requests // 3 and traffic.is_alive():
            time.sleep(0.1)
        joins_before_kill = survivor.joins() - joins_ready
        killed_at = victim.kill()
        console.log("kill: worker killed with SIGKILL")
        traffic.join()
        out.flush()
        out.close()
        watcher.wait(wanted, args.session_timeout + 180)
        sessions.close()
        wait_learned(settings, sessions, 180)
        survivor_alive = survivor.process.poll() is None
        # one join per consumer group (the agents' and the learn consumer's) is the failover
        joins_after_kill = survivor.joins() - joins_ready - joins_before_kill
    watcher.close()
    seen = watcher.snapshot()
    firsts = {
        # sent, not received: a ranking the killed worker sent just before dying may arrive
        # a moment after the kill
        p: first_after([s for s in seen if s.partition == p], killed_at, created=True)
        for p in range(settings.partitions)
    }
    impressions, clicks, counts = learned(settings)
    return {
        "session_timeout_s": args.session_timeout,
        "heartbeat_interval_s": settings.kafka_heartbeat_interval_s,
        **ranking_figures(watcher, wanted),
        "seconds_kill_to_first_ranking_per_partition": firsts,
        "seconds_kill_to_ranking_on_every_partition": max(
            (v for v in firsts.values() if v is not None), default=None
        ),
        "longest_ranking_gap_after_kill_s": longest_gap(seen, killed_at),
        "survivor_rebalances_under_load_before_kill": joins_before_kill,
        "survivor_joins_after_kill": joins_after_kill,
        "survivor_joins_expected_after_kill": 2,
        "survivor_alive": survivor_alive,
        "interactions_published": sessions.sent,
        "interactions_ingested": counts.get("interactions", 0),
        "impressions_expected": sessions.impressions,
        "impressions_learned": impressions,
        "clicks_expected": sessions.clicks,
        "clicks_learned": clicks,
        "double_applied": max(0, int(impressions - sessions.impressions))
        + max(0, int(clicks - sessions.clicks)),
        "never_applied": max(0, int(sessions.impressions - impressions))
        + max(0, int(sessions.clicks - clicks)),
        "learner_counts": counts,
    }


def send_requests(settings: Settings, ids: list[str]) -> None:
    out = producer(settings)
    for n, request_id in enumerate(ids):
        out.send(
            settings.topic("candidates"),
            key=request_id.encode(),
            value=request(request_id, n).to_bytes(),
        )
    out.flush()
    out.close()


# --- scenario: broker restart ---------------------------------------------------------------


def run_broker(services: Services, args: argparse.Namespace) -> dict[str, Any]:
    settings = scenario_settings(services, partitions=4)
    watcher = RankingWatcher(settings)
    rate, before_s, after_s = 5.0, 10.0, 30.0
    total = int(rate * (before_s + args.outage + after_s))
    wanted = {f"b{n}" for n in range(total)}
    with workers(settings, services, 1, LEARN_ENV) as (worker,):
        out = producer(settings)
        stop = threading.Event()

        def send(n: int) -> None:
            out.send(
                settings.topic("candidates"),
                key=f"b{n}".encode(),
                value=request(f"b{n}", n).to_bytes(),
            )

        traffic = threading.Thread(target=paced, args=(total, rate, send, stop))
        traffic.start()
        time.sleep(before_s)
        lines_at_stop = worker.lines()
        console.log(f"broker: stopping it for {args.outage:.0f} s")
        stopped_at = services.kafka("stop")
        time.sleep(args.outage)
        back_at = services.kafka("start")
        console.log("broker: back")
        lines_at_back = worker.lines()
        deadline = time.monotonic() + 120
        while first_after(watcher.snapshot(), back_at) is None and time.monotonic() < deadline:
            time.sleep(0.1)
        lines_at_first_ranking = worker.lines()
        traffic.join()
        out.flush()
        out.close()
        watcher.wait(wanted, 180)
        log = worker.log().splitlines()[lines_at_stop:lines_at_first_ranking]
        alive = worker.process.poll() is None
    watcher.close()
    seen = watcher.snapshot()
    return {
        "rate_per_s": rate,
        "outage_s": round(back_at - stopped_at, 1),
        **ranking_figures(watcher, wanted),
        "seconds_back_to_first_ranking": first_after(seen, back_at),
        "longest_ranking_gap_s": longest_gap(seen, stopped_at),
        "worker_log_lines_stop_to_back": lines_at_back - lines_at_stop,
        "worker_log_lines_stop_to_first_ranking": lines_at_first_ranking - lines_at_stop,
        "worker_error_lines_stop_to_first_ranking": sum(
            "ERROR" in line or "[E]" in line for line in log
        ),
        "suppression_summaries": sum("suppressed" in line for line in log),
        "worker_alive": alive,
    }


# --- scenario: Redis restart ----------------------------------------------------------------


def key_census(settings: Settings) -> dict[str, int]:
    """Keys of this deployment by kind: the registry's records, learned statistics, the rest."""
    client = redis_client(settings)
    kinds: Counter[str] = Counter()
    for name in client.scan_iter(match=f"{settings.topic_prefix}*", count=1000):
        rest = name.decode()[len(settings.topic_prefix) :]
        if rest.startswith("registry:"):
            part = rest[len("registry:") :].split(":")[0].split("/")[0]
            kinds[f"registry:{part}"] += 1
        else:
            kinds[rest.split(":")[0]] += 1
    return dict(sorted(kinds.items()))


def register_version(settings: Settings, env: dict[str, str]) -> str:
    """Register (and so activate) one version with the CLI, so that the registry, its audit
    log and the active pointer exist before the crash; the CLI's answer, or its error."""
    command = ["models", "register", "--pipeline", settings.pipeline, "--notes", "faults"]
    result = subprocess.run(
        [sys.executable, "-m", "streamrank.streams.cli", *command],
        env=child_env(settings, env),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    if result.returncode != 0:
        return f"error: {result.stderr.strip()[-500:]}"
    return result.stdout.strip()


def run_redis(services: Services, args: argparse.Namespace) -> dict[str, Any]:
    settings = scenario_settings(services, partitions=4)
    rate, before_s, after_s = 5.0, 15.0, 20.0
    total = int(rate * (before_s + args.outage + after_s))
    wanted = {f"r{n}" for n in range(total)}
    sessions = SessionPublisher(settings, wanted, budget=10**9)
    watcher = RankingWatcher(settings, on_ranking=sessions)
    env = LEARN_ENV | {
        "STREAMRANK_REGISTRY_KEY": REGISTRY_KEY,
        "STREAMRANK_CHECKPOINT_EVERY_S": "2",
    }
    registered = register_version(settings, env)
    sent_at: dict[str, float] = {}
    with workers(settings, services, 1, env) as (worker,):
        out = producer(settings)
        stop = threading.Event()

        def send(n: int) -> None:
            sent_at[f"r{n}"] = time.time()
            out.send(
                settings.topic("candidates"),
                key=f"r{n}".encode(),
                value=request(f"r{n}", n).to_bytes(),
            )

        traffic = threading.Thread(target=paced, args=(total, rate, send, stop))
        traffic.start()
        time.sleep(before_s)
        before = key_census(settings)
        impressions_before, clicks_before, _ = learned(settings)
        console.log(f"redis: SIGKILL, down for {args.outage:.0f} s")
        killed_at = services.kill_redis()
        time.sleep(args.outage)
        back_at = services.redis("start")
        after = key_census(settings)
        impressions_after, clicks_after, _ = learned(settings)
        console.log("redis: back")
        traffic.join()
        out.flush()
        out.close()
        watcher.wait(wanted, 120)
        sessions.close()
        alive = worker.process.poll() is None
    watcher.close()
    during = {r for r, t in sent_at.items() if killed_at <= t < back_at}
    seen = [s for s in watcher.snapshot() if s.request_id in during]
    ranked = {s.request_id for s in seen}
    return {
        "rate_per_s": rate,
        "outage_s": round(back_at - killed_at, 1),
        **ranking_figures(watcher, wanted),
        "requests_during_outage": len(during),
        "ranked_during_outage": len(ranked),
        "ranked_degraded_during_outage": len({s.request_id for s in seen if s.degraded}),
        "dropped_during_outage": len(during - ranked),
        "worker_alive": alive,
        "registered_version": registered,
        "keys_before_crash": before,
        "keys_after_restart": after,
        "learned_before_crash": {"impressions": impressions_before, "clicks": clicks_before},
        "learned_after_restart": {"impressions": impressions_after, "clicks": clicks_after},
    }


# --- scenario: poison -------------------------------------------------------------------------


def refused_corpus(settings: Settings, kind: str, count: int) -> list[bytes | None]:
    """``count`` generated messages the decoder refuses (a few generated ones are valid)."""
    from tests.poison import corpus

    limits = settings.limits()
    refused: list[bytes | None] = []
    for _, raw in corpus(kind, count * 2, seed=11):
        try:
            decode(kind, raw, limits)
        except ContractError:
            refused.append(raw)
        if len(refused) == count:
            break
    return refused


def letters(
    settings: Settings, topic_kind: str, expected: int, timeout_s: float
) -> list[DeadLetter]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    topic = settings.topic("deadletter")
    partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    found: list[DeadLetter] = []
    deadline = time.monotonic() + timeout_s
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        batches = consumer.poll(timeout_ms=500)
        for records in batches.values():
            found += [DeadLetter.model_validate_json(r.value) for r in records]
            quiet_since = time.monotonic()
        mine = [f for f in found if f.topic == settings.topic(topic_kind)]
        if len(mine) >= expected and time.monotonic() - quiet_since > 2:
            break
    consumer.close()
    return [f for f in found if f.topic == settings.topic(topic_kind)]


def send_pairs(settings: Settings, kind: str, pairs: list[tuple[bytes, bytes | None]]) -> None:
    out = producer(settings)
    for message_key, value in pairs:
        out.send(settings.topic(kind), key=message_key, value=value)
    out.flush()
    out.close()


def run_poison(services: Services, args: argparse.Namespace) -> dict[str, Any]:
    settings = scenario_settings(services, partitions=4)
    watcher = RankingWatcher(settings)
    figures: dict[str, Any] = {}
    with workers(settings, services, 1, LEARN_ENV) as (worker,):
        bad = refused_corpus(settings, "candidates", args.fuzz)
        pairs: list[tuple[bytes, bytes | None]] = []
        for n, raw in enumerate(bad):
            message_key = f"p{n % 16}".encode()  # the good one follows on the same partition
            pairs += [(message_key, raw), (message_key, request(f"good{n}", n).to_bytes())]
        console.log(f"poison: {len(bad)} bad candidates, each followed by a good one")
        send_pairs(settings, "candidates", pairs)
        good = {f"good{n}" for n in range(len(bad))}
        watcher.wait(good, 120 + len(bad) / 20)
        figures["candidates"] = poison_figures(
            settings, "candidates", bad, len(watcher.ranked(good))
        )

        # interactions: the good ones belong to sessions that were served just now
        # (sent after the bad ones, so they queue behind them on every partition)
        bad = refused_corpus(settings, "interactions", args.fuzz)
        pairs = [(f"p{n % 16}".encode(), raw) for n, raw in enumerate(bad)]
        console.log(f"poison: {len(bad)} bad interactions, then the sessions' good events")
        send_pairs(settings, "interactions", pairs)
        sessions = SessionPublisher(settings, good, budget=10**9)
        for seen in watcher.snapshot()[: len(bad)]:
            sessions(seen)
        sessions.close()
        wait_learned(settings, sessions, 120 + len(bad) / 20)
        counts = learned(settings)[2]
        figures["interactions"] = poison_figures(
            settings, "interactions", bad, counts.get("interactions", 0)
        ) | {"good_published": sessions.sent}
        for kind in ("items", "users"):
            figures[kind] = poison_feature_topic(settings, kind, args.fuzz)
        figures["worker_crashed"] = worker.crashed()
        log = worker.log()
        figures["tracebacks_in_log"] = log.count("Traceback")
        figures["traceback_errors"] = dict(Counter(traceback_errors(log)).most_common(5))
    watcher.close()
    return figures


def poison_feature_topic(settings: Settings, kind: str, count: int) -> dict[str, Any]:
    """``count`` bad ``items`` or ``users`` messages, each followed by a good one on the same
    key: the letters, and how many of the good ones reached the feature store."""
    bad = refused_corpus(settings, kind, count)
    good = [f"fuzz-good-{kind}-{n}" for n in range(len(bad))]
    pairs: list[tuple[bytes, bytes | None]] = []
    for n, raw in enumerate(bad):
        message_key = f"p{n % 16}-{n}".encode()  # compacted topics: one key per pair
        event = (
            Item(doc_id=good[n], text=f"good document {n}")
            if kind == "items"
            else User(user_id=good[n], features={"age_days": float(n)})
        )
        pairs += [(message_key, raw), (message_key, event.to_bytes())]
    console.log(f"poison: {len(bad)} bad {kind}, each followed by a good one")
    send_pairs(settings, kind, pairs)
    store = FeatureStore(redis.Redis.from_url(settings.redis_url), settings)

    def stored() -> int:
        if kind == "items":
            return sum(text is not None for text in store.texts(good))
        return sum(bool(store.user_features(user)) for user in good)

    deadline = time.monotonic() + 120 + len(bad) / 20
    while stored() < len(good) and time.monotonic() < deadline:
        time.sleep(1)
    return poison_figures(settings, kind, bad, stored())


def traceback_errors(log: str) -> list[str]:
    """The last line of every traceback in a log (the exception and its message)."""
    errors, lines = [], log.splitlines()
    for n, line in enumerate(lines):
        if line.startswith("Traceback"):
            tail = next((x for x in lines[n + 1 :] if x and not x.startswith((" ", "\t"))), "")
            errors.append(tail[:200])
    return errors


def poison_figures(settings: Settings, kind: str, bad: list, good_processed: int) -> dict[str, Any]:
    found = letters(settings, kind, len(bad), 60 + len(bad) / 50)
    missing = Counter(digest(raw) for raw in bad) - Counter(
        letter.original_sha256 or digest(letter.original) for letter in found
    )
    by_digest = {digest(raw): raw for raw in bad}
    return {
        "bad": len(bad),
        "dead_lettered": len(found),
        "dead_lettered_share": round(len(found) / len(bad), 4) if bad else None,
        "reasons": dict(Counter(letter.reason for letter in found).most_common()),
        "without_letter": sum(missing.values()),
        "without_letter_samples": [repr(by_digest[d])[:300] for d in list(missing)[:5]],
        "good_processed": good_processed,
    }


def digest(raw: bytes | None) -> str:
    return hashlib.sha256(raw or b"").hexdigest()


# --- main ---------------------------------------------------------------------------------


RUNNERS = {"poison": run_poison, "kill": run_kill, "broker": run_broker, "redis": run_redis}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the figures as JSON (default)")
    parser.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenarios")
    parser.add_argument("--requests", type=int, default=3000, help="requests of the kill scenario")
    parser.add_argument("--interactions", type=int, default=10_000, help="of the kill scenario")
    parser.add_argument("--rate", type=float, default=20.0, help="requests/s of the kill scenario")
    parser.add_argument("--fuzz", type=int, default=3000, help="bad messages per input topic")
    parser.add_argument("--outage", type=float, default=15.0, help="seconds a service is down")
    parser.add_argument(
        "--session-timeout",
        type=float,
        default=Settings().kafka_session_timeout_s,
        help="the workers' kafka_session_timeout_s in the kill scenario",
    )
    parser.add_argument("--keep", action="store_true", help="keep the run dir (logs)")
    args = parser.parse_args(argv)
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(args.only) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s) {sorted(unknown)}; choose from {', '.join(SCENARIOS)}")
    for name in ("requests", "interactions", "fuzz"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.rate <= 0 or args.outage <= 0:
        parser.error("--rate and --outage must be positive")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    figures: dict[str, Any] = {"scenarios": args.only}
    with private_services(args.keep) as services:
        for name in args.only:
            console.rule(name)
            started = time.monotonic()
            try:
                figures[name] = RUNNERS[name](services, args)
            except Exception as error:  # one scenario failing must not hide the others
                figures[name] = {"error": f"{type(error).__name__}: {error}"[:2000]}
            figures[name]["scenario_seconds"] = round(time.monotonic() - started, 1)
            console.log(json.dumps(figures[name]))
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()

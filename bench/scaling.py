"""The constants a deployment is sized from: model speed per core, and the Redis, Kafka and
worker CPU cost of one request and of one learned interaction, through a live worker.

Phases (``--only`` picks some, comma-separated):

``models``
    pairs per second of the cross-encoder (the teacher), the shipped student and the
    bi-encoder (texts per second), each built as the worker builds it, on the same wiki
    pairs: one intra-op thread and one batch at a time (one core), then two threads both ways
    (two single-threaded batches at once, as a worker runs them; one batch with two intra-op
    threads). Median of ``--repeats``, per wall second and per CPU second of this process
    (on a shared host the second is the per-core constant).
``request``
    one real ``streamrank worker`` (``dense>ce:30``, 4 partitions) on a PRIVATE Kafka broker
    and Redis (:func:`bench.faults.private_services`), so that Redis INFO counters and Kafka
    offsets count this bench alone. Requests of ``--candidates`` wiki documents with their
    texts (the same pool of documents in a fresh order per request, each with a different
    wiki query; published first as ``items``, so that feature reads find their hashes, and
    their bi-encoder vectors stored in Redis, as ingestion leaves them) at
    ``--rate`` per second, low enough that none queues. Per request: Redis commands (INFO
    commandstats), bytes in and out (``total_net_*_bytes``), Redis CPU, worker CPU (utime +
    stime of its process tree), each less an idle window of the same worker over the same
    duration (it polls Redis in the background); Kafka payload bytes per topic (key + value
    of the records the window added to every topic); the added latency (consumed -> ranking
    produced, as ``bench/sla.py`` reads it). The first request of a fresh worker is also
    measured alone (its vectors come from Redis unless ingesting the items brought them into
    the worker's memory; ``--no-items`` leaves them out).
``interactions``
    the sessions of those requests (impressions and one or two clicks each, as
    ``bench.faults.SessionPublisher`` publishes them): the same figures per interaction.
``throughput``
    ``--saturate`` requests sent at once to that worker: rankings per second from the first
    to the last; then a second worker joins the group and the same number is sent again.
``redis_benchmark`` (after ``request``; ``--skip-redis-benchmark``)
    ``redis-benchmark`` against the private Redis, each command of the request's mix replayed
    on copies of the widest per-document hashes the worker wrote, weighted by its count: the
    requests per second one shard serves with that mix.

The latency budget is set high (``--budget-ms``) so that every request gets the whole
cascade, also when queued: the constants are for full work, not for what a deadline cut.
Prints one JSON object; progress goes to stderr.

Example (10-12 minutes on a shared 2-core machine)::

    .venv/bin/python bench/scaling.py --json

A smoke run: ``--requests 10 --saturate 20 --repeats 1 --skip-redis-benchmark``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import redis
from rich.console import Console

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.faults import (  # noqa: E402
    RankingWatcher,
    Seen,
    Services,
    SessionPublisher,
    Worker,
    paced,
    private_services,
    producer,
    scenario_settings,
)
from bench.sla import Publisher, Request, Timed, percentiles  # noqa: E402
from streamrank.streams.config import Settings  # noqa: E402
from streamrank.streams.events import Candidate  # noqa: E402

console = Console(stderr=True)
PHASES = ("models", "request", "interactions", "throughput")
PIPELINE = "dense>ce:30"
"""The default cascade: what the live constants are for."""
CACHE = Path("/tmp/streamrank-scaling")
"""Document vectors encoded by an earlier run (keyed by encoder and documents)."""
NOT_WORK = ("info",)
"""Redis commands that are this bench's own reading of the counters."""


# --- counters and windows (pure) ----------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """Cumulative counters at one moment: Redis (commands, bytes, CPU) and the workers' CPU."""

    at: float
    calls: dict[str, int]
    net_in: int
    net_out: int
    redis_cpu_s: float
    worker_cpu_s: float


@dataclass(frozen=True)
class Window:
    """What the counters grew by between two samples, over ``seconds``."""

    seconds: float
    calls: dict[str, float]
    net_in: float
    net_out: float
    redis_cpu_s: float
    worker_cpu_s: float

    @property
    def commands(self) -> float:
        return sum(self.calls.values())


def window(before: Sample, after: Sample) -> Window:
    """The growth of every counter from ``before`` to ``after`` (the bench's INFO left out).

    Examples
    --------
    >>> a = Sample(0.0, {"get": 5, "info": 1}, 100, 200, 1.0, 2.0)
    >>> b = Sample(10.0, {"get": 9, "set": 2, "info": 2}, 150, 260, 1.5, 4.0)
    >>> w = window(a, b)
    >>> w.seconds, w.calls, w.net_in, w.net_out, w.redis_cpu_s, w.worker_cpu_s
    (10.0, {'get': 4, 'set': 2}, 50, 60, 0.5, 2.0)
    """
    names = sorted(set(after.calls) - set(NOT_WORK))
    return Window(
        seconds=after.at - before.at,
        calls={n: after.calls[n] - before.calls.get(n, 0) for n in names},
        net_in=after.net_in - before.net_in,
        net_out=after.net_out - before.net_out,
        redis_cpu_s=after.redis_cpu_s - before.redis_cpu_s,
        worker_cpu_s=after.worker_cpu_s - before.worker_cpu_s,
    )


def net_of_idle(busy: Window, idle: Window) -> Window:
    """``busy`` less what the idle window's rates give over ``busy.seconds``.

    A worker polls Redis and Kafka and ticks its timers with no traffic at all; that cost is
    per second, not per request, so it is scaled to the busy window's length before it is
    taken off. A figure that comes out negative (noise larger than the work) is kept as it
    is: clipping it to zero would hide that the window was too short to tell.

    Examples
    --------
    >>> idle = Window(10.0, {"get": 20, "zrange": 10}, 1000, 2000, 0.1, 0.5)
    >>> busy = Window(5.0, {"get": 110, "set": 30}, 9000, 51000, 0.35, 10.25)
    >>> net = net_of_idle(busy, idle)
    >>> net.calls, net.net_in, net.net_out, net.redis_cpu_s, net.worker_cpu_s
    ({'get': 100.0, 'set': 30.0, 'zrange': -5.0}, 8500.0, 50000.0, 0.3, 10.0)
    """
    scale = busy.seconds / idle.seconds if idle.seconds else 0.0
    names = sorted(set(busy.calls) | set(idle.calls))
    return Window(
        seconds=busy.seconds,
        calls={n: busy.calls.get(n, 0) - scale * idle.calls.get(n, 0) for n in names},
        net_in=busy.net_in - scale * idle.net_in,
        net_out=busy.net_out - scale * idle.net_out,
        redis_cpu_s=round(busy.redis_cpu_s - scale * idle.redis_cpu_s, 6),
        worker_cpu_s=round(busy.worker_cpu_s - scale * idle.worker_cpu_s, 6),
    )


def per_unit(net: Window, count: float, top: int = 12) -> dict[str, Any]:
    """The window's figures divided by ``count`` (requests, interactions, or seconds).

    Examples
    --------
    >>> net = Window(5.0, {"get": 100.0, "set": 30.0, "zrange": -5.0}, 8500.0, 50000.0, 0.3, 10.0)
    >>> figures = per_unit(net, 10)
    >>> figures["redis_commands"], figures["redis_commands_by_name"]
    (12.5, {'get': 10.0, 'set': 3.0, 'zrange': -0.5})
    >>> figures["redis_bytes_in"], figures["worker_cpu_s"], figures["per_core_per_s"]
    (850.0, 1.0, 1.0)
    """
    by_name = sorted(net.calls.items(), key=lambda item: -abs(item[1]))[:top]
    cpu = net.worker_cpu_s / count
    return {
        "count": count,
        "window_s": round(net.seconds, 1),
        "redis_commands": round(net.commands / count, 2),
        "redis_commands_by_name": {n: round(v / count, 2) for n, v in by_name},
        "redis_bytes_in": round(net.net_in / count, 1),
        "redis_bytes_out": round(net.net_out / count, 1),
        "redis_cpu_ms": round(1000 * net.redis_cpu_s / count, 3),
        "worker_cpu_s": round(cpu, 4),
        "per_core_per_s": round(1 / cpu, 2) if cpu > 0 else None,
    }


def topic_kind(topic: str, prefix: str) -> str:
    """A topic's name without the run's prefix (Kafka's own topics keep theirs).

    Examples
    --------
    >>> topic_kind("scale-1.rankings", "scale-1."), topic_kind("__consumer_offsets", "scale-1.")
    ('rankings', '__consumer_offsets')
    """
    return topic[len(prefix) :] if topic.startswith(prefix) else topic


def rate_from(times: Sequence[float]) -> float | None:
    """Events per second from the first to the last of ``times`` (None for fewer than two).

    Examples
    --------
    >>> rate_from([10.0, 10.5, 12.0])
    1.0
    >>> rate_from([3.0]) is None
    True
    """
    if len(times) < 2 or max(times) == min(times):
        return None
    return round((len(times) - 1) / (max(times) - min(times)), 2)


# --- reading the counters -------------------------------------------------------------------


def tree_cpu_s(pid: int) -> float:
    """utime + stime of a process and its descendants, seconds (0 for one that is gone)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError, IndexError):
            continue
    return total


def sample(client: redis.Redis, pids: Sequence[int]) -> Sample:
    """The counters now: INFO commandstats, stats and cpu of Redis, the workers' CPU."""
    commands = client.info("commandstats")
    stats = client.info("stats")
    cpu = client.info("cpu")
    return Sample(
        at=time.monotonic(),
        calls={name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in commands.items()},
        net_in=int(stats["total_net_input_bytes"]),
        net_out=int(stats["total_net_output_bytes"]),
        redis_cpu_s=float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]),
        worker_cpu_s=sum(tree_cpu_s(pid) for pid in pids),
    )


Offsets = dict[tuple[str, int], int]


def end_offsets(bootstrap: str) -> Offsets:
    """The end offset of every partition of every topic on the (private) broker."""
    from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        topics = admin.list_topics()  # Kafka's own (the consumer offsets) too
    finally:
        admin.close()
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, exclude_internal_topics=False)
    try:
        partitions = [
            TopicPartition(topic, p)
            for topic in topics
            for p in consumer.partitions_for_topic(topic) or ()
        ]
        ends = consumer.end_offsets(partitions)
        return {(tp.topic, tp.partition): offset for tp, offset in ends.items()}
    finally:
        consumer.close()


def topic_bytes(bootstrap: str, start: Offsets, end: Offsets, prefix: str) -> dict[str, Any]:
    """Records and payload bytes (key + value + headers) each topic gained from ``start`` to
    ``end``, read back from the broker: what was actually written, not an estimate."""
    from kafka import KafkaConsumer, TopicPartition

    ranges = {tp: (start.get(tp, 0), stop) for tp, stop in end.items() if stop > start.get(tp, 0)}
    figures: dict[str, dict[str, int]] = {}
    if not ranges:
        return figures
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        check_crcs=False,  # pure-Python checksums of 1.5 MB records would take minutes
        max_partition_fetch_bytes=16 * 2**20,
        fetch_max_bytes=64 * 2**20,
        enable_auto_commit=False,
    )
    try:
        assigned = {TopicPartition(t, p): r for (t, p), r in ranges.items()}
        consumer.assign(list(assigned))
        for tp, (first, _) in assigned.items():
            consumer.seek(tp, first)
        left = set(assigned)
        deadline = time.monotonic() + 300
        while left and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=500).items():
                stop = assigned[tp][1]
                kind = topic_kind(tp.topic, prefix)
                row = figures.setdefault(kind, {"records": 0, "bytes": 0})
                for record in records:
                    if record.offset >= stop:
                        break
                    row["records"] += 1
                    row["bytes"] += len(record.key or b"") + len(record.value or b"")
                    row["bytes"] += sum(len(k) + len(v or b"") for k, v in record.headers)
                if consumer.position(tp) >= stop:
                    left.discard(tp)
                    consumer.pause(tp)
            # a compacted or transactional topic may end on a gap: stop at its last record
            for tp in list(left):
                if consumer.position(tp) >= assigned[tp][1]:
                    left.discard(tp)
    finally:
        consumer.close()
    return dict(sorted(figures.items()))


def kafka_per_unit(written: dict[str, dict[str, int]], count: int) -> dict[str, Any]:
    """Records and bytes per request (or interaction), by topic and in all.

    Examples
    --------
    >>> kafka_per_unit({"rankings": {"records": 10, "bytes": 5000}}, 10)
    {'rankings': {'records': 1.0, 'bytes': 500.0}, 'total_bytes': 500.0}
    """
    figures: dict[str, Any] = {
        kind: {"records": round(r["records"] / count, 2), "bytes": round(r["bytes"] / count, 1)}
        for kind, r in written.items()
    }
    figures["total_bytes"] = round(sum(r["bytes"] for r in written.values()) / count, 1)
    return figures


# --- phase: model speed -----------------------------------------------------------------------


def wiki_pool(size: int, seed: int) -> tuple[list[tuple[str, str]], list[str]]:
    """``size`` wiki documents (id, text) and every wiki query, in a seeded order."""
    from streamrank.models.assets.wiki import DEFAULT_OUT as WIKI

    docs = [json.loads(line) for line in (WIKI / "corpus.jsonl").open()]
    queries = [json.loads(line)["text"] for line in (WIKI / "queries.jsonl").open()]
    rng = random.Random(seed)
    rng.shuffle(docs)
    rng.shuffle(queries)
    return [(d["_id"], f"{d.get('title', '')}. {d['text']}") for d in docs[:size]], queries


def timed_repeats(run: Callable[[], Any], repeats: int) -> list[tuple[float, float]]:
    """Wall and CPU seconds (this process, every thread) of ``repeats`` calls, after one
    unmeasured call (sessions warm up). On a shared host the wall time shows what the cores
    we got did, the CPU time what a core of our own would do."""
    run()
    seconds = []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        run()
        seconds.append((time.perf_counter() - wall, time.process_time() - cpu))
    return seconds


def speed(units: int, seconds: list[tuple[float, float]]) -> dict[str, Any]:
    """Units per wall second (the median of the repeats, and their range) and per CPU second.

    Examples
    --------
    >>> speed(100, [(2.0, 1.0), (4.0, 2.0), (1.0, 1.0)])
    {'per_s': 50.0, 'min': 25.0, 'max': 100.0, 'per_cpu_s': 100.0, 'repeats': 3}
    """
    rates = [units / wall for wall, _ in seconds]
    per_cpu = [units / cpu for _, cpu in seconds if cpu > 0]
    return {
        "per_s": round(statistics.median(rates), 1),
        "min": round(min(rates), 1),
        "max": round(max(rates), 1),
        "per_cpu_s": round(statistics.median(per_cpu), 1) if per_cpu else None,
        "repeats": len(rates),
    }


def model_variants(make: Callable[[int], Any], session_path: Path) -> Iterator[tuple[str, Any]]:
    """The three ways to run a model: one core, two batches at once, two intra-op threads."""
    from streamrank.models.onnx.sessions import load_session

    yield "1_thread", make(1)
    yield "2_batches_x_1_thread", make(2)
    model = make(1)
    model.session = load_session(session_path, threads=2)  # one batch, two intra-op threads
    yield "1_batch_x_2_threads", model


def models_phase(args: argparse.Namespace) -> dict[str, Any]:
    from streamrank.models.assets.model_files import default_model_dir
    from streamrank.models.assets.student_files import student_folder, trained_length
    from streamrank.models.onnx.sessions import physical_cores
    from streamrank.models.scoring.bi_encoder import BiEncoder
    from streamrank.models.scoring.cross_encoder import CrossEncoder

    model_dir = Path(args.model_dir or default_model_dir()).expanduser()
    docs, queries = wiki_pool(args.pairs, args.seed)
    pairs = [(queries[n % len(queries)], text) for n, (_, text) in enumerate(docs)]
    texts = [text for _, text in docs[: args.texts]]
    max_length = Settings.model_fields["max_length"].default
    models: dict[str, tuple[Callable[[int], Any], Callable[[Any], Any], int]] = {
        "cross_encoder": (
            lambda t: CrossEncoder(model_dir / "reranker_en", max_length=max_length, threads=t),
            lambda m: m.predict(pairs),
            len(pairs),
        ),
        "bi_encoder_documents": (
            lambda t: BiEncoder(model_dir / "bge_small_en", threads=t),
            lambda m: m.encode(texts),
            len(texts),
        ),
    }
    figures: dict[str, Any] = {
        "pairs": len(pairs),
        "texts": len(texts),
        "physical_cores": physical_cores(),
        "load_average_before": os.getloadavg()[0],
    }
    try:
        folder = student_folder(model_dir)
        length = min(max_length, trained_length(folder))
        models["student"] = (
            lambda t: CrossEncoder(folder, max_length=length, threads=t),
            lambda m: m.predict(pairs),
            len(pairs),
        )
        figures["student_folder"] = folder.name
    except Exception as error:  # no student: the teacher and the bi-encoder only
        figures["student"] = f"not measured: {error}"
    for name, (make, run, units) in models.items():
        figures[name] = {}
        probe = make(1)
        path = getattr(probe, "model_path", probe.folder / "model.onnx")
        max_len = probe.max_length
        probe.close()
        figures[name]["max_length"] = max_len
        for variant, model in model_variants(make, Path(path)):
            console.log(f"models: {name}, {variant}")
            figures[name][variant] = speed(
                units, timed_repeats(functools.partial(run, model), args.repeats)
            )
            model.close()
        one = figures[name]["1_thread"]["per_s"]
        figures[name]["scaling_2_batches"] = round(
            figures[name]["2_batches_x_1_thread"]["per_s"] / one, 2
        )
    figures["load_average_after"] = os.getloadavg()[0]
    return figures


# --- phases through a live worker -------------------------------------------------------------


def pool_vectors(model_dir: Path, docs: list[tuple[str, str]]) -> tuple[str, np.ndarray]:
    """The bi-encoder's version and its vectors of ``docs`` (encoded once, then cached)."""
    from streamrank.models.scoring.bi_encoder import BiEncoder

    encoder = BiEncoder(model_dir / "bge_small_en")
    try:
        digest = hashlib.sha256("\n".join(d for d, _ in docs).encode()).hexdigest()[:12]
        path = CACHE / f"{encoder.version}-{digest}.npy"
        if path.is_file():
            return encoder.version, np.load(path)
        vectors = []
        for start in range(0, len(docs), 128):
            console.log(f"encoding the pool's documents: {start} of {len(docs)}")
            vectors.append(encoder.encode([text for _, text in docs[start : start + 128]]))
        CACHE.mkdir(parents=True, exist_ok=True)
        np.save(path, np.concatenate(vectors))
        return encoder.version, np.load(path)
    finally:
        encoder.close()


def store_vectors(
    client: redis.Redis,
    settings: Settings,
    version: str,
    docs: list[tuple[str, str]],
    vectors: np.ndarray,
) -> None:
    """The documents' vectors in the worker's Redis vector store, as ingestion leaves them."""
    from streamrank.models.scoring.score_cache import vector_key
    from streamrank.streams.state.connections import key
    from streamrank.streams.state.redis_cache import RedisVectorCache

    cache = RedisVectorCache(client, key(settings, "vec:"), settings.vector_cache_ttl_s)
    cache.set_many({vector_key(version, d, t): v for (d, t), v in zip(docs, vectors, strict=True)})


@dataclass
class Traffic:
    """Requests of the pool's documents in a fresh seeded order, each with its own query."""

    docs: list[tuple[str, str]]
    queries: list[str]
    seed: int
    made: int = 0

    def next(self) -> Request:
        """The next request (built when it is sent: a thousand candidates each)."""
        rng = random.Random(self.seed * 1_000_003 + self.made)
        order = rng.sample(self.docs, len(self.docs))
        query = self.queries[self.made % len(self.queries)]
        self.made += 1
        candidates = [
            Candidate(doc_id=d, text=t, first_stage_score=float(len(order) - i))
            for i, (d, t) in enumerate(order)
        ]
        return Request("wiki", str(self.made), query, candidates)


@dataclass
class Live:
    """One deployment on the private services: its settings, workers, publisher, watcher."""

    services: Services
    settings: Settings
    env: dict[str, str]
    traffic: Traffic
    client: redis.Redis
    publisher: Publisher
    watcher: RankingWatcher
    workers: list[Worker] = field(default_factory=list)

    def start_worker(self) -> Worker:
        log = self.services.run_dir / f"{self.settings.app_id}-{len(self.workers)}.log"
        worker = Worker(self.settings, log, self.env)
        self.workers.append(worker)
        worker.wait_ready(timeout_s=300)
        return worker

    def sample(self) -> Sample:
        return sample(self.client, [w.process.pid for w in self.workers])

    def offsets(self) -> Offsets:
        return end_offsets(self.settings.kafka_bootstrap)

    def send(self, tag: str, count: int, rate: float | None) -> list[str]:
        """``count`` fresh requests at ``rate`` per second (``None``: as fast as they go)."""
        ids = [f"{tag}-{n}" for n in range(count)]

        def one(n: int) -> None:
            self.publisher.send(ids[n], self.traffic.next())

        if rate is None:
            for n in range(count):
                one(n)
        else:
            paced(count, rate, one, _never())
        return ids

    def ranked(self, ids: list[str], timeout_s: float) -> list[Seen]:
        """The first ranking of each request (waiting for them all up to ``timeout_s``)."""
        wanted = set(ids)
        got = self.watcher.wait(wanted, timeout_s)
        if got != wanted:
            console.log(f"[yellow]{len(wanted - got)} of {len(wanted)} requests not ranked")
        first: dict[str, Seen] = {}
        for seen in self.watcher.snapshot():
            if seen.request_id in wanted:
                first.setdefault(seen.request_id, seen)
        return list(first.values())

    def close(self) -> None:
        for closing in (self.publisher, self.watcher):
            with contextlib.suppress(Exception):
                closing.close()
        for worker in self.workers:
            worker.stop()


def _never() -> Any:
    import threading

    return threading.Event()


@contextlib.contextmanager
def live_deployment(
    services: Services, args: argparse.Namespace, traffic: Traffic, version: str, vectors: Any
) -> Iterator[Live]:
    settings = scenario_settings(services, partitions=args.partitions)
    client = redis.Redis.from_url(settings.redis_url)
    store_vectors(client, settings, version, traffic.docs, vectors)
    env = {  # the learning settings are the defaults: the idle cost is the default's
        "STREAMRANK_PIPELINE": PIPELINE,
        "STREAMRANK_LATENCY_BUDGET_MS": str(args.budget_ms),
        # a query seen again must pay its model calls again, as a new one would
        "STREAMRANK_SCORE_CACHE_TTL_S": "1",
    }
    live = Live(
        services, settings, env, traffic, client, Publisher(settings), RankingWatcher(settings)
    )
    try:
        yield live
    finally:
        live.close()


def publish_items(live: Live) -> int:
    """The pool's documents as ``items`` (text, a brand, a category, a price, stock), so that
    the feature reads of a request find stored hashes as in a catalogue; how many the worker
    stored (waited for, before anything is measured)."""
    from streamrank.streams.events import Item
    from streamrank.streams.state.feature_store import FeatureStore

    out = producer(live.settings)
    for n, (doc_id, text) in enumerate(live.traffic.docs):
        item = Item(
            doc_id=doc_id,
            text=text,
            price=float(5 + n % 50),
            stock=n % 7,
            brand=f"brand-{n % 40}",
            category=f"category-{n % 12}",
        )
        out.send(live.settings.topic("items"), key=doc_id.encode(), value=item.to_bytes())
    out.flush()
    out.close()
    store = FeatureStore(live.client, live.settings)
    ids = [d for d, _ in live.traffic.docs]
    deadline = time.monotonic() + 300
    stored = 0
    while time.monotonic() < deadline:
        stored = sum(text is not None for text in store.texts(ids))
        if stored == len(ids):
            break
        time.sleep(1)
    console.log(f"items: {stored} of {len(ids)} stored")
    return stored


def ranking_summary(live: Live, ids: list[str], seen: list[Seen]) -> dict[str, Any]:
    """Counts, degraded, the added latency and the ranking's own stage times."""
    from bench.sla import stage_medians

    rankings = [s.ranking for s in seen if s.ranking is not None]
    timed = [Timed(live.publisher.sent[s.request_id], s) for s in seen]
    return {
        "sent": len(ids),
        "ranked": len(seen),
        "degraded": sum(r.degraded for r in rankings),
        "added_ms": percentiles([t.added_ms for t in timed]),
        "worker_ms": percentiles([t.worker_ms for t in timed]),
        "stage_ms_p50": stage_medians(rankings),
    }


def request_phase(
    live: Live, args: argparse.Namespace
) -> tuple[dict[str, Any], list[Seen], Window]:
    """The first request alone, the idle window, then the low-rate requests: per request."""
    console.log("request: the first request of a fresh worker, alone")
    before = live.sample()
    ids = live.send("first", 1, None)
    seen = live.ranked(ids, 120)
    time.sleep(args.settle_s)
    first = window(before, live.sample())
    console.log(f"request: {args.warmup} warm-up requests at {args.rate:g}/s")
    live.ranked(live.send("warm", args.warmup, args.rate), 120 + args.warmup / args.rate)
    time.sleep(args.settle_s)
    idle_s = args.idle_s or args.requests / args.rate + args.settle_s
    console.log(f"request: idle window, {idle_s:.0f} s")
    before = live.sample()
    time.sleep(idle_s)
    idle = window(before, live.sample())
    console.log(f"request: {args.requests} requests at {args.rate:g}/s")
    start, before = live.offsets(), live.sample()
    ids = live.send("req", args.requests, args.rate)
    seen = live.ranked(ids, 120 + args.requests / args.rate)
    time.sleep(args.settle_s)
    busy = window(before, live.sample())
    written = topic_bytes(
        live.settings.kafka_bootstrap, start, live.offsets(), live.settings.topic_prefix
    )
    first_net = net_of_idle(first, idle)
    figures = {
        "pipeline": PIPELINE,
        "budget_ms": args.budget_ms,
        "candidates": len(live.traffic.docs),
        "rate_per_s": args.rate,
        "partitions": live.settings.partitions,
        "load_average_1m": round(os.getloadavg()[0], 2),
        "idle_per_s": per_unit(idle, idle.seconds),
        "per_request": per_unit(net_of_idle(busy, idle), len(seen)),
        "kafka_per_request": kafka_per_unit(written, len(seen)),
        "rankings": ranking_summary(live, ids, seen),
        "first_request_alone": {
            "redis_bytes_out": round(first_net.net_out),
            "redis_commands": round(first_net.commands, 1),
            "worker_cpu_s": round(first_net.worker_cpu_s, 3),
        },
    }
    return figures, seen, idle


def interactions_phase(
    live: Live, seen: list[Seen], idle: Window, args: argparse.Namespace
) -> dict[str, Any]:
    """The sessions of the measured requests published at once: per interaction learned."""
    from streamrank.streams.state.user_sessions import SessionStore

    store = SessionStore(live.client, live.settings)
    ingested_before = store.counts().get("interactions", 0)
    sessions = SessionPublisher(live.settings, {s.request_id for s in seen}, budget=10**9)
    console.log(f"interactions: the sessions of {len(seen)} rankings")
    start, before = live.offsets(), live.sample()
    for one in seen:
        sessions(one)
    sessions.close()
    time.sleep(args.learn_settle_s)
    busy = window(before, live.sample())
    written = topic_bytes(
        live.settings.kafka_bootstrap, start, live.offsets(), live.settings.topic_prefix
    )
    ingested = store.counts().get("interactions", 0) - ingested_before
    return {
        "sessions": len(seen),
        "interactions_published": sessions.sent,
        "impressions": sessions.impressions,
        "clicks": sessions.clicks,
        "interactions_ingested_in_window": ingested,
        "settle_s": args.learn_settle_s,
        "per_interaction": per_unit(net_of_idle(busy, idle), sessions.sent),
        "kafka_per_interaction": kafka_per_unit(written, sessions.sent),
    }


def saturate(live: Live, tag: str, count: int) -> dict[str, Any]:
    """``count`` requests at once; rankings per second from the first to the last produced."""
    console.log(f"throughput: {count} requests at once, {len(live.workers)} worker(s)")
    before = live.sample()
    ids = live.send(tag, count, None)
    seen = live.ranked(ids, 120 + count * 2)
    used = window(before, live.sample())
    rankings = [s.ranking for s in seen if s.ranking is not None]
    return {
        "workers": len(live.workers),
        "sent": count,
        "ranked": len(seen),
        "degraded": sum(r.degraded for r in rankings),
        "rankings_per_s": rate_from([s.created for s in seen]),
        # the first ranking comes after a whole batch of concurrent requests: counted from
        # the first send, a short run is not flattered by the batch that finished together
        "rankings_per_s_from_first_send": rate_from(
            [min(live.publisher.sent[i] for i in ids), *(s.created for s in seen)]
        ),
        "worker_cpu_s_per_request": round(used.worker_cpu_s / max(len(seen), 1), 4),
        "worker_cpu_cores_used": round(used.worker_cpu_s / used.seconds, 2),
        "partitions_per_worker": live.settings.partitions / len(live.workers),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def throughput_phase(live: Live, args: argparse.Namespace) -> dict[str, Any]:
    one = saturate(live, "sat1", args.saturate)
    console.log("throughput: a second worker joins")
    live.start_worker()
    time.sleep(args.settle_s)
    live.ranked(live.send("warm2", args.warmup, args.rate), 120 + args.warmup / args.rate)
    two = saturate(live, "sat2", args.saturate)
    return {
        "one_worker": one,
        "two_workers": two,
        "two_over_one": ratio(two, one, "rankings_per_s"),
        "two_over_one_from_first_send": ratio(two, one, "rankings_per_s_from_first_send"),
        "cpu_count": os.cpu_count(),
    }


def ratio(two: dict[str, Any], one: dict[str, Any], name: str) -> float | None:
    """``two[name] / one[name]``, None where either is missing.

    Examples
    --------
    >>> ratio({"r": 3.0}, {"r": 2.0}, "r"), ratio({"r": None}, {"r": 2.0}, "r")
    (1.5, None)
    """
    if not one.get(name) or not two.get(name):
        return None
    return round(two[name] / one[name], 2)


# --- phase: a Redis shard's capacity with the request's command mix --------------------------

BENCH_KEYS = 1000
"""Copies of the request's hashes the replay reads (``bench:h:000000000000`` ...)."""
REPLAY = {
    "hgetall": ["HGETALL", "bench:h:__rand_int__"],
    "hmget": ["HMGET", "bench:h:__rand_int__", "a", "b", "c", "d", "e", "f"],
    "hget": ["HGET", "bench:h:__rand_int__", "a"],
    "hset": ["HSET", "bench:h:__rand_int__", "z", "1"],
    "hincrby": ["HINCRBY", "bench:h:__rand_int__", "n", "1"],
    "hincrbyfloat": ["HINCRBYFLOAT", "bench:h:__rand_int__", "w", "0.5"],
    "hexists": ["HEXISTS", "bench:h:__rand_int__", "a"],
    "get": ["GET", "bench:s:__rand_int__"],
    "set": ["SET", "bench:s:__rand_int__", "x" * 64],
    "exists": ["EXISTS", "bench:s:__rand_int__"],
    "expire": ["EXPIRE", "bench:h:__rand_int__", "3600"],
    # a script's own call, with a trivial body: what the commands inside it cost is counted
    # under their own names (Redis counts them so in commandstats)
    "evalsha": ["EVAL", "return 1", "0"],
}
"""How ``redis-benchmark`` replays each command of the mix (``__rand_int__``: a key of
:data:`BENCH_KEYS`)."""


def widest_hashes(client: redis.Redis, prefix: str, ids: Sequence[str]) -> tuple[str, list[bytes]]:
    """The family of per-document hashes with the most fields (a document's features), as a
    pattern, and its keys: what the request's HGETALLs read."""
    families: dict[str, list[bytes]] = {}
    wanted = set(ids)
    for name in client.scan_iter(match=f"{prefix}*", count=1000, _type="hash"):
        text = name.decode(errors="replace")
        doc = next((d for d in wanted if d in text), None)
        if doc is not None:
            families.setdefault(text.replace(doc, "*"), []).append(name)
    if not families:
        return "", []
    fields = {family: client.hlen(keys[0]) for family, keys in families.items()}
    family = max(families, key=lambda f: (fields[f], len(families[f])))
    return family, families[family]


def replay_rps(port: int, command: list[str], requests: int) -> float | None:
    """Operations per second ``redis-benchmark`` gets for one command, pipelined."""
    options = ["-c", "16", "-P", "32", "-r", str(BENCH_KEYS), "--csv"]
    result = subprocess.run(
        [
            "redis-benchmark",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-n",
            str(requests),
            *options,
            *command,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    rows = [line.split(",") for line in result.stdout.splitlines() if line.startswith('"')]
    try:
        return float(rows[-1][1].strip('"'))
    except (IndexError, ValueError):
        return None


def shard_capacity(mix: dict[str, float], rps: dict[str, float | None]) -> dict[str, Any]:
    """Requests per second one shard serves with this mix: one over the summed time of a
    request's replayable commands; and the share of the mix the replay covers.

    Examples
    --------
    >>> shard_capacity({"get": 10.0, "hgetall": 10.0, "zrange": 5.0},
    ...                {"get": 100_000.0, "hgetall": 50_000.0})
    {'requests_per_s': 3333.3, 'us_per_request': 300.0, 'mix_covered': 0.8}
    """
    covered = {n: c for n, c in mix.items() if c > 0 and rps.get(n)}
    seconds = sum(c / rps[n] for n, c in covered.items())  # type: ignore[operator]
    total = sum(c for c in mix.values() if c > 0)
    return {
        "requests_per_s": round(1 / seconds, 1) if seconds else None,
        "us_per_request": round(1e6 * seconds, 1),
        "mix_covered": round(sum(covered.values()) / total, 3) if total else None,
    }


def redis_benchmark(live: Live, mix: dict[str, float], args: argparse.Namespace) -> dict[str, Any]:
    """``redis-benchmark`` on the private Redis with the request's command mix: copies of the
    documents' widest hashes (what HGETALL read) under ``bench:h:``, each command replayed
    alone (pipelined 32 deep, 16 connections) and weighted by how often a request sends it."""
    client = live.client
    family, keys = widest_hashes(
        client, live.settings.topic_prefix, [d for d, _ in live.traffic.docs]
    )
    pipe = client.pipeline(transaction=False)
    for n in range(BENCH_KEYS):
        if keys:
            pipe.restore(f"bench:h:{n:012d}", 0, client.dump(keys[n % len(keys)]), replace=True)
        pipe.set(f"bench:s:{n:012d}", "x" * 64)
    pipe.execute()
    port = int(live.settings.redis_url.rsplit(":", 1)[1].split("/")[0])
    rps: dict[str, float | None] = {}
    for name, count in sorted(mix.items(), key=lambda item: -item[1]):
        if count > 0 and name in REPLAY:
            console.log(f"redis-benchmark: {name}")
            rps[name] = replay_rps(port, REPLAY[name], args.redis_benchmark_requests)
    for name in client.scan_iter(match="bench:*", count=1000):
        client.delete(name)
    return {
        "hashes_copied": family,
        "hash_fields": client.hlen(keys[0]) if keys else 0,
        "options": f"-c 16 -P 32 -r {BENCH_KEYS} -n {args.redis_benchmark_requests}",
        "ops_per_s": {n: round(v) if v else None for n, v in rps.items()},
        "with_the_mix": shard_capacity(mix, rps),
    }


# --- the run ------------------------------------------------------------------------------


def live_phases(args: argparse.Namespace) -> dict[str, Any]:
    from streamrank.models.assets.model_files import default_model_dir

    model_dir = Path(args.model_dir or default_model_dir()).expanduser()
    docs, queries = wiki_pool(args.candidates, args.seed)
    version, vectors = pool_vectors(model_dir, docs)
    traffic = Traffic(docs, queries, args.seed)
    figures: dict[str, Any] = {}
    with (
        private_services(keep=args.keep) as services,
        live_deployment(services, args, traffic, version, vectors) as live,
    ):
        console.log("starting the worker")
        live.start_worker()
        if args.items:
            figures["items_stored"] = publish_items(live)
        seen, idle = [], None
        if {"request", "interactions"} & set(args.only):
            figures["request"], seen, idle = request_phase(live, args)
        if "interactions" in args.only and idle is not None:
            figures["interactions"] = interactions_phase(live, seen, idle, args)
        if "throughput" in args.only:
            if not seen:  # the worker has not served yet: warm it first
                live.ranked(live.send("warm", args.warmup, args.rate), 240)
            figures["throughput"] = throughput_phase(live, args)
        if not args.skip_redis_benchmark and "request" in figures:
            mix = figures["request"]["per_request"]["redis_commands_by_name"]
            figures["redis_benchmark"] = redis_benchmark(live, mix, args)
    return figures


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the figures as JSON (default)")
    parser.add_argument("--only", default=",".join(PHASES), help="comma-separated phases")
    parser.add_argument("--repeats", type=int, default=5, help="model speed repeats")
    parser.add_argument("--pairs", type=int, default=96, help="pairs per model speed repeat")
    parser.add_argument("--texts", type=int, default=48, help="texts per bi-encoder repeat")
    parser.add_argument("--candidates", type=int, default=1000, help="per request")
    parser.add_argument("--requests", type=int, default=30, help="measured at --rate")
    parser.add_argument("--rate", type=float, default=0.5, help="requests/s, low: none queues")
    parser.add_argument("--warmup", type=int, default=8, help="unmeasured requests per worker")
    parser.add_argument(
        "--idle-s", type=float, default=None, help="(default: as long as the requests)"
    )
    parser.add_argument("--settle-s", type=float, default=3.0, help="after the last ranking")
    parser.add_argument("--learn-settle-s", type=float, default=15.0, help="after the sessions")
    parser.add_argument("--saturate", type=int, default=120, help="requests sent at once")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--budget-ms", type=float, default=120_000.0, help="high: full work")
    parser.add_argument("--skip-redis-benchmark", action="store_true")
    parser.add_argument("--redis-benchmark-requests", type=int, default=200_000)
    parser.add_argument(
        "--no-items",
        dest="items",
        action="store_false",
        help="do not publish the documents as items first (feature reads then find nothing)",
    )
    parser.add_argument("--model-dir", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the private run dir (logs)")
    args = parser.parse_args(argv)
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(args.only) - set(PHASES)
    if unknown:
        parser.error(f"unknown phase(s) {sorted(unknown)}; choose from {', '.join(PHASES)}")
    if min(args.repeats, args.pairs, args.texts, args.candidates, args.requests) < 1:
        parser.error("--repeats, --pairs, --texts, --candidates and --requests must be positive")
    if args.rate <= 0 or args.saturate < 2:
        parser.error("--rate must be positive and --saturate at least 2")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    started = time.monotonic()
    figures: dict[str, Any] = {
        "phases": args.only,
        "cpu_count": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    if "models" in args.only:
        console.rule("models")
        figures["models"] = models_phase(args)
    if set(args.only) - {"models"}:
        console.rule("live")
        figures |= live_phases(args)
    figures["seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(figures, indent=None if args.json else 2))


if __name__ == "__main__":
    main()

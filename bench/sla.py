"""The served path against its SLA: 1,000-candidate requests through a live worker.

Candidates come from the built-in ``hybrid:1000`` first stage (BM25 and dense, fused) over the
wiki demo corpus and SciFact, retrieved here before anything is timed, and published as the
``retrieve`` agent publishes them (each candidate with its text) to the ``candidates`` topic of
a real ``streamrank worker`` on the real broker, at ``--rate`` requests per second, wiki and
SciFact queries in turn. The same requests go through two workers, one after the other (never
together: they would share the cores): the baseline ``dense>ce:30`` (today's default) and the
cascade under test (``--pipeline``; :data:`PIPELINE` by default).

Documents are never encoded on the request path: before a worker starts, every candidate's
dense vector is copied from the first-stage index (``streamrank index build`` with vectors,
built here once and cached) into the worker's Redis vector store, as ingestion leaves it. Each
worker gets two passes of the same queries (fresh request ids): ``cold`` (its first
``--warmup`` requests unmeasured: cost models, onnxruntime), where vectors come from Redis,
and ``warm``, where they come from the worker's in-process store, as in a worker that has been
serving a while or holds its index. The score cache lives 1 s, so a query seen again pays its
model calls again. The targets are read on the ``warm`` pass.

Latencies, per request (milliseconds; p50/p95/p99/max over the measured requests):

``added_ms``
    the re-rank stage's added latency as the target defines it: candidates consumed (the
    worker's consumer handing the message over, before decoding) -> ranking produced (the
    ranking record's timestamp, set by the worker's producer). It holds the decoding, any wait
    in the worker, the cascade, the impression write and the ranking's send;
``rerank_ms``
    the same from candidates published: ``added_ms`` plus the hop in (the producer, the
    broker, the consumer's fetch; the ranking's ``timings_ms["hop"]``);
``worker_ms``
    the sum of the ranking's own ``timings_ms`` (lookup, tiers, online ranker): the work alone;
``e2e_ms``
    candidates published -> ranking read back by this bench (both broker hops).

Also per pass: requests sent, ranked, lost, degraded (with the most frequent reasons, and how
many degraded rankings carry no reason: must be 0), and nDCG@10 of the live rankings and of
the first stage on the same queries (wiki and SciFact qrels). In the same run, offline through
the library, each cascade's nDCG@10 on TREC DL 2019 (``../shared/data/trec-dl-2019/
bm25-top100.json``, the same spec, no deadline).

``--overload`` adds a third pass to the cascade under test at 3x ``--rate`` (the target's
sustained rate): p99 against twice the latency budget (``--budget-ms``, default the worker's),
and whether every request still got a ranking (the late ones degraded, with a reason).
``--quick`` is a smoke run (20 measured requests a pass, DL19 on 10 queries). The machine
may be shared: quote medians of repeated runs.

Needs the services (``streamrank services up``; ``--private`` starts a private Kafka and Redis
instead), the models and ``../shared/data``. Each run's topics and keys are deleted at the end.

Example: python bench/sla.py --json --pipeline 'dense>ce:5' --overload
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import random
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.faults import RankingWatcher, Seen, Worker, paced, private_services  # noqa: E402
from bench.memory import degraded_reasons, delete_run  # noqa: E402
from streamrank.models.evaluation.metrics import mean_metrics  # noqa: E402
from streamrank.streams.config import Settings  # noqa: E402
from streamrank.streams.events import Candidate, Candidates  # noqa: E402
from streamrank.streams.kafka.topics import create_topics  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
DL19 = SHARED / "trec-dl-2019"
BASELINE = "dense>ce:30"
"""Today's default cascade, measured in every run."""
PIPELINE = "dense>ce:3"
"""The cascade under test by default (to become the three-tier ``dense>student:K>ce:K``)."""
K1 = 1000
OUTSIDE_CASCADE = ("lookup", "online")
"""Stages of a ranking's ``timings_ms`` that the cascade's ``total`` does not hold."""
WAITS = ("queue", "hop")
"""Entries of a ranking's ``timings_ms`` that are waits before the work, not work."""
OVERLOAD_FACTOR = 3.0


@dataclass(frozen=True)
class Collection:
    """A judged corpus whose queries make the requests."""

    name: str
    corpus: Path
    queries: Path
    qrels: Path
    index: Path | None = None
    """An index to use where it exists with vectors (else one is built in the cache)."""


def collections() -> list[Collection]:
    from streamrank.models.assets.wiki import DEFAULT_OUT as WIKI
    from streamrank.streams.demo import DEMO_INDEX

    scifact = SHARED / "scifact"
    return [
        Collection(
            "wiki",
            WIKI / "corpus.jsonl",
            WIKI / "queries.jsonl",
            WIKI / "qrels.txt",
            index=DEMO_INDEX,  # `make demo` builds it, with vectors
        ),
        Collection(
            "scifact",
            scifact / "corpus.jsonl",
            scifact / "queries.jsonl",
            scifact / "qrels-test.txt",
        ),
    ]


@dataclass(frozen=True)
class Request:
    """One query with its first-stage candidates, ready to publish."""

    collection: str
    qid: str
    query: str
    candidates: list[Candidate]

    def message(self, request_id: str) -> bytes:
        """The ``candidates`` message, stamped now."""
        return Candidates(
            request_id=request_id,
            query=self.query,
            candidates=self.candidates,
            context={"collection": self.collection, "qid": self.qid},
            timestamp=time.time(),
        ).to_bytes()


# --- figures ------------------------------------------------------------------------------


def percentiles(values_ms: Sequence[float]) -> dict[str, float | None]:
    """p50, p95, p99 and max of latencies in ms, rounded to 0.1 (None for no values).

    Examples
    --------
    >>> percentiles([10.0, 20.0, 30.0, 40.0])
    {'p50': 25.0, 'p95': 38.5, 'p99': 39.7, 'max': 40.0}
    >>> percentiles([])
    {'p50': None, 'p95': None, 'p99': None, 'max': None}
    """
    if not len(values_ms):
        return {"p50": None, "p95": None, "p99": None, "max": None}
    values = np.asarray(values_ms, dtype=float)
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {
        "p50": round(float(p50), 1),
        "p95": round(float(p95), 1),
        "p99": round(float(p99), 1),
        "max": round(float(values.max()), 1),
    }


@dataclass(frozen=True)
class Timed:
    """One measured request: when it was published and how its ranking came back."""

    sent: float
    seen: Seen

    @property
    def rerank_ms(self) -> float:
        return 1000 * (self.seen.created - self.sent)

    @property
    def added_ms(self) -> float:
        """``rerank_ms`` less the hop in (published -> consumed), where the ranking says it."""
        ranking = self.seen.ranking
        hop = ranking.timings_ms.get("hop", 0.0) if ranking is not None else 0.0
        return self.rerank_ms - hop

    @property
    def e2e_ms(self) -> float:
        return 1000 * (self.seen.received - self.sent)

    @property
    def worker_ms(self) -> float:
        """The ranking's own time: lookup, the cascade's total (its tiers' times summed where
        it has none) and the online ranker."""
        ranking = self.seen.ranking
        if ranking is None:
            return 0.0
        timings = ranking.timings_ms
        outside = {name: timings[name] for name in OUTSIDE_CASCADE if name in timings}
        cascade = timings.get("total")
        if cascade is None:
            cascade = sum(
                v for name, v in timings.items() if name not in outside and name not in WAITS
            )
        return cascade + sum(outside.values())


def latency_summary(timed: Sequence[Timed], budget_ms: float) -> dict[str, Any]:
    """The three latency figures of a run and how many re-rank latencies exceed the budget.

    Examples
    --------
    >>> from bench.faults import Seen
    >>> run = [Timed(0.0, Seen("r", 0, 0.05, 0.04, False, [])),
    ...        Timed(1.0, Seen("s", 0, 1.30, 1.20, True, []))]
    >>> summary = latency_summary(run, budget_ms=100)
    >>> summary["rerank_ms"]["max"], summary["e2e_ms"]["p50"], summary["over_budget"]
    (200.0, 175.0, 1)
    """
    rerank = [t.rerank_ms for t in timed]
    return {
        "added_ms": percentiles([t.added_ms for t in timed]),
        "rerank_ms": percentiles(rerank),
        "worker_ms": percentiles([t.worker_ms for t in timed]),
        "e2e_ms": percentiles([t.e2e_ms for t in timed]),
        "over_budget": sum(value > budget_ms for value in rerank),
    }


def stage_medians(rankings: Sequence[Any]) -> dict[str, float]:
    """The median of each stage the rankings' ``timings_ms`` name (lookup, tiers, online).

    Examples
    --------
    >>> from types import SimpleNamespace as Ranking
    >>> stage_medians([Ranking(timings_ms={"ce": 10.0}), Ranking(timings_ms={"ce": 30.0})])
    {'ce': 20.0}
    """
    names = dict.fromkeys(name for r in rankings for name in r.timings_ms)
    return {
        name: round(
            float(np.median([r.timings_ms[name] for r in rankings if name in r.timings_ms])), 1
        )
        for name in names
    }


def live_quality(
    timed: Sequence[Timed], requests: dict[str, Request], qrels: dict[str, dict[str, dict]]
) -> dict[str, dict[str, float]]:
    """nDCG@10 per collection of the live rankings and of the first stage, same queries."""
    figures: dict[str, dict[str, float]] = {}
    for name, judged in qrels.items():
        live, first = {}, {}
        for t in timed:
            request = requests[t.seen.request_id]
            if request.collection != name or request.qid in live or t.seen.ranking is None:
                continue
            live[request.qid] = [item.doc_id for item in t.seen.ranking.items]
            first[request.qid] = [c.doc_id for c in request.candidates]
        if live:
            figures[name] = {
                "queries": len(live),
                "live_ndcg@10": round(mean_metrics(live, judged, k=10)["ndcg@10"], 4),
                "first_stage_ndcg@10": round(mean_metrics(first, judged, k=10)["ndcg@10"], 4),
            }
    return figures


# --- requests and vectors -----------------------------------------------------------------


def first_stage_requests(
    collection: Collection, count: int, model_dir: Path, seed: int
) -> tuple[list[Request], dict[str, dict[str, int]], Any]:
    """``count`` judged queries (seeded sample) with their ``hybrid:1000`` candidates, the
    qrels, and the first stage (whose index holds the documents' vectors)."""
    from streamrank.models.evaluation.first_stage import judged_queries
    from streamrank.models.evaluation.pipeline import load_stage, retrieve_all
    from streamrank.models.retrieval.corpus import read_qrels, read_queries

    index = collection.index
    if index is not None and not (index / "dense").exists():
        index = None
    stage = load_stage(collection.corpus, index, "hybrid", model_dir)
    qrels = read_qrels(collection.qrels).items
    judged = judged_queries(read_queries(collection.queries).items, qrels)
    picked = random.Random(seed).sample(sorted(judged), min(count, len(judged)))
    retrieved, _ = retrieve_all(stage, {qid: judged[qid] for qid in picked}, "hybrid", K1)
    requests = [
        Request(
            collection.name,
            query.qid,
            query.text,
            [
                Candidate(doc_id=c.doc_id, text=c.text, first_stage_score=c.first_stage_score)
                for c in query.candidates
            ],
        )
        for query in retrieved
    ]
    return requests, qrels, stage


def store_vectors(
    client: redis.Redis,
    settings: Settings,
    stages: dict[str, Any],
    requests: Sequence[Request],
    version: str,
) -> int:
    """Copy every candidate's dense vector from its first-stage index into the worker's vector
    store (what ingestion leaves there), keyed as the dense tier of encoder ``version`` reads
    it; how many."""
    from streamrank.models.scoring.score_cache import vector_key
    from streamrank.streams.state.connections import key
    from streamrank.streams.state.redis_cache import RedisVectorCache

    cache = RedisVectorCache(client, key(settings, "vec:"), settings.vector_cache_ttl_s)
    vectors: dict[str, np.ndarray] = {}
    for request in requests:
        dense = stages[request.collection].dense
        for candidate in request.candidates:
            vector = dense.vector(candidate.doc_id)
            if vector is not None:
                vectors[vector_key(version, candidate.doc_id, candidate.text or "")] = vector
    items = list(vectors.items())
    for start in range(0, len(items), 2000):
        cache.set_many(dict(items[start : start + 2000]))
    return len(vectors)


def check_vector_version(model_dir: Path, stages: dict[str, Any]) -> str:
    """The dense tier's encoder version; refuses an index whose vectors are of another.

    An index built before the manifest recorded the encoder's version records its name alone
    (weights' hash); it was built at the default max length, which the version then assumes.
    """
    from streamrank.models.scoring.bi_encoder import BiEncoder

    encoder = BiEncoder(model_dir / "bge_small_en", threads=1)
    try:
        for name, stage in stages.items():
            dense = stage.dense
            same = dense is not None and (
                dense.version == encoder.version
                or (not dense.version and dense.model == encoder.name)
            )
            if not same:
                raise SystemExit(
                    f"{name}: index vectors {getattr(stage.dense, 'version', None)} are not "
                    f"the dense tier's {encoder.version}"
                )
        return encoder.version
    finally:
        encoder.close()


# --- one live worker ----------------------------------------------------------------------


@dataclass
class Services:
    """Where the workers' Kafka and Redis are."""

    bootstrap: str
    redis_url: str
    log_dir: Path


@contextlib.contextmanager
def services_for(private: bool) -> Iterator[Services]:
    if not private:
        env = Settings()
        yield Services(env.kafka_bootstrap, env.redis_url, Path("/tmp"))
        return
    with private_services(keep=False) as started:
        yield Services(started.bootstrap, started.redis_url, started.run_dir)


@dataclass(frozen=True)
class Pass:
    """Requests sent to a worker at one rate; the first ``warmup`` of them are not measured."""

    name: str
    plan: list[tuple[str, Request]]
    rate: float
    warmup: int = 0


@dataclass
class PassResult:
    """The measured requests of a pass that came back, how many were sent, in how long."""

    timed: list[Timed]
    sent: int
    send_s: float


def run_settings(services: Services) -> Settings:
    run = uuid.uuid4().hex[:8]
    return Settings(
        kafka_bootstrap=services.bootstrap,
        redis_url=services.redis_url,
        topic_prefix=f"bench-sla-{run}.",
        app_id=f"streamrank-bench-sla-{run}",
        partitions=2,
    )


def live_run(
    services: Services,
    spec: str,
    passes: Sequence[Pass],
    budget_ms: float,
    stages: dict[str, Any],
    version: str,
) -> tuple[dict[str, PassResult], dict[str, int]]:
    """The passes, one after the other, through one fresh worker serving ``spec``; with the
    candidates its vector tiers found no stored vector for (by tier; must be none)."""
    settings = run_settings(services)
    client = redis.Redis.from_url(settings.redis_url)
    topics = [result.name for result in create_topics(settings)]
    worker = watcher = producer = None
    try:
        requests = [request for one in passes for _, request in one.plan]
        log(f"{spec}: {store_vectors(client, settings, stages, requests, version)} vectors stored")
        env = {
            "STREAMRANK_PIPELINE": spec,
            "STREAMRANK_LATENCY_BUDGET_MS": str(budget_ms),
            # a query seen again a few seconds later must cost its model calls again
            "STREAMRANK_SCORE_CACHE_TTL_S": "1",
        }
        worker = Worker(settings, services.log_dir / f"{settings.app_id}.log", env)
        worker.wait_ready(timeout_s=240)
        watcher = RankingWatcher(settings)
        producer = Publisher(settings)
        results = {}
        for one in passes:
            log(f"{spec}: {one.name}, {len(one.plan)} requests at {one.rate:g}/s")
            results[one.name] = producer.run(one, watcher)
        return results, vectors_missing(client, settings)
    finally:
        for closing in (producer, watcher):
            if closing is not None:
                closing.close()
        if worker is not None:
            worker.stop()
        delete_run(settings, topics, client)


def vectors_missing(client: redis.Redis, settings: Settings) -> dict[str, int]:
    """The worker's count of candidates left unscored for want of a stored vector."""
    from streamrank.streams.state.service_metrics import ServiceMetrics

    missing = ServiceMetrics(client, settings).snapshot().get("vectors_missing", {})
    return {tier: int(count) for tier, count in missing.items()}


class Publisher:
    """Publishes candidates messages, paced, noting when each was sent.

    aiokafka's producer (in a loop of its own thread), not kafka-python's: kafka-python
    checksums a record batch in pure Python, over a second per 1.5 MB message of 1,000
    candidates with text, which would hold the sending rate far below 5 per second.
    """

    def __init__(self, settings: Settings) -> None:
        from aiokafka import AIOKafkaProducer

        self.topic = settings.topic("candidates")
        self.sent: dict[str, float] = {}
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        async def start() -> AIOKafkaProducer:
            producer = AIOKafkaProducer(
                bootstrap_servers=settings.kafka_bootstrap,
                linger_ms=0,
                max_request_size=settings.max_message_bytes,
            )
            await producer.start()
            return producer

        self.producer = self._wait(start())

    def _wait(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=60)

    def send(self, request_id: str, request: Request) -> None:
        value = request.message(request_id)
        self.sent[request_id] = time.time()
        send = self.producer.send(self.topic, key=request_id.encode(), value=value)
        asyncio.run_coroutine_threadsafe(send, self.loop)

    def run(self, one: Pass, watcher: RankingWatcher) -> PassResult:
        """Send the warm-up and wait for it, then the measured requests, and wait for them."""
        stop = threading.Event()
        warmup, measured = one.plan[: one.warmup], one.plan[one.warmup :]
        paced(len(warmup), one.rate, lambda n: self.send(*warmup[n]), stop)
        watcher.wait({rid for rid, _ in warmup}, timeout_s=60 + len(warmup))
        started = time.monotonic()
        paced(len(measured), one.rate, lambda n: self.send(*measured[n]), stop)
        send_s = time.monotonic() - started
        wanted = {rid for rid, _ in measured}
        watcher.wait(wanted, timeout_s=60 + len(measured) / one.rate)
        first: dict[str, Seen] = {}
        for seen in watcher.snapshot():
            first.setdefault(seen.request_id, seen)
        timed = [Timed(self.sent[rid], first[rid]) for rid, _ in measured if rid in first]
        return PassResult(timed, len(measured), send_s)

    def close(self) -> None:
        self._wait(self.producer.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


def pass_figures(
    run: PassResult,
    requests: dict[str, Request],
    qrels: dict[str, dict[str, dict[str, int]]],
    budget_ms: float,
) -> dict[str, Any]:
    """What one pass measured: counts, degraded, latencies, live quality."""
    timed, sent = run.timed, run.sent
    rankings = [t.seen.ranking for t in timed if t.seen.ranking is not None]
    degraded = [r for r in rankings if r.degraded]
    return {
        "sent": sent,
        "rate_sent": round((sent - 1) / run.send_s, 2) if run.send_s else None,
        "ranked": len(timed),
        "lost": sent - len(timed),
        "degraded": len(degraded),
        "degraded_unflagged": sum(not r.degraded_reason for r in degraded),
        "degraded_reasons": degraded_reasons(rankings),
        **latency_summary(timed, budget_ms),
        "stage_ms_p50": stage_medians(rankings),
        "quality": live_quality(timed, requests, qrels),
    }


# --- offline DL19 -------------------------------------------------------------------------


def dl19_figures(specs: Sequence[str], model_dir: Path, limit: int | None) -> dict[str, Any]:
    """Each cascade's DL19 nDCG@10 over the BM25 top 100, no deadline (vectors shared)."""
    from streamrank.models.evaluation.rerank import load_candidates, load_qrels, run_cascade
    from streamrank.models.scoring.factory import build_cascade
    from streamrank.models.scoring.score_cache import InMemoryCache

    queries = load_candidates(DL19 / "bm25-top100.json")[:limit]
    qrels = load_qrels(DL19 / "qrels.txt")
    vectors = InMemoryCache(max_items=100_000)
    figures = {}
    for spec in dict.fromkeys(specs):
        cascade = build_cascade(spec, model_dir, vector_cache=vectors)
        result = run_cascade(cascade, queries, qrels)
        figures[spec] = {
            "queries": result["queries"],
            "ndcg@10": result["ndcg@10"],
            "latency_ms": result["latency_ms"],
            "pairs_per_second": result["pairs_per_second"],
        }
    return figures


# --- the run ------------------------------------------------------------------------------


def request_plan(requests: list[Request], count: int, tag: str) -> list[tuple[str, Request]]:
    """``count`` (request id, request) pairs, round the requests (fresh ids: no cache hits
    from an earlier request of the same id; repeated queries may hit the score cache)."""
    cycle = itertools.cycle(requests)
    return [(f"{tag}-{n}", next(cycle)) for n in range(count)]


def interleave(groups: Sequence[Sequence[Request]]) -> list[Request]:
    """One request of each group in turn (wiki, SciFact, wiki, ...)."""
    return [r for batch in itertools.zip_longest(*groups) for r in batch if r is not None]


def passes_for(name: str, mixed: list[Request], args: argparse.Namespace) -> list[Pass]:
    """A worker's passes: ``cold`` (after the warm-up), ``warm`` over the same queries, and
    for the cascade under test with ``--overload``, ``overload`` at 3x the rate."""
    passes = [
        Pass(
            "cold",
            request_plan(mixed, args.warmup + args.requests, f"{name}-cold"),
            args.rate,
            args.warmup,
        ),
        Pass("warm", request_plan(mixed, args.requests, f"{name}-warm"), args.rate),
    ]
    if args.overload and name == "pipeline":
        plan = request_plan(mixed, args.overload_requests, "overload")
        passes.append(Pass("overload", plan, OVERLOAD_FACTOR * args.rate))
    return passes


def sla(args: argparse.Namespace) -> dict[str, Any]:
    from streamrank.models.assets.model_files import default_model_dir

    model_dir = Path(args.model_dir or default_model_dir()).expanduser()
    budget = args.budget_ms
    started = time.monotonic()
    groups, qrels, stages = [], {}, {}
    for collection in collections():
        if collection.name not in args.collections:
            continue
        log(f"first stage hybrid:{K1} on {collection.name}")
        requests, qrels[collection.name], stages[collection.name] = first_stage_requests(
            collection, args.queries, model_dir, args.seed
        )
        groups.append(requests)
    version = check_vector_version(model_dir, stages)
    mixed = interleave(groups)
    by_id: dict[str, Request] = {}
    result: dict[str, Any] = {
        "rate": args.rate,
        "requests": args.requests,
        "warmup": args.warmup,
        "candidates": K1,
        "first_stage": f"hybrid:{K1}",
        "queries_per_collection": {name: len(g) for name, g in zip(qrels, groups, strict=True)},
        "budget_ms": budget,
        "pipelines": {},
    }
    runs = {"baseline": BASELINE, "pipeline": args.pipeline}
    with services_for(args.private) as services:
        for name, spec in runs.items():
            passes = passes_for(name, mixed, args)
            for one in passes:
                by_id |= dict(one.plan)
            runs_of, missing = live_run(services, spec, passes, budget, stages, version)
            figures: dict[str, Any] = {"pipeline": spec, "vectors_missing": missing}
            for one in passes:
                figures[one.name] = pass_figures(runs_of[one.name], by_id, qrels, budget)
                figures[one.name]["rate"] = one.rate
            result["pipelines"][name] = figures
    if args.overload:
        overload = result["pipelines"]["pipeline"]["overload"]
        overload["p99_within_2x_budget"] = (overload["rerank_ms"]["p99"] or 0) <= 2 * budget
        overload["every_request_ranked"] = overload["lost"] == 0
    log("DL19 offline")
    specs = [BASELINE, args.pipeline]
    try:
        result["dl19"] = dl19_figures(specs, model_dir, 10 if args.quick else None)
    except Exception as error:  # the live figures are worth printing all the same
        result["dl19"] = {"error": f"{type(error).__name__}: {error}"}
    result["targets"] = targets(result)
    result["seconds"] = round(time.monotonic() - started, 1)
    return result


def targets(result: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets for the cascade under test (its warm pass), met or not."""
    tested = result["pipelines"]["pipeline"]
    warm = tested["warm"]
    dl19 = result["dl19"].get(tested["pipeline"], {})
    figures: dict[str, Any] = {
        "added_p95_le_50ms": (warm["added_ms"]["p95"] or 1e9) <= 50,
        "zero_degraded": warm["degraded"] == 0,
        "dl19_ndcg@10_ge_0.705": dl19.get("ndcg@10", 0) >= 0.705,
    }
    if "overload" in tested:
        figures["overload_p99_within_2x_budget"] = tested["overload"]["p99_within_2x_budget"]
        figures["overload_every_request_ranked"] = tested["overload"]["every_request_ranked"]
    return figures


def log(message: str) -> None:
    print(f"[sla] {message}", file=sys.stderr, flush=True)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipeline", default=PIPELINE, help=f"cascade under test ({PIPELINE})")
    parser.add_argument("--rate", type=float, default=5.0, help="requests per second")
    parser.add_argument("--requests", type=int, default=300, help="measured, per pipeline")
    parser.add_argument("--warmup", type=int, default=20, help="unmeasured, per worker")
    parser.add_argument(
        "--queries",
        type=int,
        default=None,
        help="judged queries per corpus (default: enough for every request of a run to be new)",
    )
    parser.add_argument(
        "--budget-ms",
        type=float,
        default=None,
        help="the workers' latency budget (default: the setting's default)",
    )
    parser.add_argument("--overload", action="store_true", help=f"also {OVERLOAD_FACTOR:g}x rate")
    parser.add_argument("--overload-requests", type=int, default=None)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: 20 measured requests a pass, DL19 on 10 queries",
    )
    parser.add_argument("--private", action="store_true", help="private Kafka and Redis")
    parser.add_argument(
        "--collections",
        type=lambda text: text.split(","),
        default=["wiki", "scifact"],
        help="comma-separated, of wiki and scifact (default: both)",
    )
    parser.add_argument("--model-dir", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args(argv)
    if args.quick:
        args.requests, args.warmup = 20, 6
    if args.queries is None:
        args.queries = -(-(args.requests + args.warmup) // 2)
    if args.budget_ms is None:
        args.budget_ms = Settings.model_fields["latency_budget_ms"].default
    if args.overload_requests is None:
        args.overload_requests = int(args.requests * OVERLOAD_FACTOR)
    if args.rate <= 0 or args.requests <= 0 or args.warmup < 0:
        parser.error("--rate and --requests must be positive, --warmup not negative")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    result = sla(args)
    print(json.dumps(result, indent=None if args.json else 2))


if __name__ == "__main__":
    main()

"""The demo: a few hundred Wikipedia queries through real workers, shown live.

It fetches what it needs once (the models, the 10,033-article Wikipedia demo corpus), builds
the index (BM25 and the bi-encoder's document vectors), starts a worker with the retrieve agent
enabled, publishes queries to ``queries`` and shows each ranking as it comes back from
``rankings``: the query, the top 3 titles, the time each stage took, and the running nDCG@10
against the corpus's judgments.

The worker serves ``settings.pipeline`` (``STREAMRANK_PIPELINE``) and its dense tier reads the
document vectors from the index the worker holds: nothing but the query is encoded on the
request path. At the end the demo ranks the same queries offline, in this process, with the
same models and the same pipeline (:func:`offline_comparison`), and prints the live nDCG@10
next to the offline cascade's and BM25's, so any loss of the live path (deadline, exploration)
shows.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from streamrank.models.evaluation.metrics import ndcg_at_k
from streamrank.models.retrieval.corpus import CACHE_DIR
from streamrank.streams.config import Settings
from streamrank.streams.events import Query, Ranking
from streamrank.streams.kafka.clients import producer_options
from streamrank.streams.kafka.topics import create_topics
from streamrank.streams.terminal import RichProgress, learning_curve_table, progress_bar

DEMO_INDEX = CACHE_DIR / "indexes" / "wiki"
"""The demo corpus's index: BM25 and the bi-encoder's document vectors."""
DEMO_K1 = "30"
"""Candidates retrieved per demo query, unless ``STREAMRANK_RETRIEVE_K`` says otherwise."""


@dataclass
class DemoData:
    corpus: Path
    queries: list[tuple[str, str]]  # (query id, text)
    qrels: dict[str, dict[str, int]]
    titles: dict[str, str]
    texts: dict[str, str]


@dataclass
class Board:
    """What the live view shows."""

    sent: int
    rows: deque = field(default_factory=lambda: deque(maxlen=12))
    ndcgs: list[float] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    results: dict[str, Ranking] = field(default_factory=dict)
    qids: dict[str, str] = field(default_factory=dict)  # request id -> query id
    live_ndcg: dict[str, float] = field(default_factory=dict)  # request id -> nDCG@10


def prepare(settings: Settings, console: Console) -> DemoData:
    """Models, corpus and index: fetched and built once, reused afterwards."""
    from streamrank.models.assets.model_files import fetch_models
    from streamrank.models.assets.wiki import DEFAULT_OUT, fetch_wiki
    from streamrank.models.retrieval.corpus import read_qrels, read_queries
    from streamrank.models.retrieval.first_stage import (
        build_index,
        corpus_sha256,
        recorded_corpus_sha256,
    )
    from streamrank.models.scoring.bi_encoder import load_bi_encoder

    with progress_bar() as bars:
        fetch_models(settings.model_dir, RichProgress(bars))
    wiki = DEFAULT_OUT
    if not (wiki / "corpus.jsonl").exists():
        console.print("fetching the Wikipedia demo corpus (once)")
        fetch_wiki(wiki)
    digest = corpus_sha256(wiki / "corpus.jsonl")
    encoder = load_bi_encoder(settings.model_dir)
    # none yet, of another corpus file, or without this bi-encoder's vectors
    if recorded_corpus_sha256(DEMO_INDEX) != digest or index_vectors_version() != encoder.version:
        console.print("building the demo corpus's index: BM25 and document vectors (once)")
        with progress_bar() as bars:
            build_index(
                wiki / "corpus.jsonl", DEMO_INDEX, encoder, RichProgress(bars), corpus_digest=digest
            )
    encoder.close()
    queries = list(read_queries(wiki / "queries.jsonl").items.items())
    qrels = read_qrels(wiki / "qrels.txt").items
    titles, texts = {}, {}
    with (wiki / "corpus.jsonl").open() as corpus:
        for line in corpus:
            doc = json.loads(line)
            titles[doc["_id"]] = doc["title"]
            texts[doc["_id"]] = f"{doc['title']}. {doc['text']}"
    return DemoData(wiki / "corpus.jsonl", queries, qrels, titles, texts)


def index_vectors_version(directory: Path = DEMO_INDEX) -> str | None:
    """The encoder version of the vectors an index holds (None: none, or not recorded)."""
    manifest = directory / "manifest.json"
    if not manifest.exists():
        return None
    return json.loads(manifest.read_text("utf-8")).get("dense_version")


def start_worker(settings: Settings, log_path: Path, env: dict[str, str]) -> subprocess.Popen:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [sys.executable, "-m", "streamrank.streams.cli", "worker", "-l", "info"],
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
        env=dict(os.environ) | env,
    )


def wait_ready(worker: subprocess.Popen, log_path: Path, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if "Worker]: Ready" in log_path.read_text(errors="replace"):
            return
        if worker.poll() is not None:
            raise RuntimeError(f"the worker exited; see {log_path}")
        time.sleep(0.2)
    raise RuntimeError(f"the worker was not ready in {timeout_s}s; see {log_path}")


def view(board: Board, data: DemoData, requests: dict[str, str]) -> Group:
    table = Table("query", "top 3", "stages (ms)", title="rankings, live (latest 12)")
    for request_id, ranking in board.rows:
        top = " | ".join(data.titles.get(item.doc_id, item.doc_id) for item in ranking.items[:3])
        stages = " ".join(f"{name} {ms:.0f}" for name, ms in ranking.timings_ms.items())
        table.add_row(requests[request_id], top, stages)
    done = len(board.ndcgs)
    summary = Table.grid(padding=(0, 2))
    summary.add_row(
        f"queries sent {board.sent}/{len(requests)}, rankings back {done}",
        f"nDCG@10 so far {np.mean(board.ndcgs):.3f}" if done else "",
        f"latency p50 {np.percentile(board.latencies_ms, 50):.0f} ms, "
        f"p95 {np.percentile(board.latencies_ms, 95):.0f} ms"
        if done
        else "",
    )
    return Group(table, summary)


def run_demo(
    settings: Settings,
    console: Console,
    queries: int = 200,
    timeout_s: float = 600,
    learn_queries: int = 30,
    learn_sessions: int = 30,
) -> int:
    """Run the demo; returns the number of rankings received.

    At the end, the live nDCG@10 is printed next to the same cascade's offline and BM25's on
    the same queries (:func:`offline_comparison`; also written to
    ``.run/demo-comparison.json`` with per-query figures).
    """
    data = prepare(settings, console)
    create_topics(settings)
    log_path = Path(".run") / "demo-worker.log"
    env = {
        "STREAMRANK_INDEX_DIR": str(DEMO_INDEX),
        "STREAMRANK_RETRIEVE_METHOD": "bm25",
        "STREAMRANK_RETRIEVE_K": retrieve_k(),
        "STREAMRANK_PIPELINE": settings.pipeline,
        "STREAMRANK_ONLINE_LEARNING": "true",
        "STREAMRANK_SESSION_CLOSE_S": "1.0",
    }
    console.print(f"starting a worker (log: {log_path})")
    worker = start_worker(settings, log_path, env)
    try:
        wait_ready(worker, log_path)
        board = stream_queries(settings, console, data, queries, timeout_s)
        if board.results and learn_queries:
            learn_from_users(settings, console, data, board, learn_queries, learn_sessions)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    if board.results:  # after the worker is gone: the offline run has the CPU to itself
        comparison = offline_comparison(settings, data, board, console)
        console.print(comparison_table(comparison))
        path = Path(".run") / "demo-comparison.json"
        path.write_text(json.dumps(comparison, indent=2) + "\n")
        console.print(f"figures: {path}")
    return len(board.ndcgs)


def retrieve_k() -> str:
    return os.environ.get("STREAMRANK_RETRIEVE_K", DEMO_K1)


def stream_queries(
    settings: Settings,
    console: Console,
    data: DemoData,
    count: int,
    timeout_s: float,
    rate: float = 10.0,
) -> Board:
    rng = np.random.default_rng(0)
    picked = [data.queries[i] for i in rng.choice(len(data.queries), count, replace=False)]
    run = uuid.uuid4().hex[:6]
    requests = {f"demo-{run}-{qid}": text for qid, text in picked}
    judged = {f"demo-{run}-{qid}": data.qrels.get(qid, {}) for qid, _ in picked}
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    topic = settings.topic("rankings")
    partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
    consumer.assign(partitions)
    consumer.seek_to_end(*partitions)
    consumer.poll(timeout_ms=0)  # fixes the positions before anything is published
    producer = KafkaProducer(**producer_options(settings, linger_ms=0))
    to_send = deque(requests.items())
    sent_at: dict[str, float] = {}
    board = Board(sent=0, qids={f"demo-{run}-{qid}": qid for qid, _ in picked})
    started = time.monotonic()
    deadline = started + timeout_s
    with Live(view(board, data, requests), console=console, refresh_per_second=4) as live:
        while len(board.ndcgs) < len(requests) and time.monotonic() < deadline:
            # Queries go out at a steady rate, as live traffic would, so that the latency
            # shown is the service's and not the queue's.
            while to_send and board.sent < (time.monotonic() - started) * rate:
                request_id, text = to_send.popleft()
                sent_at[request_id] = time.time()
                # the exploit order: this pass is compared with the same cascade offline
                query = Query(
                    request_id=request_id,
                    query=text,
                    timestamp=sent_at[request_id],
                    context={"explore": False},
                )
                producer.send(
                    settings.topic("queries"), key=request_id.encode(), value=query.to_bytes()
                )
                board.sent += 1
            producer.flush()
            for batch in consumer.poll(timeout_ms=50).values():
                for record in batch:
                    ranking = Ranking.model_validate_json(record.value)
                    if ranking.request_id not in requests:
                        continue
                    board.rows.appendleft((ranking.request_id, ranking))
                    board.results[ranking.request_id] = ranking
                    ranked = [item.doc_id for item in ranking.items]
                    ndcg = ndcg_at_k(ranked, judged[ranking.request_id], k=10)
                    board.ndcgs.append(ndcg)
                    board.live_ndcg[ranking.request_id] = ndcg
                    board.latencies_ms.append((time.time() - sent_at[ranking.request_id]) * 1000)
            live.update(view(board, data, requests))
    consumer.close()
    return board


def learn_from_users(
    settings: Settings,
    console: Console,
    data: DemoData,
    board: Board,
    queries: int,
    sessions_per_query: int,
) -> dict:
    """Simulated users click on the worker's rankings and the online ranker learns from them.

    Takes ``queries`` of the streamed queries whose known item is among their candidates,
    replays their candidate lists through the worker as users would (``streamrank simulate``'s
    streaming mode: navigational users, top 10 shown, clicks to ``interactions``), and shows
    nDCG@10 of what the worker would serve at each checkpoint, as a table and a PNG.
    """
    from streamrank.models.evaluation.simulator import SimQuery, dcg, plot_curve, simulate
    from streamrank.models.learning.online_ranker import ScoredCandidate
    from streamrank.streams.streaming_simulator import StreamingSystem

    picked, texts = [], {}
    for request_id, ranking in board.results.items():
        qid = board.qids[request_id]
        judged = data.qrels.get(qid, {})
        docs = [item.doc_id for item in ranking.items]
        if not judged or not set(judged) & set(docs) or len(picked) == queries:
            continue
        grades = np.array([judged.get(doc, 0) for doc in docs])
        candidates = [ScoredCandidate(doc, first_stage=-rank) for rank, doc in enumerate(docs)]
        ideal = dcg(sorted(judged.values(), reverse=True))
        query = dict(data.queries)[qid]
        picked.append(SimQuery(qid, query, candidates, grades, ideal))
        texts[qid] = (query, [data.texts.get(doc, "") for doc in docs])
    console.rule("simulated users teach the online ranker")
    console.print(
        f"{len(picked)} queries x {sessions_per_query} sessions of navigational users, "
        "through Kafka and the worker (exploration on; checkpoints without it)"
    )
    system = StreamingSystem(settings, texts)
    marks = [m for m in (5, 10, 20, 30, 50, 100) if m <= sessions_per_query]
    with progress_bar(console) as bar:
        task = bar.add_task("[bold]users[/]", total=len(picked) * sessions_per_query)
        result = simulate(
            picked,
            system,
            "navigational",
            sessions_per_query,
            marks,
            seed=0,
            progress=lambda done, _total: bar.update(task, completed=done),
        )
    system.close()
    result["start"] = "the worker's cascade"
    plot = Path(".run") / "demo-learning-curve.png"
    plot_curve([result], plot)
    console.print(learning_curve_table(result))
    console.print(f"learning curve: {plot}")
    return result


def served_pipeline(model_version: str) -> str:
    """The pipeline spec a ranking's ``model_version`` names (registry label and tier
    versions left out).

    Examples
    --------
    >>> served_pipeline("v2:dense>ce:30;dense=bge-1;ce=ms-2;online")
    'dense>ce:30'
    >>> served_pipeline("bm25:30>ce:30;ce=ms-2")
    'bm25:30>ce:30'
    """
    head = model_version.split(";")[0]
    return re.sub(r"^v\d+:", "", head)


def offline_comparison(
    settings: Settings, data: DemoData, board: Board, console: Console
) -> dict[str, Any]:
    """nDCG@10 of the streamed queries: live, the same cascade offline, and BM25 alone.

    Offline, each query gets the same candidates the worker's retrieve agent gave it (BM25's
    top ``STREAMRANK_RETRIEVE_K`` from the same index) and is ranked in this process by the
    cascade the worker serves (:func:`streamrank.streams.serving.configured_cascade`: the same
    models, pipeline and confidence rule), with no deadline, no online ranker and no
    exploration, reading document vectors from the same index. Only the queries whose
    ranking came back live are counted, so the three figures are over the same queries.
    """
    from streamrank.models.retrieval.first_stage import FirstStage
    from streamrank.models.retrieval.index_vectors import IndexVectors
    from streamrank.models.scoring.score_cache import InMemoryCache, LayeredVectors
    from streamrank.models.types import TextCandidate
    from streamrank.streams.serving import configured_cascade

    served = {served_pipeline(r.model_version) for r in board.results.values()}
    pipeline = served.pop() if len(served) == 1 else settings.pipeline
    console.rule(f"the same queries offline: {pipeline}, same models, no deadline")
    first_stage = FirstStage.load(DEMO_INDEX)
    vectors = LayeredVectors([InMemoryCache(max_items=None), IndexVectors(first_stage)])
    cascade = configured_cascade(
        settings, pipeline, score_cache=InMemoryCache(max_items=None), vector_cache=vectors
    )
    k1, texts = int(retrieve_k()), dict(data.queries)
    offline, bm25, encoded = [], [], 0
    request_ids = list(board.live_ndcg)
    with progress_bar(console) as bar:
        task = bar.add_task("[bold]offline[/]", total=len(request_ids))
        for request_id in request_ids:
            qid = board.qids[request_id]
            hits = first_stage.retrieve(texts[qid], k1, "bm25")
            candidates = [
                TextCandidate(hit.doc_id, doc.content if doc else None, hit.score)
                for hit, doc in ((hit, first_stage.get(hit.doc_id)) for hit in hits)
            ]
            for tier in cascade.tiers.values():  # vectors the index lacks, before ranking
                if hasattr(tier, "ensure_vectors"):
                    encoded += tier.ensure_vectors(candidates)
            judged = data.qrels.get(qid, {})
            bm25.append(ndcg_at_k([hit.doc_id for hit in hits], judged, k=10))
            offline.append(ndcg_at_k(cascade.rank(texts[qid], candidates).doc_ids, judged, k=10))
            bar.update(task, advance=1)
    live = [board.live_ndcg[r] for r in request_ids]
    rankings = [board.results[r] for r in request_ids]
    return {
        "queries": len(request_ids),
        "pipeline": pipeline,
        "k1": k1,
        "live_ndcg10": round(float(np.mean(live)), 4),
        "offline_ndcg10": round(float(np.mean(offline)), 4),
        "bm25_ndcg10": round(float(np.mean(bm25)), 4),
        "live_minus_offline": round(float(np.mean(live) - np.mean(offline)), 4),
        "live_degraded": sum(r.degraded for r in rankings),
        "live_explored": sum(any("explored" in i.flags for i in r.items) for r in rankings),
        "live_latency_ms": {
            "p50": round(float(np.percentile(board.latencies_ms, 50)), 1),
            "p95": round(float(np.percentile(board.latencies_ms, 95)), 1),
        },
        "offline_documents_encoded": encoded,
        "per_query": [
            {
                "qid": board.qids[r],
                "live": round(board.live_ndcg[r], 4),
                "offline": round(o, 4),
                "bm25": round(b, 4),
                "degraded": board.results[r].degraded_reason,
                "explored": sum("explored" in i.flags for i in board.results[r].items),
            }
            for r, o, b in zip(request_ids, offline, bm25, strict=True)
        ],
    }


def comparison_table(comparison: dict[str, Any]) -> Table:
    """Live against offline against BM25, for the terminal."""
    table = Table(
        "",
        "nDCG@10",
        "note",
        title=f"{comparison['queries']} demo queries, {comparison['pipeline']} over BM25 top "
        f"{comparison['k1']}",
    )
    latency = comparison["live_latency_ms"]
    table.add_row(
        "live (the worker)",
        f"{comparison['live_ndcg10']:.4f}",
        f"p50 {latency['p50']:.0f} ms, p95 {latency['p95']:.0f} ms end to end; "
        f"{comparison['live_degraded']} degraded, {comparison['live_explored']} explored",
    )
    table.add_row(
        "offline (same cascade)",
        f"{comparison['offline_ndcg10']:.4f}",
        f"live - offline {comparison['live_minus_offline']:+.4f}",
    )
    table.add_row("BM25 alone", f"{comparison['bm25_ndcg10']:.4f}", "the first stage")
    return table

"""The demo: a few hundred Wikipedia queries through real workers, shown live.

It fetches what it needs once (the models, the 10,033-article Wikipedia demo corpus), builds
the BM25 index, starts a worker with the retrieve agent enabled, publishes queries to
``queries`` and shows each ranking as it comes back from ``rankings``: the query, the top 3
titles, the time each stage took, and the running nDCG@10 against the corpus's judgments.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from streamrank.models.evaluation.metrics import ndcg_at_k
from streamrank.models.retrieval.corpus import CACHE_DIR
from streamrank.streams.config import Settings
from streamrank.streams.events import Query, Ranking
from streamrank.streams.kafka.topics import create_topics
from streamrank.streams.terminal import RichProgress, learning_curve_table, progress_bar

DEMO_INDEX = CACHE_DIR / "indexes" / "wiki-bm25"


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

    with progress_bar() as bars:
        fetch_models(settings.model_dir, RichProgress(bars))
    wiki = DEFAULT_OUT
    if not (wiki / "corpus.jsonl").exists():
        console.print("fetching the Wikipedia demo corpus (once)")
        fetch_wiki(wiki)
    digest = corpus_sha256(wiki / "corpus.jsonl")
    if recorded_corpus_sha256(DEMO_INDEX) != digest:  # none yet, or of another corpus file
        console.print("building the BM25 index of the demo corpus (once)")
        build_index(wiki / "corpus.jsonl", DEMO_INDEX, corpus_digest=digest)
    queries = list(read_queries(wiki / "queries.jsonl").items.items())
    qrels = read_qrels(wiki / "qrels.txt").items
    titles, texts = {}, {}
    with (wiki / "corpus.jsonl").open() as corpus:
        for line in corpus:
            doc = json.loads(line)
            titles[doc["_id"]] = doc["title"]
            texts[doc["_id"]] = f"{doc['title']}. {doc['text']}"
    return DemoData(wiki / "corpus.jsonl", queries, qrels, titles, texts)


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
    """Run the demo; returns the number of rankings received."""
    data = prepare(settings, console)
    create_topics(settings)
    log_path = Path(".run") / "demo-worker.log"
    env = {
        "STREAMRANK_INDEX_DIR": str(DEMO_INDEX),
        "STREAMRANK_RETRIEVE_METHOD": "bm25",
        "STREAMRANK_RETRIEVE_K": os.environ.get("STREAMRANK_RETRIEVE_K", "30"),
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
        return len(board.ndcgs)
    finally:
        worker.terminate()
        worker.wait(timeout=30)


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
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=0)
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
                query = Query(request_id=request_id, query=text, timestamp=sent_at[request_id])
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
                    board.ndcgs.append(ndcg_at_k(ranked, judged[ranking.request_id], k=10))
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

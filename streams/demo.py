"""The demo: real requests through a real worker, shown live in the terminal.

It starts a worker process, publishes the sample candidate lists with fresh request ids,
and prints each ranking as it comes back from the ``rankings`` topic.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from rich.console import Console
from rich.live import Live
from rich.table import Table

from streams.config import Settings
from streams.events import Candidates, Ranking
from streams.topics import create_topics

SAMPLE = Path(__file__).resolve().parents[1] / "deploy" / "sample" / "candidates.jsonl"


def start_worker(log_path: Path) -> subprocess.Popen:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "worker", "-l", "info"],
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
    )


def wait_ready(worker: subprocess.Popen, log_path: Path, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if "Worker]: Ready" in log_path.read_text(errors="replace"):
            return
        if worker.poll() is not None:
            raise RuntimeError(f"the worker exited; see {log_path}")
        time.sleep(0.2)
    raise RuntimeError(f"the worker was not ready in {timeout_s}s; see {log_path}")


def load_requests(run: str) -> list[Candidates]:
    requests = []
    for line in SAMPLE.read_text().splitlines():
        payload = json.loads(line)
        payload["request_id"] = f"demo-{run}-{payload['request_id']}"
        requests.append(Candidates.model_validate(payload))
    return requests


def results_table(requests: dict[str, Candidates], rankings: dict[str, Ranking]) -> Table:
    table = Table("request", "query", "top 3", "model", "ms", title="rankings, live")
    for request_id, request in requests.items():
        ranking = rankings.get(request_id)
        if ranking is None:
            table.add_row(request_id, request.query, "[dim]waiting...[/]", "", "")
            continue
        top = ", ".join(item.doc_id for item in ranking.items[:3])
        total = f"{ranking.timings_ms.get('total', 0.0):.1f}"
        table.add_row(request_id, request.query, top, ranking.model_version, total)
    return table


def run_demo(settings: Settings, console: Console, timeout_s: float = 120) -> int:
    """Run the demo; returns the number of rankings received."""
    create_topics(settings)
    log_path = Path(".run") / "demo-worker.log"
    console.print(f"starting a worker (log: {log_path})")
    worker = start_worker(log_path)
    try:
        wait_ready(worker, log_path)
        run = uuid.uuid4().hex[:6]
        requests = {request.request_id: request for request in load_requests(run)}
        consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
        topic = settings.topic("rankings")
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(partitions)
        consumer.seek_to_end(*partitions)
        consumer.poll(timeout_ms=0)  # fixes the positions before anything is published
        producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
        for request in requests.values():
            producer.send(
                settings.topic("candidates"),
                key=request.request_id.encode(),
                value=request.to_bytes(),
            )
        producer.flush()
        rankings: dict[str, Ranking] = {}
        deadline = time.monotonic() + timeout_s
        with Live(results_table(requests, rankings), console=console) as live:
            while len(rankings) < len(requests) and time.monotonic() < deadline:
                for batch in consumer.poll(timeout_ms=200).values():
                    for record in batch:
                        ranking = Ranking.model_validate_json(record.value)
                        if ranking.request_id in requests:
                            rankings[ranking.request_id] = ranking
                live.update(results_table(requests, rankings))
        consumer.close()
        return len(rankings)
    finally:
        worker.terminate()
        worker.wait(timeout=30)

"""The click simulator's streaming mode: users through the real broker, a worker and Redis.

Runs ``streamrank simulate`` without ``--offline`` against a worker (cross-encoder over all
candidates, online learning on) on a few TREC DL 2019 queries, and the same simulation
offline, and checks that both learn and agree within noise.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import settings_env

from streams.config import Settings

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "trec-dl-2019"
QUERIES = 6


@pytest.fixture
def few_queries(tmp_path: Path) -> Path:
    if not (DATA / "bm25-top100.json").exists():
        pytest.skip(f"needs the shared TREC DL 2019 data at {DATA} (see ../shared/data/README)")
    qrels = {line.split()[0] for line in (DATA / "qrels.txt").read_text().splitlines() if line}
    entries = json.loads((DATA / "bm25-top100.json").read_text())
    judged = [e for e in entries if e["hits"] and str(e["hits"][0]["qid"]) in qrels]
    path = tmp_path / "few.json"
    path.write_text(json.dumps(judged[:QUERIES]))
    return path


def simulate(env: dict[str, str], candidates: Path, *extra: str) -> dict:
    command = [
        sys.executable,
        "-m",
        "streams.cli",
        "simulate",
        "--candidates",
        str(candidates),
        "--qrels",
        str(DATA / "qrels.txt"),
        "--click-model",
        "navigational",
        "--sessions-per-query",
        "60",
        "--checkpoints",
        "10,30,60",
        "--seed",
        "3",
        "--json",
        *extra,
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_streaming_and_offline_simulations_agree(
    settings: Settings, start_worker, few_queries: Path
) -> None:
    worker_env = {
        "STREAMRANK_PIPELINE": "ce",
        "STREAMRANK_LATENCY_BUDGET_MS": "60000",  # score every pair, as offline does
        "STREAMRANK_ONLINE_LEARNING": "true",
        "STREAMRANK_SESSION_CLOSE_S": "0.5",
        "STREAMRANK_LEARN_TICK_S": "0.2",
        # the offline simulator's defaults: explore within a 0.3 DCG loss over all candidates
        "STREAMRANK_EXPLORATION_MAX_LOSS": "0.3",
        "STREAMRANK_ONLINE_TOP_K": "100",
    }
    worker = start_worker(worker_env)
    streaming = simulate(settings_env(settings) | worker_env, few_queries)
    offline = simulate(settings_env(settings), few_queries, "--offline")
    worker.stop()
    for result in (streaming, offline):
        assert [c["sessions_per_query"] for c in result["checkpoints"]] == [10, 30, 60]
        assert result["final_ndcg@10"] > result["start_ndcg@10"] + 0.05  # both learn
    # Same queries, users and learner: the start agrees closely (the cross-encoder's order,
    # up to int8 batching), the end within the noise of 60 sessions per query.
    assert abs(streaming["start_ndcg@10"] - offline["start_ndcg@10"]) < 0.03
    assert abs(streaming["final_ndcg@10"] - offline["final_ndcg@10"]) < 0.05

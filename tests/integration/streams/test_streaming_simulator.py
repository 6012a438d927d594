"""The click simulator's streaming mode: users through the real broker, a worker and Redis.

This runs ``streamrank simulate`` without ``--offline`` against a worker (cross-encoder over all
candidates, online learning on) on a few TREC DL 2019 queries, and the same simulation
offline, and checks that both learn and agree within noise.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from streamrank.models.evaluation.simulator import SimQuery, dcg
from streamrank.models.learning.online_ranker import ScoredCandidate
from streamrank.streams.config import Settings
from streamrank.streams.streaming_simulator import StreamingSystem
from tests.helpers import SHARED_DATA, settings_env

pytestmark = pytest.mark.integration

DATA = SHARED_DATA / "trec-dl-2019"
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
        "streamrank.streams.cli",
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
        # the offline simulator's bound (its --online-top-k is the worker's default, 50)
        "STREAMRANK_EXPLORATION_MAX_LOSS": "0.3",
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


def test_a_round_goes_out_only_after_the_learner_has_the_previous_one(
    settings: Settings, start_worker
) -> None:
    """The streaming round waits for the learner: no query is served from a stale posterior.

    Sessions close 3 s after their last event, far longer than serving a round takes, so a
    round sent without waiting would find the previous round's sessions still open.
    """
    env = {
        "STREAMRANK_PIPELINE": "first-stage",
        "STREAMRANK_ONLINE_LEARNING": "true",
        "STREAMRANK_SESSION_CLOSE_S": "3",
        "STREAMRANK_LEARN_TICK_S": "0.2",
    }
    start_worker(env)
    queries, texts = [], {}
    for q in range(3):
        docs = [ScoredCandidate(f"q{q}d{i}", first_stage=10.0 - i) for i in range(5)]
        queries.append(SimQuery(f"q{q}", f"query {q}", docs, np.array([3, 0, 0, 0, 0]), dcg([3])))
        texts[f"q{q}"] = (f"query {q}", [f"passage {i}" for i in range(5)])
    system = StreamingSystem(settings.model_copy(update={"session_close_s": 3.0}), texts)
    try:
        for round_ in range(2):
            sessions = [(query, f"r{round_}-{query.qid}") for query in queries]
            rankings = system.serve_all(sessions)
            # everything sent before this round had been learned when it was served
            assert system.sessions_closed() == system.sent_sessions
            for (query, session_id), ranking in zip(sessions, rankings, strict=True):
                assert sorted(ranking) == sorted(c.doc_id for c in query.candidates)
                system.feedback(query, session_id, ranking[:5], [0])
        assert system.sent_sessions == 6
    finally:
        system.close()

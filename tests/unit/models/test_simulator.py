"""The click simulator: its loop and its CLI (the run on TREC DL 2019 is in tests/data)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from streamrank.models.evaluation.simulator import (
    OfflineSystem,
    SimQuery,
    dcg,
    simulate,
)
from streamrank.models.evaluation.start_scores import NamedScorer, cached_scores, read_scores
from streamrank.models.learning.exploration import SafeExplorer
from streamrank.models.learning.online_ranker import OnlineRanker, ScoredCandidate
from streamrank.streams.cli.simulate import simulate_command
from streamrank.streams.config import get_settings

KEYS = {"start_ndcg@10", "checkpoints", "final_ndcg@10", "min_ndcg@10", "propensities"}


def toy_queries(n: int = 4, size: int = 30, seed: int = 0) -> list[SimQuery]:
    """Queries whose relevant documents the starting ranker puts in the middle."""
    rng = np.random.default_rng(seed)
    queries = []
    for q in range(n):
        grades = np.zeros(size, dtype=int)
        grades[rng.choice(np.arange(5, 20), size=4, replace=False)] = [3, 3, 2, 1]
        cands = [ScoredCandidate(f"q{q}d{i}", ce=-i + rng.normal(0, 0.1)) for i in range(size)]
        queries.append(SimQuery(f"q{q}", f"query {q}", cands, grades, dcg([3, 3, 2, 1])))
    return queries


def test_the_learning_curve_rises_on_toy_queries() -> None:
    queries = toy_queries()
    result = simulate(queries, OfflineSystem(), "navigational", 80, [10, 40, 80], seed=0)
    assert set(result) >= KEYS
    assert [c["sessions_per_query"] for c in result["checkpoints"]] == [10, 40, 80]
    assert result["final_ndcg@10"] > result["start_ndcg@10"] + 0.3
    assert result["min_ndcg@10"] == min(
        [result["start_ndcg@10"]] + [c["ndcg@10"] for c in result["checkpoints"]]
    )


def test_the_same_seed_gives_the_same_curve() -> None:
    def run() -> dict:
        system = OfflineSystem(OnlineRanker(), SafeExplorer(seed=5))
        return simulate(toy_queries(), system, "informational", 20, [10, 20], seed=5)

    assert run() == run()


def test_the_online_ranker_orders_only_the_starting_rankers_top_k() -> None:
    queries = toy_queries(n=2, size=30)
    system = OfflineSystem(OnlineRanker(), SafeExplorer(max_loss=1.0, seed=2), top_k=12)
    simulate(queries, system, "navigational", 30, [30], seed=2)
    for query in queries:
        start = [c.doc_id for c in sorted(query.candidates, key=lambda c: -c.ce)]
        for ranking in (system.serve(query, "s"), system.exploit(query)):
            assert sorted(ranking[:12]) == sorted(start[:12])  # re-ordered, never replaced
            assert ranking[12:] == start[12:]  # the rest in the starting ranker's order
        assert system.exploit(query)[:12] != start[:12]  # the clicks did move the top


class Recorder(OfflineSystem):
    """An offline system that logs which verb it was called with, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple[str, str]] = []

    def serve(self, query: SimQuery, session_id: str) -> list[str]:
        self.log.append(("serve", session_id))
        return super().serve(query, session_id)

    def feedback(self, query: SimQuery, session_id: str, shown: list[str], clicked: list[int]):
        self.log.append(("feedback", session_id))
        super().feedback(query, session_id, shown, clicked)


def test_a_round_is_served_before_its_clicks_are_learned_and_after_the_last_rounds() -> None:
    system = Recorder()
    simulate(toy_queries(n=3), system, "navigational", 4, [4], seed=1)
    verbs = [verb for verb, _ in system.log]
    # three users served together, then their three sessions learned, round after round
    assert verbs == (["serve"] * 3 + ["feedback"] * 3) * 4
    rounds = [{sid for _, sid in system.log[i : i + 6]} for i in range(0, 24, 6)]
    assert all(len(r) == 3 for r in rounds)  # each round serves and learns the same sessions


def write_toy_files(tmp_path: Path) -> tuple[Path, Path]:
    entries, qrels = [], []
    for query in toy_queries(n=3, size=20):
        hits = [
            {"qid": query.qid, "docid": c.doc_id, "rank": i + 1, "score": c.ce, "content": "x"}
            for i, c in enumerate(query.candidates)
        ]
        entries.append({"query": query.text, "hits": hits})
        qrels += [
            f"{query.qid} 0 {c.doc_id} {g}"
            for c, g in zip(query.candidates, query.grades, strict=True)
        ]
    candidates, qrels_path = tmp_path / "cands.json", tmp_path / "qrels.txt"
    candidates.write_text(json.dumps(entries))
    qrels_path.write_text("\n".join(qrels) + "\n")
    return candidates, qrels_path


def test_the_cli_prints_json_and_writes_the_plot(tmp_path: Path) -> None:
    candidates, qrels = write_toy_files(tmp_path)
    plot = tmp_path / "curve.png"
    args = ["--candidates", str(candidates), "--qrels", str(qrels), "--click-model", "pbm",
            "--sessions-per-query", "20", "--checkpoints", "5,10,20", "--seed", "3",
            "--start", "first-stage", "--offline", "--json", "--plot", str(plot)]  # fmt: skip
    result = CliRunner().invoke(simulate_command, args)
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert set(out) >= KEYS and len(out["propensities"]) == 10
    assert [c["sessions_per_query"] for c in out["checkpoints"]] == [5, 10, 20]
    assert out["online_top_k"] == get_settings().online_top_k  # a worker's default
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = CliRunner().invoke(simulate_command, args[:-3])
    assert table.exit_code == 0 and "nDCG@10" in table.output


def test_scores_are_computed_once_and_cached(tmp_path: Path) -> None:
    candidates, _ = write_toy_files(tmp_path)
    calls = []

    def scorer() -> NamedScorer:
        def score(query: str, texts: list[str]) -> list[float]:
            calls.append(len(texts))
            return [float(len(t)) for t in texts]

        return NamedScorer("toy/model-v1", score)

    first = cached_scores(candidates, scorer, cache_dir=tmp_path / "cache")
    second = cached_scores(candidates, scorer, cache_dir=tmp_path / "cache")
    assert first == second and len(calls) == 3 and len(first) == 3  # scored once per query
    aligned = tmp_path / "scores.json"
    aligned.write_text(json.dumps({q: {"docs": [], "ce": []} for q in first}))
    with pytest.raises(KeyError):  # a score file that lacks a candidate is an error
        read_scores(aligned, candidates)

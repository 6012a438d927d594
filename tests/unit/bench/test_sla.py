"""The figures bench/sla.py prints, from made-up rankings: percentiles, latency summary,
live quality against qrels, and the request plan (no worker, no broker)."""

from __future__ import annotations

import pytest

from bench.faults import Seen
from bench.sla import (
    Request,
    Timed,
    interleave,
    latency_summary,
    live_quality,
    parse,
    passes_for,
    percentiles,
    request_plan,
)
from streamrank.streams.events import Candidate, Candidates, RankedItem, Ranking


def ranking(request_id: str, doc_ids: list[str], timings: dict[str, float]) -> Ranking:
    items = [RankedItem(doc_id=d, score=1.0, position=i) for i, d in enumerate(doc_ids, 1)]
    return Ranking(request_id=request_id, model_version="v", items=items, timings_ms=timings)


def timed(request_id: str, sent: float, created: float, received: float, docs=("a",)) -> Timed:
    message = ranking(request_id, list(docs), {"lookup": 1.0, "ce": 4.0})
    return Timed(sent, Seen(request_id, 0, received, created, False, list(docs), message))


def test_percentiles_interpolate_and_keep_the_max() -> None:
    figures = percentiles(list(range(1, 101)))
    assert figures == {"p50": 50.5, "p95": 95.0, "p99": 99.0, "max": 100.0}


def test_percentiles_of_nothing_are_none() -> None:
    assert set(percentiles([]).values()) == {None}


def test_latency_summary_splits_rerank_worker_and_end_to_end() -> None:
    run = [timed("r1", 10.0, 10.030, 10.040), timed("r2", 11.0, 11.080, 11.100)]
    summary = latency_summary(run, budget_ms=50)
    assert summary["rerank_ms"]["max"] == pytest.approx(80.0)
    assert summary["e2e_ms"]["p50"] == pytest.approx(70.0)
    assert summary["worker_ms"]["p50"] == pytest.approx(5.0)
    assert summary["over_budget"] == 1


def test_worker_time_counts_the_cascade_total_once() -> None:
    message = ranking("r", ["a"], {"lookup": 1.0, "dense": 3.0, "ce": 4.0, "total": 8.0})
    message.timings_ms["online"] = 2.0
    seen = Seen("r", 0, 0.0, 0.0, False, ["a"], message)
    assert Timed(0.0, seen).worker_ms == pytest.approx(11.0)


def request(collection: str, qid: str, docs: list[str]) -> Request:
    return Request(collection, qid, f"query {qid}", [Candidate(doc_id=d) for d in docs])


def test_live_quality_scores_the_served_order_and_the_first_stage_on_the_same_queries() -> None:
    requests = {"x-0": request("wiki", "q1", ["bad", "good"])}
    run = [timed("x-0", 0.0, 0.01, 0.02, docs=("good", "bad"))]
    figures = live_quality(run, requests, {"wiki": {"q1": {"good": 1}}, "scifact": {}})
    assert figures == {
        "wiki": {"queries": 1, "live_ndcg@10": 1.0, "first_stage_ndcg@10": pytest.approx(0.6309)}
    }


def test_the_plan_cycles_through_the_requests_with_fresh_ids() -> None:
    wiki = [request("wiki", "w1", []), request("wiki", "w2", [])]
    scifact = [request("scifact", "s1", [])]
    mixed = interleave([wiki, scifact])
    assert [r.qid for r in mixed] == ["w1", "s1", "w2"]
    plan = request_plan(mixed, 5, "base")
    assert [rid for rid, _ in plan] == [f"base-{n}" for n in range(5)]
    assert [r.qid for _, r in plan] == ["w1", "s1", "w2", "w1", "s1"]


def test_a_request_message_is_a_valid_candidates_event_stamped_when_made() -> None:
    message = Candidates.model_validate_json(request("wiki", "q1", ["a", "b"]).message("id-1"))
    assert message.request_id == "id-1"
    assert [c.doc_id for c in message.candidates] == ["a", "b"]
    assert message.context == {"collection": "wiki", "qid": "q1"}


def test_each_worker_gets_a_cold_and_a_warm_pass_and_the_tested_one_the_overload() -> None:
    args = parse(["--quick", "--overload", "--rate", "4"])
    mixed = [request("wiki", f"w{n}", []) for n in range(3)]
    baseline = passes_for("baseline", mixed, args)
    tested = passes_for("pipeline", mixed, args)
    assert [p.name for p in baseline] == ["cold", "warm"]
    assert [p.name for p in tested] == ["cold", "warm", "overload"]
    cold, warm, overload = tested
    assert (len(cold.plan), cold.warmup, len(warm.plan)) == (26, 6, 20)
    assert (overload.rate, len(overload.plan)) == (12.0, 60)

"""End to end through the real broker and Redis: candidates in, rankings out."""

from __future__ import annotations

import json

import pytest

from streamrank.streams.config import Settings
from streamrank.streams.events import Candidate, Candidates, Item, Ranking
from streamrank.streams.kafka.deadletter import counter_key
from streamrank.streams.state.connections import redis_client
from streamrank.streams.state.feature_store import FeatureStore
from tests.helpers import consume, json_values, produce

pytestmark = pytest.mark.integration


DOCS = {
    "moscow": "Moscow is the capital and largest city of Russia.",
    "volga": "The Volga is the longest river in Europe; it flows through central Russia.",
    "paris": "Paris is the capital of France.",
    "louvre": "The Louvre is an art museum in Paris.",
}


def request(request_id: str, doc_ids: list[str], query: str = "river in russia") -> Candidates:
    return Candidates(
        request_id=request_id,
        query=query,
        user_id="u1",
        candidates=[
            Candidate(doc_id=doc_id, text=DOCS.get(doc_id), first_stage_score=10.0 - index)
            for index, doc_id in enumerate(doc_ids)
        ],
    )


def rankings_by_request(settings: Settings, count: int) -> dict[str, Ranking]:
    records = consume(settings, "rankings", count)
    return {r.request_id: r for r in (Ranking.model_validate_json(x.value) for x in records)}


def test_candidates_are_reranked_by_the_cross_encoder(settings: Settings, start_worker) -> None:
    # A budget no cold first request on a loaded machine overruns: this test is about the
    # order, not the deadline (the budget's fallback has tests of its own).
    start_worker({"STREAMRANK_LATENCY_BUDGET_MS": "60000"})
    sent = [
        request("r1", ["paris", "moscow", "volga"]),
        request("r2", ["moscow", "louvre", "paris"], query="art museum in paris"),
    ]
    produce(settings, "candidates", [event.to_bytes() for event in sent])

    rankings = rankings_by_request(settings, 2)
    assert rankings["r1"].items[0].doc_id == "volga"
    assert rankings["r2"].items[0].doc_id == "louvre"
    assert [item.position for item in rankings["r1"].items] == [1, 2, 3]
    assert "ce=" in rankings["r1"].model_version
    assert rankings["r1"].timings_ms["ce"] > 0 and not rankings["r1"].degraded
    # the wait before ranking, split: the broker hop in is a part of it
    timings = rankings["r1"].timings_ms
    assert 0 < timings["hop"] <= timings["queue"]
    assert rankings["r2"].user_id == "u1"
    # The impression the learner joins clicks against is in Redis, with positions.
    store = FeatureStore(redis_client(settings), settings)
    impression = store.impression("r1")
    assert impression["items"][0]["doc_id"] == "volga"
    assert impression["model_version"] == rankings["r1"].model_version


def test_missing_texts_come_from_the_feature_store_or_are_flagged(
    settings: Settings, start_worker
) -> None:
    start_worker()
    store = FeatureStore(redis_client(settings), settings)
    store.apply_item(Item(doc_id="volga", text=DOCS["volga"]))
    bare = Candidates(
        request_id="bare",
        query="river in russia",
        candidates=[
            Candidate(doc_id="unknown", first_stage_score=5.0),
            Candidate(doc_id="moscow", text=DOCS["moscow"], first_stage_score=4.0),
            Candidate(doc_id="volga", first_stage_score=3.0),  # text from the store
        ],
    )
    empty = Candidates(request_id="empty", query="anything", candidates=[])
    produce(settings, "candidates", [bare.to_bytes(), empty.to_bytes()])

    rankings = rankings_by_request(settings, 2)
    items = {item.doc_id: item for item in rankings["bare"].items}
    assert items["unknown"].flags == ["no_text"] and items["unknown"].position == 1
    assert items["volga"].flags == [] and items["volga"].position < items["moscow"].position
    assert rankings["empty"].items == []


def test_a_missed_budget_degrades_but_still_answers(settings: Settings, start_worker) -> None:
    start_worker({"STREAMRANK_LATENCY_BUDGET_MS": "0.001", "STREAMRANK_PIPELINE": "ce"})
    produce(settings, "candidates", [request("slow", ["paris", "moscow", "volga"]).to_bytes()])
    ranking = rankings_by_request(settings, 1)["slow"]
    assert ranking.degraded and ranking.degraded_reason
    assert [item.doc_id for item in ranking.items] == ["paris", "moscow", "volga"]


def test_a_worker_without_models_refuses_to_start(settings: Settings, tmp_path) -> None:
    import subprocess
    import sys

    from tests.helpers import REPO, settings_env

    env = settings_env(settings) | {"STREAMRANK_MODEL_DIR": str(tmp_path / "no-models")}
    result = subprocess.run(
        [sys.executable, "-m", "streamrank.streams.cli", "worker"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert str(tmp_path / "no-models") in result.stderr
    assert "streamrank models fetch" in result.stderr


def test_a_replayed_request_is_ranked_once(settings: Settings, start_worker) -> None:
    start_worker()
    duplicate = request("same", ["paris", "volga"]).to_bytes()
    again = request("next", ["moscow"]).to_bytes()
    produce(settings, "candidates", [duplicate, duplicate, again], key=b"k")
    records = consume(settings, "rankings", 2)
    # After both requests were answered, wait a little more for a duplicate that must not come.
    records = consume(settings, "rankings", 2, timeout_s=3, exact=False)
    assert sorted(json.loads(r.value)["request_id"] for r in records) == ["next", "same"]


def test_three_kinds_of_bad_message_go_to_the_dead_letter_topic(
    settings: Settings, start_worker
) -> None:
    start_worker()
    too_many = request("big", [f"d{i}" for i in range(settings.max_candidates + 1)])
    bad = {
        "not-utf8": b"\xff\xfe\xfd",
        "not-json": b'{"request_id": "broken"',
        "contract": json.dumps({"request_id": "no-query", "candidates": []}).encode(),
        "limit": too_many.to_bytes(),
    }
    produce(settings, "candidates", list(bad.values()), key=b"k")
    produce(settings, "candidates", [request("good", ["volga"]).to_bytes()], key=b"k")

    letters = json_values(consume(settings, "deadletter", len(bad)))
    by_reason = {letter["reason"]: letter for letter in letters}
    assert set(by_reason) == set(bad)
    for reason, letter in by_reason.items():
        assert letter["topic"] == settings.topic("candidates")
        assert letter["offset"] is not None and letter["partition"] is not None
        assert letter["error"]
        assert letter["agent"] == "rerank"
        # The original bytes are kept whole, so the message can be fixed and replayed.
        from streamrank.streams.events import DeadLetter

        assert DeadLetter.model_validate(letter).original == bad[reason]
    assert (
        "request_id" in by_reason["contract"]["error"] or "query" in by_reason["contract"]["error"]
    )
    # The worker survived the bad messages: the good one behind them is ranked.
    rankings = json_values(consume(settings, "rankings", 1))
    assert rankings[0]["request_id"] == "good"
    counts = redis_client(settings).hgetall(counter_key(settings))
    topic = settings.topic("candidates")
    assert {k.decode(): int(v) for k, v in counts.items()} == {
        f"{topic}:{reason}": 1 for reason in bad
    }

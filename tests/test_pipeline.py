"""End to end through the real broker and Redis: candidates in, rankings out."""

from __future__ import annotations

import json

import pytest
import redis
from helpers import consume, json_values, produce

from streams.config import Settings
from streams.deadletter import counter_key
from streams.events import Candidate, Candidates, Ranking

pytestmark = pytest.mark.integration


def request(request_id: str, doc_ids: list[str]) -> Candidates:
    return Candidates(
        request_id=request_id,
        query="river in russia",
        user_id="u1",
        candidates=[
            Candidate(doc_id=doc_id, text=f"text of {doc_id}", first_stage_score=10.0 - index)
            for index, doc_id in enumerate(doc_ids)
        ],
    )


def test_candidates_flow_through_a_worker_to_rankings(settings: Settings, start_worker) -> None:
    start_worker()
    sent = [request("r1", ["a", "b", "c"]), request("r2", ["x", "y"])]
    produce(settings, "candidates", [event.to_bytes() for event in sent])

    rankings = {
        ranking.request_id: ranking
        for ranking in (
            Ranking.model_validate_json(r.value) for r in consume(settings, "rankings", 2)
        )
    }
    assert set(rankings) == {"r1", "r2"}
    assert [item.doc_id for item in rankings["r1"].items] == ["a", "b", "c"]
    assert [item.position for item in rankings["r1"].items] == [1, 2, 3]
    assert rankings["r2"].user_id == "u1"


def test_a_replayed_request_is_ranked_once(settings: Settings, start_worker) -> None:
    start_worker()
    duplicate = request("same", ["a", "b"]).to_bytes()
    produce(
        settings, "candidates", [duplicate, duplicate, request("next", ["c"]).to_bytes()], key=b"k"
    )
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
    produce(settings, "candidates", [request("good", ["a"]).to_bytes()], key=b"k")

    letters = json_values(consume(settings, "deadletter", len(bad)))
    by_reason = {letter["reason"]: letter for letter in letters}
    assert set(by_reason) == set(bad)
    for reason, letter in by_reason.items():
        assert letter["topic"] == settings.topic("candidates")
        assert letter["offset"] is not None and letter["partition"] is not None
        assert letter["error"]
        assert letter["agent"] == "rerank"
        # The original bytes are kept whole, so the message can be fixed and replayed.
        from streams.events import DeadLetter

        assert DeadLetter.model_validate(letter).original == bad[reason]
    assert (
        "request_id" in by_reason["contract"]["error"] or "query" in by_reason["contract"]["error"]
    )
    # The worker survived the bad messages: the good one behind them is ranked.
    rankings = json_values(consume(settings, "rankings", 1))
    assert rankings[0]["request_id"] == "good"
    counts = redis.Redis.from_url(settings.redis_url).hgetall(counter_key(settings))
    topic = settings.topic("candidates")
    assert {k.decode(): int(v) for k, v in counts.items()} == {
        f"{topic}:{reason}": 1 for reason in bad
    }

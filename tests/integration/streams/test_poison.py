"""Poison through a real worker: every bad message is dead-lettered with a reason, no agent
crashes, and the good message after each one is processed (ranked, or learned).

Bad messages come from the seeded corpus of :mod:`tests.poison` (every family: random
bytes, null records, NaN and Infinity, 5,000-digit integers, 100,000-deep nesting, cut
messages, oversize values, duplicate candidates), plus a message larger than the worker's
``max_message_bytes``, whose letter must be truncated with the original's hash.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections import Counter

import pytest

from streamrank.streams.config import Settings
from streamrank.streams.events import Candidate, Candidates, ContractError, DeadLetter, decode
from streamrank.streams.state.connections import redis_client
from tests.helpers import consume, wait_for
from tests.integration.streams.test_learn import (
    LEARN_ENV,
    QUERIES,
    candidates,
    due_sessions,
    learner_totals,
    rank_all,
    session_store,
)
from tests.poison import corpus

pytestmark = pytest.mark.integration

BAD_PER_TOPIC = 240
WORKER_MAX_MESSAGE_BYTES = 200_000  # small, so an oversize letter must be truncated
OVERSIZE = b'{"request_id": "huge", "query": "' + b"q" * 250_000 + b'", "candidates": []}'


def refused_corpus(settings: Settings, kind: str, count: int) -> list[bytes | None]:
    """``count`` messages of the corpus that the worker's decoder refuses (a few generated
    ones happen to be valid; they are not poison)."""
    limits = settings.limits()
    refused: list[bytes | None] = []
    for _, raw in corpus(kind, count * 2, seed=7):
        try:
            decode(kind, raw, limits)
        except ContractError:
            refused.append(raw)
        if len(refused) == count:
            return refused
    raise AssertionError(f"the corpus holds fewer than {count} bad {kind} messages")


def send_in_order(settings: Settings, kind: str, messages: list[tuple[bytes, bytes | None]]):
    """Send (key, value) pairs in order (a None value is a null record)."""
    from kafka import KafkaProducer

    producer = KafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        acks="all",
        linger_ms=5,
        max_request_size=2 * 1024 * 1024,
    )
    for message_key, value in messages:
        producer.send(settings.topic(kind), key=message_key, value=value)
    producer.flush()
    producer.close()


def letters_of(settings: Settings, kind: str, count: int) -> list[DeadLetter]:
    topic = settings.topic(kind)
    letters: list[DeadLetter] = []
    deadline = time.monotonic() + 90
    while len(letters) < count and time.monotonic() < deadline:
        records = consume(settings, "deadletter", count, timeout_s=3, exact=False)
        letters = [DeadLetter.model_validate_json(r.value) for r in records]
        letters = [letter for letter in letters if letter.topic == topic]
    return letters


def assert_each_bad_one_has_its_letter(letters: list[DeadLetter], bad: list[bytes | None]) -> None:
    """One letter per bad message, with a reason; originals whole, or hashed when truncated."""
    expected = Counter(hashlib.sha256(raw or b"").hexdigest() for raw in bad)
    found = Counter()
    for letter in letters:
        assert letter.reason and letter.error
        assert letter.partition is not None and letter.offset is not None
        if letter.truncated:
            assert letter.original_sha256 is not None
            found[letter.original_sha256] += 1
        else:
            found[hashlib.sha256(letter.original).hexdigest()] += 1
    assert found == expected


def assert_no_agent_crashed(worker) -> None:
    log = worker.log()
    assert worker.process.poll() is None, log[-3000:]
    assert "MaxRestartsExceeded" not in log
    assert "Traceback" not in log, log[log.index("Traceback") - 500 :][:4000]


def good_request(n: int) -> Candidates:
    return Candidates(
        request_id=f"good-{n}",
        query="river in russia",
        candidates=[
            Candidate(doc_id="volga", text="The Volga flows through Russia.", first_stage_score=2),
            Candidate(doc_id="paris", text="Paris is in France.", first_stage_score=1),
        ],
    )


def test_poison_candidates_are_dead_lettered_and_the_good_ones_ranked(
    settings: Settings, start_worker
) -> None:
    worker = start_worker(
        {"STREAMRANK_MAX_MESSAGE_BYTES": str(WORKER_MAX_MESSAGE_BYTES), "STREAMRANK_PIPELINE": "ce"}
    )
    bad = [*refused_corpus(settings, "candidates", BAD_PER_TOPIC), OVERSIZE]
    messages: list[tuple[bytes, bytes | None]] = []
    for n, raw in enumerate(bad):
        key = f"k{n % 8}".encode()  # the good one follows its bad one on the same partition
        messages += [(key, raw), (key, good_request(n).to_bytes())]
    started = time.monotonic()
    send_in_order(settings, "candidates", messages)

    wanted = {f"good-{n}" for n in range(len(bad))}
    ranked: set[str] = set()
    deadline = time.monotonic() + 120
    while ranked != wanted and time.monotonic() < deadline:
        records = consume(settings, "rankings", len(wanted), timeout_s=3, exact=False)
        ranked = {r.key.decode() for r in records} & wanted
    assert ranked == wanted, f"{len(ranked)} of {len(wanted)} good requests ranked"

    letters = letters_of(settings, "candidates", len(bad))
    assert_each_bad_one_has_its_letter(letters, bad)
    reasons = Counter(letter.reason for letter in letters)
    assert {"not-json", "too-deep", "number-too-large", "non-finite", "limit"} <= set(reasons)
    assert reasons["duplicate-candidate"] > 0
    oversize_hash = hashlib.sha256(OVERSIZE).hexdigest()
    [truncated] = [letter for letter in letters if letter.original_sha256 == oversize_hash]
    assert truncated.truncated and truncated.reason == "limit"
    assert truncated.original_size == len(OVERSIZE)
    assert OVERSIZE.startswith(base64.b64decode(truncated.original_b64))
    assert len(truncated.to_bytes()) <= WORKER_MAX_MESSAGE_BYTES
    counts = redis_client(settings).hgetall(f"{settings.topic_prefix}deadletter:counts")
    assert sum(int(v) for v in counts.values()) == len(bad)
    assert_no_agent_crashed(worker)
    assert time.monotonic() - started < 120


def test_poison_interactions_are_dead_lettered_and_the_good_ones_learned(
    settings: Settings, start_worker
) -> None:
    from streamrank.streams.streaming_simulator import to_interactions

    client = redis_client(settings)
    sessions = session_store(settings)
    worker = start_worker(LEARN_ENV | {"STREAMRANK_SESSION_CLOSE_S": "1"})
    requests = [candidates(f"s{n}", QUERIES[n % len(QUERIES)]) for n in range(24)]
    rankings = rank_all(settings, requests)
    good = []
    for n, request in enumerate(requests):
        shown = [item.doc_id for item in rankings[request.request_id].items[:10]]
        good += to_interactions(request.request_id, shown, [n % 3])
    bad = refused_corpus(settings, "interactions", BAD_PER_TOPIC)
    messages: list[tuple[bytes, bytes | None]] = []
    for n, raw in enumerate(bad):
        event = good[n % len(good)]  # some good ones twice: duplicates by event id
        key = event.request_id.encode()
        messages += [(key, raw), (key, event.to_bytes())]
    messages += [(e.request_id.encode(), e.to_bytes()) for e in good[len(bad) :]]
    send_in_order(settings, "interactions", messages)

    def everything_learned() -> bool:
        counts = sessions.counts()
        return counts.get("interactions") == len(good) and due_sessions(client, settings) == 0

    wait_for(everything_learned, 90, "every good interaction to be learned")
    impressions, clicks = learner_totals(settings, client)
    assert impressions == sum(e.type == "impression" for e in good)
    assert clicks == sum(e.type == "click" for e in good) == len(requests)
    letters = letters_of(settings, "interactions", len(bad))
    assert_each_bad_one_has_its_letter(letters, bad)
    assert {"not-json", "too-deep", "number-too-large", "non-finite"} <= {
        letter.reason for letter in letters
    }
    assert all(letter.agent == "learn" for letter in letters)
    assert_no_agent_crashed(worker)


def test_publish_rejects_poison_lines_with_their_numbers(settings: Settings, tmp_path) -> None:
    import json
    import subprocess
    import sys

    from tests.helpers import REPO, settings_env

    good = {"event_id": "e1", "request_id": "r1", "doc_id": "d1", "type": "dwell", "value": 3}
    lines = [
        json.dumps(good).encode(),  # 1: good
        b"[" * 100_000 + b"]" * 100_000,  # 2
        json.dumps(good)[:-1].encode() + b', "position": ' + b"9" * 5000 + b"}",  # 3
        json.dumps(good | {"value": float("nan")}).encode(),  # 4
        json.dumps(good | {"value": float("inf")}).encode(),  # 5
        b"null",  # 6
        b'{"event_id": "\\ud800", "request_id": "r", "doc_id": "d", "type": "click"}',  # 7
    ]
    file = tmp_path / "poison.jsonl"
    file.write_bytes(b"\n".join(lines) + b"\n")
    result = subprocess.run(
        [sys.executable, "-m", "streamrank.streams.cli", "publish", "interactions", str(file)],
        env=settings_env(settings) | {"COLUMNS": "300"},
        cwd=REPO,
        capture_output=True,
        timeout=120,
    )
    stderr = result.stderr.decode()
    assert result.returncode == 1 and "Traceback" not in stderr, stderr[-3000:]
    for number, reason in [
        (2, "too-deep"),
        (3, "number-too-large"),
        (4, "non-finite"),
        (5, "non-finite"),
        (6, "not-json"),
        (7, "not-utf8"),
    ]:
        assert f"{file}:{number}: rejected: {reason}" in stderr
    assert "published 1 message(s)" in result.stdout.decode()

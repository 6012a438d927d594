"""A Redis that comes back empty is rebuilt from the state journal on the real Kafka.

Each test writes registry and checkpoint state the way the CLI and the workers do (so every
record goes to the test's own ``state`` topic), then deletes every Redis key under the test's
prefix, as a Redis restarted without its files would have lost them (the shared Redis is
never flushed), and checks what ``streamrank state restore``, the registry commands and a
starting worker bring back.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import sys
import time

import pytest
import redis

from streamrank.models.learning.online_ranker import ScoredCandidate
from streamrank.streams.config import Settings
from streamrank.streams.events import Candidate, Candidates, Ranking
from streamrank.streams.online import OnlineServing, online_ranker_for
from streamrank.streams.state.connections import redis_client, registry_for
from streamrank.streams.state.journal import KafkaJournal, read_journal
from streamrank.streams.state.user_sessions import Checkpoints, SessionStore
from tests.helpers import REPO, consume, produce, settings_env

pytestmark = pytest.mark.integration

TOKEN = "restore-operator-token"


@pytest.fixture
def operator(settings: Settings) -> Settings:
    return settings.model_copy(update={"registry_key": "restore-key", "operator_token": TOKEN})


def cli(operator: Settings, *args: str, token: str = TOKEN) -> subprocess.CompletedProcess:
    """The CLI as an operator runs it; ``token=""``: one who holds only the registry key."""
    env = settings_env(operator) | {
        "STREAMRANK_REGISTRY_KEY": operator.registry_key,
        "STREAMRANK_OPERATOR_TOKEN": token,
        "STREAMRANK_TOKEN": token,
        "COLUMNS": "200",
    }
    return subprocess.run(
        [sys.executable, "-m", "streamrank.streams.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )


def empty_redis(settings: Settings, client: redis.Redis) -> None:
    """Delete every key of this test, as a Redis restarted without its files lost them."""
    names = list(client.scan_iter(match=f"{settings.topic_prefix}*"))
    assert names, "the test wrote nothing to Redis"
    client.delete(*names)
    assert not list(client.scan_iter(match=f"{settings.topic_prefix}*"))


def learned_online(operator: Settings, client: redis.Redis) -> OnlineServing:
    """An online ranker that learned one session, so its checkpoint is not the initial state."""
    online = OnlineServing(online_ranker_for(operator, client), max_loss=0.0)
    docs = [f"d{i}" for i in range(5)]
    scored = online.ranker.score_one("q", [ScoredCandidate(d, ce=-i) for i, d in enumerate(docs)])
    online.learn([scored.impression("e1", list(range(5)), clicked=[3])])
    return online


def write_state(operator: Settings, client: redis.Redis) -> tuple[Checkpoints, dict, str]:
    """Two versions (v1 active, v2 a shadow), an audit entry and a learner checkpoint; the
    checkpoints, the saved checkpoint's record and its model state as JSON."""
    registry = registry_for(operator, client)
    first = registry.register(pipeline="first-stage", notes="bm25")
    second = registry.register(pipeline="first-stage", notes="second")
    registry.activate(first.version, reason="first")
    registry.add_shadow(second.version, reason="try it")
    registry.audit({"action": "note", "by": "test", "reason": "before the outage"})
    online = learned_online(operator, client)
    checkpoints = Checkpoints(SessionStore(client, operator), registry)
    saved = checkpoints.save(online)
    return checkpoints, saved, json.dumps(online.state_dict())


def test_state_restore_brings_back_the_registry_and_the_checkpoint(operator: Settings) -> None:
    client = redis_client(operator)
    checkpoints, saved, state = write_state(operator, client)
    registry = registry_for(operator, client)
    audit_before = registry.audit_log()
    empty_redis(operator, client)

    status = cli(operator, "state", "status")
    assert status.returncode == 0, status.stderr
    assert "Redis lacks records the journal holds" in status.stdout
    dry = cli(operator, "state", "restore", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would restore" in dry.stdout
    assert not list(client.scan_iter(match=f"{operator.topic_prefix}*")), "a dry run wrote"

    restored = cli(operator, "state", "restore")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert "0 failed to verify" in restored.stdout
    assert [v.version for v in registry.versions()] == ["v1", "v2"]
    assert registry.active() == "v1" and registry.shadows() == ["v2"]
    assert registry.audit_log() == audit_before
    assert any(entry.get("reason") == "before the outage" for entry in audit_before)
    assert checkpoints.records() == [saved]
    fresh = OnlineServing(online_ranker_for(operator, client), max_loss=0.0)
    loaded = checkpoints.load_latest(fresh)
    assert loaded is not None and loaded["digest"] == saved["digest"]
    assert json.dumps(fresh.state_dict()) == state

    again = cli(operator, "state", "restore")
    assert again.returncode == 0 and "restored 0 record(s)" in again.stdout
    assert "Redis holds every journaled record" in cli(operator, "state", "status").stdout
    registered = cli(operator, "models", "register", "--pipeline", "first-stage")
    assert registered.returncode == 0, registered.stderr
    assert registered.stdout.strip() == "v3"


def test_models_register_on_an_emptied_redis_restores_first_and_continues_the_numbering(
    operator: Settings,
) -> None:
    client = redis_client(operator)
    write_state(operator, client)
    empty_redis(operator, client)
    registered = cli(operator, "models", "register", "--pipeline", "first-stage")
    assert registered.returncode == 0, registered.stderr
    assert registered.stdout.strip() == "v3"
    assert "the registry had lost records in Redis: restored" in registered.stderr
    registry = registry_for(operator, client)
    assert [v.version for v in registry.versions()] == ["v1", "v2", "v3"]
    assert registry.active() == "v1"


def test_a_journal_record_that_does_not_verify_stays_out_of_redis(operator: Settings) -> None:
    client = redis_client(operator)
    write_state(operator, client)
    payload = json.dumps({"version": "v9", "pipeline": "ce"}).encode()
    signature = hmac.new(b"not-the-key", payload, hashlib.sha256).hexdigest()
    forged = {"payload": payload.decode(), "signature": signature}
    KafkaJournal(operator).write("version/v9", json.dumps(forged).encode())
    assert "version/v9" in read_journal(operator)
    empty_redis(operator, client)

    restored = cli(operator, "state", "restore")
    assert restored.returncode == 1
    assert "version/v9: does not verify" in restored.stderr
    assert "1 failed to verify" in restored.stdout
    registry = registry_for(operator, client)
    assert [v.version for v in registry.versions()] == ["v1", "v2"]
    assert cli(operator, "models", "register", "--pipeline", "first-stage").stdout.strip() == "v3"


def test_a_worker_started_on_an_emptied_redis_restores_and_serves_the_active_version(
    operator: Settings, start_worker
) -> None:
    """The CLI of an operator without the token restores what it can verify; the worker,
    which holds the token, restores the pointer record and audit entries signed with it."""
    client = redis_client(operator)
    registry = registry_for(operator, client)
    registry.register(pipeline="first-stage", notes="old")
    registry.register(pipeline="first-stage", notes="promoted")
    registry.activate("v1", reason="first")
    registry.activate("v2", reason="promoted")
    empty_redis(operator, client)

    listed = cli(operator, "models", "list", token="")
    assert listed.returncode == 0, listed.stderr
    assert "pointers: does not verify" in listed.stderr
    assert [v.version for v in registry.versions()] == ["v1", "v2"]
    assert registry.pointers() is None

    worker = start_worker(
        {
            "STREAMRANK_REGISTRY_KEY": operator.registry_key,
            "STREAMRANK_OPERATOR_TOKEN": TOKEN,
            "STREAMRANK_ONLINE_LEARNING": "false",
        }
    )
    assert "Redis had lost registry records: restored 1 pointers, 2 audit" in worker.log()
    assert registry.active() == "v2"
    assert [entry["reason"] for entry in registry.audit_log()] == ["first", "promoted"]
    request = Candidates(
        request_id=f"restored-{time.time_ns()}",
        query="longest river",
        candidates=[
            Candidate(doc_id=f"d{i}", text=f"passage {i}", first_stage_score=float(5 - i))
            for i in range(5)
        ],
    )
    produce(operator, "candidates", [request.to_bytes()])
    ranking = Ranking.model_validate_json(consume(operator, "rankings", 1, timeout_s=60)[0].value)
    assert ranking.request_id == request.request_id
    assert ranking.model_version.startswith("v2:")


def test_backfill_journals_what_was_written_with_the_journal_off(operator: Settings) -> None:
    client = redis_client(operator)
    unjournaled = operator.model_copy(update={"journal_enabled": False})
    checkpoints, saved, _ = write_state(unjournaled, client)
    assert read_journal(operator) == {}

    backfilled = cli(operator, "state", "backfill")
    assert backfilled.returncode == 0, backfilled.stderr
    assert "wrote 9 record(s) to the journal" in backfilled.stdout
    again = cli(operator, "state", "backfill")
    assert "wrote 0 record(s) to the journal" in again.stdout

    empty_redis(operator, client)
    restored = cli(operator, "state", "restore")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    registry = registry_for(operator, client)
    assert [v.version for v in registry.versions()] == ["v1", "v2"]
    assert registry.active() == "v1" and registry.shadows() == ["v2"]
    assert checkpoints.records() == [saved]

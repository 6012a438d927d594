"""Who may switch what the workers serve, tried as an attacker would, against real workers.

The workers hold the deployment's operator token and obey only a pointer record signed with
it. Each bypass the registry once allowed is tried here and must switch nothing:

- a caller who sets STREAMRANK_OPERATOR_TOKEN in their own environment and presents it
  (refused by the CLI; written anyway with ``--replace-unverified``, ignored by the worker);
- a plain Redis ``SET`` of the pointer record (forged, or a genuine older one replayed);
- a worker started while the record is forged serves the newest audited version;
- a rollback to a version that is gone; and every change through the CLI is audited.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid

import pytest

from streamrank.streams.config import Settings
from streamrank.streams.events import Candidate, Candidates, Ranking
from streamrank.streams.state.connections import redis_client, registry_for
from tests.helpers import consume, produce, settings_env

pytestmark = pytest.mark.integration

THEIRS = "the-deployments-operator-token"
MINE = "a-token-i-made-up"
POLL_S = 0.5


@pytest.fixture
def operator(settings: Settings) -> Settings:
    return settings.model_copy(update={"registry_key": "auth-key", "operator_token": THEIRS})


@pytest.fixture
def worker_env(operator: Settings) -> dict[str, str]:
    return {
        "STREAMRANK_REGISTRY_KEY": operator.registry_key,
        "STREAMRANK_OPERATOR_TOKEN": THEIRS,
        "STREAMRANK_CONTROL_POLL_S": str(POLL_S),
        "STREAMRANK_ONLINE_LEARNING": "false",
    }


def cli(operator: Settings, *args: str, token: str, configured: str) -> subprocess.CompletedProcess:
    """The CLI with ``token`` presented and ``configured`` as the caller's own
    STREAMRANK_OPERATOR_TOKEN (which must grant nothing)."""
    env = settings_env(operator) | {
        "STREAMRANK_REGISTRY_KEY": operator.registry_key,
        "STREAMRANK_OPERATOR_TOKEN": configured,
        "STREAMRANK_TOKEN": token,
    }
    return subprocess.run(
        [sys.executable, "-m", "streamrank.streams.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def said(result: subprocess.CompletedProcess) -> str:
    """stderr with the terminal's line wrapping undone."""
    return " ".join(result.stderr.split())


def operator_cli(operator: Settings, *args: str) -> subprocess.CompletedProcess:
    done = cli(operator, *args, token=THEIRS, configured=THEIRS)
    assert done.returncode == 0, done.stderr
    return done


def two_versions(operator: Settings) -> tuple[str, str]:
    """v1 active (the first registered, signed with the deployment's token), v2 registered."""
    v1 = operator_cli(operator, "models", "register", "--pipeline", "first-stage").stdout.strip()
    v2 = operator_cli(operator, "models", "register", "--pipeline", "first-stage").stdout.strip()
    return v1, v2


class Requests:
    """Sends one request at a time and says which version ranked it."""

    def __init__(self, operator: Settings) -> None:
        self.operator = operator
        self.sent = 0

    def served_by(self) -> str:
        request = Candidates(
            request_id=f"auth-{uuid.uuid4().hex[:8]}",
            query="longest river",
            candidates=[Candidate(doc_id=f"d{i}", text=f"passage {i}") for i in range(3)],
        )
        produce(self.operator, "candidates", [request.to_bytes()])
        self.sent += 1
        records = consume(self.operator, "rankings", count=self.sent, timeout_s=90)
        rankings = [Ranking.model_validate_json(record.value) for record in records]
        (ranking,) = [r for r in rankings if r.request_id == request.request_id]
        return ranking.model_version.split(":", 1)[0]


def wait_for_log(worker, text: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in worker.log():
        assert time.monotonic() < deadline, (
            f"no {text!r} in the worker log:\n{worker.log()[-3000:]}"
        )
        time.sleep(0.2)


def several_polls() -> None:
    """Long enough for more than two control polls (the pointer is re-read every POLL_S)."""
    time.sleep(5 * POLL_S)


def test_a_token_the_caller_configured_switches_nothing(
    operator: Settings, worker_env: dict[str, str], start_worker
) -> None:
    v1, v2 = two_versions(operator)
    worker = start_worker(worker_env)
    requests = Requests(operator)
    assert requests.served_by() == v1

    # The caller configures and presents a token of their own: the CLI refuses.
    refused = cli(
        operator, "promote", v2, "--force", "--reason", "mine", token=MINE, configured=MINE
    )
    assert refused.returncode == 2
    assert "your token does not match the one this deployment's pointers are signed with" in (
        said(refused)
    )
    for args in (["rollback", "--reason", "x"], ["shadow", "add", v2], ["shadow", "remove", v2]):
        attempt = cli(operator, *args, token=MINE, configured=MINE)
        assert attempt.returncode == 2 and "your token does not match" in said(attempt), args

    # Written all the same (the CLI's check skipped): the worker verifies and ignores it.
    written = cli(
        operator,
        "promote",
        v2,
        "--force",
        "--replace-unverified",
        "--reason",
        "mine",
        token=MINE,
        configured=MINE,
    )
    assert written.returncode == 0, written.stderr
    wait_for_log(worker, "does not verify under this operator key")
    several_polls()
    assert requests.served_by() == v1
    assert "now serving version v2" not in worker.log()
    assert worker.process.poll() is None

    # The holder of the deployment's token takes the pointer back; the worker obeys that.
    operator_cli(
        operator, "promote", v2, "--force", "--replace-unverified", "--reason", "take back"
    )
    wait_for_log(worker, "now serving version v2")
    assert requests.served_by() == v2


def test_a_plain_redis_write_of_the_pointers_switches_nothing(
    operator: Settings, worker_env: dict[str, str], start_worker
) -> None:
    v1, v2 = two_versions(operator)
    client = redis_client(operator)
    key = registry_for(operator, client).record_key("pointers")
    first_record = client.get(key)  # genuine: v1 active, serial 1
    worker = start_worker(worker_env)
    requests = Requests(operator)

    # A forged record: the genuine one with v2 written in, signature kept.
    envelope = json.loads(first_record)
    envelope["record"] = envelope["record"].replace(f'"active": "{v1}"', f'"active": "{v2}"')
    client.set(key, json.dumps(envelope))
    wait_for_log(worker, "does not verify under this operator key")
    several_polls()
    assert requests.served_by() == v1

    # A genuine promotion switches it; replaying the older genuine record does not undo it.
    operator_cli(operator, "promote", v2, "--force", "--replace-unverified", "--reason", "fix")
    wait_for_log(worker, "now serving version v2")
    client.set(key, first_record)
    wait_for_log(worker, "a replayed record")
    several_polls()
    assert requests.served_by() == v2
    assert "now serving version v1" not in worker.log()


def test_a_worker_started_on_a_forged_pointer_serves_the_audited_version(
    operator: Settings, worker_env: dict[str, str], start_worker
) -> None:
    v1, v2 = two_versions(operator)
    operator_cli(operator, "promote", v2, "--force", "--reason", "hotfix")
    client = redis_client(operator)
    registry = registry_for(operator, client)
    forged = registry.with_operator_key(MINE.encode())
    client.delete(registry.record_key("pointers"))
    forged.activate(v1)  # a record signed with a token the workers do not hold
    worker = start_worker(worker_env)
    assert "REFUSING the registry's pointer record; serving v2" in worker.log()
    assert Requests(operator).served_by() == v2


def test_rollback_refuses_a_version_that_is_gone_and_every_change_is_audited(
    operator: Settings,
) -> None:
    v1, v2 = two_versions(operator)
    v3 = operator_cli(operator, "models", "register", "--pipeline", "first-stage").stdout.strip()
    nothing_before = cli(operator, "rollback", "--reason", "x", token=THEIRS, configured=THEIRS)
    assert nothing_before.returncode == 2 and "no earlier active version" in said(nothing_before)
    operator_cli(operator, "shadow", "add", v2, "--reason", "try it")
    operator_cli(operator, "promote", v2, "--force", "--reason", "hotfix")
    operator_cli(operator, "shadow", "add", v3)
    operator_cli(operator, "shadow", "remove", v3, "--reason", "not needed")
    operator_cli(operator, "rollback", "--reason", "canary failed")
    operator_cli(operator, "promote", v3, "--force", "--reason", "again")

    client = redis_client(operator)
    registry = registry_for(operator, client)
    client.hdel(registry.record_key("versions"), v1)  # the version to roll back to is gone
    gone = cli(operator, "rollback", "--reason", "x", token=THEIRS, configured=THEIRS)
    assert gone.returncode == 2 and f"version {v1} is not in the registry" in said(gone)
    assert registry.active() == v3

    audit = registry.audit_log()
    assert [(e["action"], e["version"], e["replaced"]) for e in audit] == [
        ("activate", v1, None),
        ("shadow-add", v2, None),
        ("promote", v2, v1),
        ("shadow-add", v3, None),
        ("shadow-remove", v3, None),
        ("rollback", v1, v2),
        ("promote", v3, v1),
    ]
    assert all(entry["by"] and entry["at"] for entry in audit)
    reasons = [entry["reason"] for entry in audit]
    assert reasons[1:] == ["try it", "hotfix", "", "not needed", "canary failed", "again"]
    assert [entry["serial"] for entry in audit] == list(range(1, 8))


def test_the_dashboard_shows_a_forged_pointer_as_refused(operator: Settings) -> None:
    from streamrank.streams.web import dashboard_data

    v1, v2 = two_versions(operator)
    client = redis_client(operator)
    assert dashboard_data(operator, client)["active"] == v1
    key = registry_for(operator, client).record_key("pointers")
    envelope = json.loads(client.get(key))
    envelope["record"] = envelope["record"].replace(f'"active": "{v1}"', f'"active": "{v2}"')
    client.set(key, json.dumps(envelope))
    data = dashboard_data(operator, client)
    assert data["active"] is None and "does not verify" in data["pointer_error"]

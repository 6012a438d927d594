"""``streamrank services``: which deploy script runs with which arguments, what counts as a
failure, and the environment printed for the clusters (the scripts themselves are replaced by
a recorder: starting services is tests/integration/test_deploy.py's business)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from streamrank.streams.cli import services as services_module
from streamrank.streams.cli.services import cluster_exports, services


class Scripts:
    """Stands in for ``subprocess.run``: records each command, answers with a set status."""

    def __init__(self, returncodes: dict[str, int] | None = None) -> None:
        self.returncodes = returncodes or {}
        self.calls: list[list[str]] = []

    def __call__(self, command: list[str], check: bool) -> subprocess.CompletedProcess:
        self.calls.append(command)
        service = Path(command[1]).stem
        return subprocess.CompletedProcess(command, self.returncodes.get(service, 0))

    def invocations(self) -> list[tuple[str, ...]]:
        """Each call as (script name, arguments...)."""
        return [(Path(call[1]).name, *call[2:]) for call in self.calls]


@pytest.fixture
def scripts(monkeypatch: pytest.MonkeyPatch) -> Scripts:
    recorder = Scripts()
    monkeypatch.setattr(services_module.subprocess, "run", recorder)
    monkeypatch.delenv("STREAMRANK_KAFKA_CLUSTER_PORT", raising=False)
    monkeypatch.delenv("STREAMRANK_REDIS_CLUSTER_PORT", raising=False)
    return recorder


def test_up_starts_kafka_then_redis_as_single_nodes(scripts: Scripts) -> None:
    result = CliRunner().invoke(services, ["up"])
    assert result.exit_code == 0, result.output
    assert scripts.invocations() == [("kafka.sh", "start"), ("redis.sh", "start")]
    assert "STREAMRANK_KAFKA_BOOTSTRAP" not in result.output


def test_cluster_passes_the_flag_to_both_scripts_and_prints_the_environment(
    scripts: Scripts,
) -> None:
    result = CliRunner().invoke(services, ["up", "--cluster"])
    assert result.exit_code == 0, result.output
    assert scripts.invocations() == [
        ("kafka.sh", "start", "--cluster"),
        ("redis.sh", "start", "--cluster"),
    ]
    assert (
        "export STREAMRANK_KAFKA_BOOTSTRAP=127.0.0.1:9192,127.0.0.1:9193,127.0.0.1:9194 "
        "STREAMRANK_REDIS_URL=redis://127.0.0.1:7000/0 STREAMRANK_REDIS_CLUSTER=true "
        "STREAMRANK_REDIS_CLUSTER_NODES=127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003,"
        "127.0.0.1:7004,127.0.0.1:7005"
    ) in result.output


def test_down_stops_redis_first_and_prints_no_environment(scripts: Scripts) -> None:
    result = CliRunner().invoke(services, ["down", "--cluster"])
    assert result.exit_code == 0, result.output
    assert scripts.invocations() == [
        ("redis.sh", "stop", "--cluster"),
        ("kafka.sh", "stop", "--cluster"),
    ]
    assert "export" not in result.output


def test_status_of_a_stopped_service_is_not_a_failure_but_up_is(scripts: Scripts) -> None:
    scripts.returncodes["redis"] = 3  # the scripts' "not running"
    assert CliRunner().invoke(services, ["status", "--cluster"]).exit_code == 0
    assert CliRunner().invoke(services, ["up", "--cluster"]).exit_code == 1


def test_a_script_that_fails_fails_the_command_after_running_the_other(scripts: Scripts) -> None:
    scripts.returncodes["kafka"] = 1
    result = CliRunner().invoke(services, ["down"])
    assert result.exit_code == 1
    assert [call[0] for call in scripts.invocations()] == ["redis.sh", "kafka.sh"]


def test_an_unknown_action_is_refused_before_any_script_runs(scripts: Scripts) -> None:
    result = CliRunner().invoke(services, ["restart", "--cluster"])
    assert result.exit_code == 2
    assert scripts.calls == []


def test_the_printed_ports_follow_the_scripts_port_variables() -> None:
    exports = cluster_exports(
        {"STREAMRANK_KAFKA_CLUSTER_PORT": "19192", "STREAMRANK_REDIS_CLUSTER_PORT": "17000"}
    )
    assert "STREAMRANK_KAFKA_BOOTSTRAP=127.0.0.1:19192,127.0.0.1:19193,127.0.0.1:19194 " in exports
    assert "STREAMRANK_REDIS_URL=redis://127.0.0.1:17000/0 " in exports

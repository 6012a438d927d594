"""deploy/kafka.sh and deploy/redis.sh: a second start is a no-op, a stale data dir is survived.

These start their own broker and Redis on spare ports in a temporary run directory, so they
do not disturb the services the other tests use.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers import REPO

pytestmark = pytest.mark.integration

KAFKA_PORT, CONTROLLER_PORT, REDIS_PORT = 19092, 19093, 16379


def script(name: str, action: str, run_dir: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ) | {
        "STREAMRANK_RUN_DIR": str(run_dir),
        "STREAMRANK_KAFKA_PORT": str(KAFKA_PORT),
        "STREAMRANK_KAFKA_CONTROLLER_PORT": str(CONTROLLER_PORT),
        "STREAMRANK_REDIS_PORT": str(REDIS_PORT),
    }
    return subprocess.run(
        ["bash", str(REPO / "deploy" / f"{name}.sh"), action],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def broker_pids(run_dir: Path) -> list[str]:
    listing = subprocess.run(["pgrep", "-f", str(run_dir)], capture_output=True, text=True)
    return listing.stdout.split()


@pytest.fixture
def kafka_run_dir(tmp_path: Path):
    yield tmp_path
    script("kafka", "stop", tmp_path)


def test_kafka_starts_once_and_answers(kafka_run_dir: Path) -> None:
    from kafka import KafkaAdminClient

    first = script("kafka", "start", kafka_run_dir)
    assert first.returncode == 0, first.stderr
    assert "started on 127.0.0.1:19092" in first.stderr
    second = script("kafka", "start", kafka_run_dir)
    assert second.returncode == 0 and "already running" in second.stderr
    assert len(broker_pids(kafka_run_dir)) == 1
    admin = KafkaAdminClient(bootstrap_servers=f"127.0.0.1:{KAFKA_PORT}")
    assert isinstance(admin.list_topics(), list)
    admin.close()
    stopped = script("kafka", "stop", kafka_run_dir)
    assert stopped.returncode == 0 and "stopped" in stopped.stderr
    assert broker_pids(kafka_run_dir) == []
    assert script("kafka", "status", kafka_run_dir).returncode == 3


def test_kafka_survives_a_stale_data_directory(kafka_run_dir: Path) -> None:
    data = kafka_run_dir / "kafka" / "data"
    data.mkdir(parents=True)
    (data / "meta.properties").write_text("cluster.id=some-other-cluster\nnode.id=7\nversion=1\n")
    (kafka_run_dir / "kafka" / "kafka.pid").write_text("999999\n")  # a pid that is long gone
    started = script("kafka", "start", kafka_run_dir)
    assert started.returncode == 0, started.stderr + started.stdout
    assert "stale data directory" in started.stderr
    assert "some-other-cluster" not in (data / "meta.properties").read_text()


def test_redis_starts_once_and_stops(tmp_path: Path) -> None:
    try:
        assert script("redis", "start", tmp_path).returncode == 0
        again = script("redis", "start", tmp_path)
        assert again.returncode == 0 and "already running" in again.stderr
        assert script("redis", "status", tmp_path).returncode == 0
    finally:
        assert script("redis", "stop", tmp_path).returncode == 0
    assert script("redis", "status", tmp_path).returncode == 3

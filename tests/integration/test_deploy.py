"""deploy/kafka.sh and deploy/redis.sh: a second start is a no-op, a stale data dir is survived,
Redis keeps its keys across a stop and a kill -9.

These start their own broker and Redis on ports that are free at run time, in a temporary run
directory, so they neither disturb the services the other tests use nor collide with another
process that holds some fixed "spare" port.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import redis

from tests.helpers import REPO, free_port

pytestmark = pytest.mark.integration


KAFKA_PORT, CONTROLLER_PORT, REDIS_PORT = free_port(), free_port(), free_port()


def script(name: str, action: str, run_dir: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ) | {
        "STREAMRANK_RUN_DIR": str(run_dir),
        "STREAMRANK_KAFKA_PORT": str(KAFKA_PORT),
        "STREAMRANK_KAFKA_CONTROLLER_PORT": str(CONTROLLER_PORT),
        "STREAMRANK_REDIS_PORT": str(REDIS_PORT),
        "STREAMRANK_REDIS_MAXMEMORY": "64mb",
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
    assert f"started on 127.0.0.1:{KAFKA_PORT}" in first.stderr
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


@pytest.fixture
def redis_run_dir(tmp_path: Path):
    started = script("redis", "start", tmp_path)
    assert started.returncode == 0, started.stderr
    yield tmp_path
    script("redis", "stop", tmp_path)


def local_redis() -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=REDIS_PORT, socket_timeout=5)


def test_redis_runs_with_aof_and_bounded_memory(redis_run_dir: Path) -> None:
    config = local_redis().config_get("*")
    assert config["appendonly"] == "yes" and config["appendfsync"] == "everysec"
    assert config["maxmemory"] == str(64 * 1024 * 1024)
    assert config["maxmemory-policy"] == "noeviction"
    assert (redis_run_dir / "redis" / "appendonlydir").is_dir()


def test_redis_keeps_its_keys_across_a_stop_and_start(redis_run_dir: Path) -> None:
    local_redis().mset({f"durable:{n}": n for n in range(100)})
    assert script("redis", "stop", redis_run_dir).returncode == 0
    assert script("redis", "start", redis_run_dir).returncode == 0
    assert local_redis().mget([f"durable:{n}" for n in range(100)]) == [
        str(n).encode() for n in range(100)
    ]


def test_redis_keeps_a_write_older_than_a_second_through_kill_9(redis_run_dir: Path) -> None:
    local_redis().set("survives", "kill -9")
    time.sleep(1.5)  # appendfsync everysec: the write is on disk after at most about a second
    pid = int((redis_run_dir / "redis" / "redis.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while script("redis", "status", redis_run_dir).returncode == 0:
        assert time.monotonic() < deadline, "redis-server still answers after kill -9"
        time.sleep(0.1)
    assert script("redis", "start", redis_run_dir).returncode == 0
    assert local_redis().get("survives") == b"kill -9"

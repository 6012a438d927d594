"""Fixtures that find the real Kafka broker and Redis, and isolate each test on them.

Services are found in this order:

1. ``STREAMRANK_KAFKA_BOOTSTRAP`` and ``STREAMRANK_REDIS_URL`` in the environment
   (``make test`` sets both after ``streamrank services up``);
2. testcontainers, when a Docker engine answers;
3. otherwise the test fails with a message that says how to start them.

Each test that needs them gets its own topic prefix, consumer-group id and Redis key prefix,
so tests never see each other's messages, and everything is deleted afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from streamrank.streams.config import Settings
from tests.helpers import REPO, isolated_settings, settings_env

HOW_TO_START = (
    "start the services with `streamrank services up` (or `make services`) and export "
    "STREAMRANK_KAFKA_BOOTSTRAP=127.0.0.1:9092 STREAMRANK_REDIS_URL=redis://127.0.0.1:6379/0; "
    "`make test` does all of this"
)


@dataclass(frozen=True)
class Endpoints:
    kafka_bootstrap: str
    redis_url: str


def docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def endpoints() -> Iterator[Endpoints]:
    bootstrap = os.environ.get("STREAMRANK_KAFKA_BOOTSTRAP")
    redis_url = os.environ.get("STREAMRANK_REDIS_URL")
    if bootstrap and redis_url:
        check_reachable(bootstrap, redis_url)
        yield Endpoints(bootstrap, redis_url)
        return
    if docker_answers():
        yield from containers()
        return
    pytest.fail(f"no Kafka/Redis configured and no Docker engine: {HOW_TO_START}")


def containers() -> Iterator[Endpoints]:
    from testcontainers.kafka import KafkaContainer
    from testcontainers.redis import RedisContainer

    with KafkaContainer().with_kraft() as kafka, RedisContainer() as redis_container:
        host = redis_container.get_container_host_ip()
        port = redis_container.get_exposed_port(6379)
        yield Endpoints(kafka.get_bootstrap_server(), f"redis://{host}:{port}/0")


def check_reachable(bootstrap: str, redis_url: str) -> None:
    from kafka import KafkaAdminClient

    try:
        KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000).close()
    except Exception as error:
        pytest.fail(f"Kafka at {bootstrap} does not answer ({error}): {HOW_TO_START}")
    try:
        redis.Redis.from_url(redis_url, socket_connect_timeout=3).ping()
    except Exception as error:
        pytest.fail(f"Redis at {redis_url} does not answer ({error}): {HOW_TO_START}")


@pytest.fixture
def settings(endpoints: Endpoints) -> Iterator[Settings]:
    """Settings with a fresh topic prefix and app id; topics created, deleted afterwards."""
    with isolated_settings(endpoints.kafka_bootstrap, endpoints.redis_url, partitions=2) as made:
        yield made


class Worker:
    """A real ``streamrank worker`` process, logging to a file."""

    def __init__(self, settings: Settings, log_path: Path, extra_env: dict[str, str]) -> None:
        self.log_path = log_path
        self.log_file = log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "streamrank.streams.cli", "worker", "-l", "info"],
            env=settings_env(settings) | extra_env,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if "Worker]: Ready" in self.log():
                return
            if self.process.poll() is not None:
                raise AssertionError(f"worker exited early:\n{self.log()[-3000:]}")
            time.sleep(0.2)
        raise AssertionError(f"worker not ready in {timeout_s}s:\n{self.log()[-3000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log_file.close()


@pytest.fixture
def start_worker(settings: Settings, tmp_path: Path) -> Iterator:
    """Start workers on demand: ``start_worker()``; all are stopped after the test."""
    workers: list[Worker] = []

    def start(extra_env: dict[str, str] | None = None, ready: bool = True) -> Worker:
        # Exploration is off unless a test asks for it: tests assert the orders they serve.
        env = {"STREAMRANK_EXPLORATION_MAX_LOSS": "0"} | (extra_env or {})
        worker = Worker(settings, tmp_path / f"worker-{len(workers)}.log", env)
        workers.append(worker)
        if ready:
            worker.wait_ready()
        return worker

    yield start
    for worker in workers:
        worker.stop()

"""Failover through real faults: a broker that restarts under load, a worker killed with
SIGKILL, and a worker started before its broker.

Both tests run on a PRIVATE Kafka broker (``deploy/kafka.sh`` on free ports with its own run
directory), which the first test stops and starts again; the shared broker is never touched.
Redis is the shared one, under the test's own key prefix. The ``settings`` fixture of the
integration conftest is replaced here by one on the private broker, so ``start_worker``
starts workers against it.

No timings are asserted (they belong in ``bench/faults.py``): only that nothing is lost or
ranked twice, that rankings come again, and that an outage costs a bounded number of log lines.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamrank.streams.config import Settings
from streamrank.streams.events import Ranking
from streamrank.streams.state.connections import redis_client
from tests.helpers import REPO, consume, free_port
from tests.integration.streams.test_learn import candidates

pytestmark = pytest.mark.integration

OUTAGE_S = 15
MAX_OUTAGE_LOG_LINES = 1000


class PrivateKafka:
    """A Kafka broker of this test alone, started and stopped with ``deploy/kafka.sh``."""

    def __init__(self, run_dir: Path) -> None:
        self.port = free_port()
        self.env = os.environ | {
            "STREAMRANK_KAFKA_PORT": str(self.port),
            "STREAMRANK_KAFKA_CONTROLLER_PORT": str(free_port()),
            "STREAMRANK_RUN_DIR": str(run_dir),
        }

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def run(self, action: str) -> None:
        result = subprocess.run(
            ["bash", str(REPO / "deploy" / "kafka.sh"), action],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert result.returncode == 0, f"kafka.sh {action}: {result.stderr[-2000:]}"


@pytest.fixture
def private_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateKafka]:
    kafka = PrivateKafka(tmp_path_factory.mktemp("kafka-run"))
    kafka.run("start")
    yield kafka
    kafka.run("stop")


@pytest.fixture
def settings(endpoints, private_kafka: PrivateKafka) -> Iterator[Settings]:
    """The conftest's isolated settings, on the private broker (topics die with it)."""
    from streamrank.streams.kafka.topics import create_topics

    run = uuid.uuid4().hex[:10]
    isolated = Settings(
        kafka_bootstrap=private_kafka.bootstrap,
        redis_url=endpoints.redis_url,
        topic_prefix=f"test-{run}.",
        app_id=f"streamrank-test-{run}",
        partitions=4,
    )
    create_topics(isolated)
    yield isolated
    client = redis_client(isolated)
    for name in client.scan_iter(match=f"{isolated.topic_prefix}*"):
        client.delete(name)


def patient_producer(settings: Settings):
    """A producer that buffers through a broker outage instead of failing its sends."""
    from kafka import KafkaProducer

    return KafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        acks="all",
        retries=2_147_483_647,
        delivery_timeout_ms=300_000,
        max_block_ms=300_000,
        reconnect_backoff_max_ms=1000,
    )


class Traffic:
    """Requests at a few per second from a thread, until stopped; remembers what it sent."""

    def __init__(self, settings: Settings, per_second: float = 4.0) -> None:
        self.settings = settings
        self.pause_s = 1 / per_second
        self.sent: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def _run(self) -> None:
        producer = patient_producer(self.settings)
        futures = []
        while not self._stop.is_set():
            request_id = f"req-{len(self.sent)}"
            request = candidates(request_id, "river in russia")
            futures.append(
                producer.send(
                    self.settings.topic("candidates"),
                    key=request_id.encode(),
                    value=request.to_bytes(),
                )
            )
            self.sent.append(request_id)
            time.sleep(self.pause_s)
        producer.flush()
        for future in futures:
            future.get(timeout=120)  # every request reached the broker
        producer.close()

    def stop(self) -> list[str]:
        self._stop.set()
        self._thread.join()
        return self.sent


def rankings_of(settings: Settings) -> Counter:
    """How often each request id was ranked, from the whole rankings topic."""
    records = consume(settings, "rankings", 0, timeout_s=3, exact=False)
    return Counter(Ranking.model_validate_json(r.value).request_id for r in records)


def wait_until_ranked(settings: Settings, wanted: set[str], timeout_s: float) -> Counter:
    deadline = time.monotonic() + timeout_s
    ranked = rankings_of(settings)
    while not wanted <= set(ranked) and time.monotonic() < deadline:
        ranked = rankings_of(settings)
    missing = wanted - set(ranked)
    assert not missing, f"{len(missing)} of {len(wanted)} requests never ranked"
    return ranked


def test_a_broker_restart_loses_nothing_and_logs_a_bounded_number_of_lines(
    settings: Settings, private_kafka: PrivateKafka, start_worker
) -> None:
    worker = start_worker()
    traffic = Traffic(settings)
    wait_until_ranked(settings, {"req-0", "req-4"}, 120)

    lines_before = worker.log().count("\n")
    private_kafka.run("stop")
    time.sleep(OUTAGE_S)
    private_kafka.run("start")
    back = len(traffic.sent)
    wait_until_ranked(settings, {f"req-{back + 2}"}, 180)  # sent after the broker came back
    outage_log = worker.log().splitlines()[lines_before:]

    sent = traffic.stop()
    ranked = wait_until_ranked(settings, set(sent), 180)
    assert {request_id: n for request_id, n in ranked.items() if n > 1} == {}
    assert worker.process.poll() is None
    assert len(outage_log) < MAX_OUTAGE_LOG_LINES, "\n".join(outage_log[-200:])
    assert any("suppressed" in line for line in outage_log), "\n".join(outage_log[-200:])


def test_the_partitions_of_a_killed_worker_are_served_by_the_other(
    settings: Settings, start_worker
) -> None:
    from kafka import KafkaProducer

    victim, survivor = start_worker(), start_worker()
    warm = {f"warm-{n}" for n in range(12)}
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    for request_id in warm:
        producer.send(
            settings.topic("candidates"),
            key=request_id.encode(),
            value=candidates(request_id, "capital of france").to_bytes(),
        )
    producer.flush()
    wait_until_ranked(settings, warm, 120)

    victim.process.kill()  # SIGKILL: no goodbye to the group
    victim.process.wait()
    after = set()
    for partition in range(settings.partitions):  # one request on every partition
        request_id = f"after-kill-{partition}"
        after.add(request_id)
        producer.send(
            settings.topic("candidates"),
            key=request_id.encode(),
            value=candidates(request_id, "highest mountain").to_bytes(),
            partition=partition,
        )
    producer.flush()
    producer.close()
    ranked = wait_until_ranked(settings, after, 120)
    assert all(ranked[request_id] == 1 for request_id in after | warm)
    assert survivor.process.poll() is None


def test_a_worker_started_before_the_broker_waits_for_it_and_then_ranks(
    settings: Settings, private_kafka: PrivateKafka, start_worker
) -> None:
    private_kafka.run("stop")
    worker = start_worker(ready=False)
    deadline = time.monotonic() + 120
    while "trying again in" not in worker.log():  # it asked for the cluster's size and waits
        assert worker.process.poll() is None, worker.log()[-3000:]
        assert time.monotonic() < deadline, worker.log()[-3000:]
        time.sleep(0.5)
    private_kafka.run("start")
    worker.wait_ready(180)
    traffic = Traffic(settings)
    wait_until_ranked(settings, {"req-0", "req-2"}, 120)
    sent = traffic.stop()
    assert set(wait_until_ranked(settings, set(sent), 120)) >= set(sent)

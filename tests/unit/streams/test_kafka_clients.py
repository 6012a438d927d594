"""Every producer writes with acks=all and idempotence: the shared options
(streams/kafka/clients.py), the Faust app's producer, and each KafkaProducer in the runtime."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path
from typing import Any

import pytest

from streamrank.streams import app as app_module
from streamrank.streams.config import Settings
from streamrank.streams.kafka import replication
from streamrank.streams.kafka.clients import DURABLE_PRODUCER, producer_options
from tests.helpers import REPO


def test_producer_options_are_durable_and_carry_the_cluster_and_credentials() -> None:
    settings = Settings(
        kafka_bootstrap="127.0.0.1:9192,127.0.0.1:9193",
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_username="streamrank",
        kafka_sasl_password="secret",
    )
    options = producer_options(settings, linger_ms=5, client_id="journal")
    assert options["acks"] == "all" and options["enable_idempotence"] is True
    assert options["bootstrap_servers"] == "127.0.0.1:9192,127.0.0.1:9193"
    assert options["max_request_size"] == settings.max_message_bytes
    assert options["sasl_plain_username"] == "streamrank"
    assert options["linger_ms"] == 5 and options["client_id"] == "journal"


def test_a_caller_may_not_weaken_durability() -> None:
    with pytest.raises(ValueError, match="acks"):
        producer_options(Settings(), acks=1)
    with pytest.raises(ValueError, match="enable_idempotence"):
        producer_options(Settings(), enable_idempotence=False)


def test_kafka_python_accepts_the_options() -> None:
    """The options build a real KafkaProducer's configuration (it connects lazily, so no
    broker is needed until the first send; ``bootstrap_timeout_ms`` only bounds that)."""
    from kafka import KafkaProducer

    options = producer_options(Settings(kafka_bootstrap="127.0.0.1:1"), linger_ms=5)
    config = {**KafkaProducer.DEFAULT_CONFIG, **options}
    assert set(options) <= set(KafkaProducer.DEFAULT_CONFIG)
    assert config["acks"] == "all" and config["enable_idempotence"]


def test_the_faust_apps_producer_asks_for_acks_all_and_idempotence(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: dict[str, Any] = {}

    class Recorder:
        def __init__(self, **kwargs: Any) -> None:
            made.update(kwargs)

    monkeypatch.setattr(app_module.DurableProducer, "_producer_type", Recorder)
    app = app_module.create_app(Settings(replication_factor=1))
    assert isinstance(app.producer, app_module.DurableProducer)
    app.producer._new_producer()
    assert made["acks"] == DURABLE_PRODUCER["acks"] == "all"
    assert made["enable_idempotence"] is True


def test_the_faust_app_takes_its_replication_from_the_cluster(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class ThreeBrokers:
        def describe_cluster(self) -> dict:
            return {"brokers": [{"broker_id": n} for n in (1, 2, 3)]}

        def close(self) -> None:
            pass

    monkeypatch.setattr(replication, "admin_client", lambda *args, **kwargs: ThreeBrokers())
    assert app_module.create_app(Settings()).conf.topic_replication_factor == 3
    assert app_module.create_app(Settings(replication_factor=2)).conf.topic_replication_factor == 2


def producer_calls(path: Path) -> list[ast.Call]:
    """The ``KafkaProducer(...)``/``AIOKafkaProducer(...)`` calls in one source file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and getattr(node.func, "id", getattr(node.func, "attr", None))
        in ("KafkaProducer", "AIOKafkaProducer")
    ]


def is_durable(call: ast.Call) -> bool:
    """Made from :func:`producer_options`, or given acks="all" and enable_idempotence=True."""
    for keyword in call.keywords:
        value = keyword.value
        spread = keyword.arg is None and isinstance(value, ast.Call)
        if spread and getattr(value.func, "id", None) == "producer_options":
            return True
    given = {
        keyword.arg: keyword.value.value
        for keyword in call.keywords
        if isinstance(keyword.value, ast.Constant)
    }
    return given.get("acks") == "all" and given.get("enable_idempotence") is True


def test_every_producer_in_the_runtime_is_durable() -> None:
    sources = sorted((REPO / "streams").rglob("*.py"))
    calls = [(path, call) for path in sources for call in producer_calls(path)]
    assert len(calls) >= 5  # the journal, demo, shop replay, simulator, publish, control
    weak = [
        f"{path.relative_to(REPO)}:{call.lineno}" for path, call in calls if not is_durable(call)
    ]
    assert weak == []


def test_the_durability_check_catches_a_weak_producer(tmp_path: Path) -> None:
    source = tmp_path / "weak.py"
    source.write_text(
        "KafkaProducer(bootstrap_servers='b', acks=1)\n"
        "KafkaProducer(**producer_options(settings))\n"
        "KafkaProducer(acks='all', enable_idempotence=True)\n"
    )
    assert [is_durable(call) for call in producer_calls(source)] == [False, True, True]


def test_aiokafka_takes_the_durable_producer_settings() -> None:
    """A real aiokafka producer made as Faust makes it (in the loop; it connects only when
    started) accepts acks=all with idempotence, and keeps the transaction manager that
    numbers its batches."""

    async def make() -> Any:
        app = app_module.create_app(Settings(replication_factor=1))
        producer = app.producer._new_producer()
        await producer.stop()
        return producer

    producer = asyncio.run(make())
    assert producer._txn_manager is not None  # aiokafka keeps one only for idempotence

"""Replication from the cluster's size (streams/kafka/replication.py), with a stand-in admin
client that reports a given number of brokers."""

from __future__ import annotations

import pytest
from kafka.errors import KafkaTimeoutError
from pydantic import ValidationError

from streamrank.streams.config import Settings
from streamrank.streams.kafka import replication
from streamrank.streams.kafka.replication import (
    ReplicationError,
    min_insync_replicas,
    replication_for,
    resolve_replication,
    resolve_replication_waiting,
)


class Cluster:
    """An admin client's ``describe_cluster`` on ``brokers`` brokers; remembers being closed."""

    def __init__(self, brokers: int) -> None:
        self.brokers = brokers
        self.closed = False

    def describe_cluster(self) -> dict:
        return {"brokers": [{"broker_id": n} for n in range(1, self.brokers + 1)]}

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize(("brokers", "copies"), [(1, 1), (2, 2), (3, 3), (4, 3), (9, 3)])
def test_auto_is_three_copies_or_one_per_broker(brokers: int, copies: int) -> None:
    assert replication_for("auto", brokers) == copies


def test_an_explicit_factor_is_kept_up_to_the_broker_count() -> None:
    assert replication_for(1, 3) == 1
    assert replication_for(3, 3) == 3
    with pytest.raises(ReplicationError) as refused:
        replication_for(3, 1, "127.0.0.1:9092")
    message = str(refused.value)
    assert "STREAMRANK_REPLICATION_FACTOR is 3" in message
    assert "127.0.0.1:9092 has 1 live broker," in message
    assert "at most 1, or to auto" in message


def test_an_explicit_factor_without_a_client_asks_no_broker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_connection(*args, **kwargs):
        raise AssertionError("an explicit factor needs no broker")

    monkeypatch.setattr(replication, "admin_client", no_connection)
    assert resolve_replication(Settings(replication_factor=2)) == 2


def test_auto_without_a_client_counts_the_brokers_through_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cluster = Cluster(brokers=3)
    monkeypatch.setattr(replication, "admin_client", lambda *args, **kwargs: cluster)
    assert resolve_replication(Settings()) == 3
    assert cluster.closed


def test_with_a_client_an_explicit_factor_is_checked_too() -> None:
    with pytest.raises(ReplicationError):
        resolve_replication(Settings(replication_factor=2), Cluster(brokers=1))
    assert resolve_replication(Settings(replication_factor=2), Cluster(brokers=3)) == 2


def test_auto_with_no_broker_to_ask_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    def unreachable(*args, **kwargs):
        raise KafkaTimeoutError("Unable to bootstrap")

    monkeypatch.setattr(replication, "admin_client", unreachable)
    with pytest.raises(ReplicationError, match="set STREAMRANK_REPLICATION_FACTOR to a number"):
        resolve_replication(Settings(kafka_bootstrap="127.0.0.1:1"))


def test_only_three_copies_or_more_wait_for_two_in_sync() -> None:
    assert [min_insync_replicas(n) for n in (1, 2, 3, 5)] == [None, None, 2, 2]


def test_the_setting_reads_auto_or_a_positive_number(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STREAMRANK_REPLICATION_FACTOR", raising=False)
    assert Settings().replication_factor == "auto"
    monkeypatch.setenv("STREAMRANK_REPLICATION_FACTOR", "3")
    assert Settings().replication_factor == 3
    for invalid in ("0", "three"):
        monkeypatch.setenv("STREAMRANK_REPLICATION_FACTOR", invalid)
        with pytest.raises(ValidationError):
            Settings()


def test_a_worker_waits_for_a_broker_with_backoff_until_one_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    attempts = iter([KafkaTimeoutError("down")] * 7 + [Cluster(3)])

    def admin_client(*args: object, **kwargs: object) -> Cluster:
        attempt = next(attempts)
        if isinstance(attempt, Exception):
            raise attempt
        return attempt

    monkeypatch.setattr(replication, "admin_client", admin_client)
    slept: list[float] = []
    assert resolve_replication_waiting(Settings(), sleep=slept.append) == 3
    assert slept == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]

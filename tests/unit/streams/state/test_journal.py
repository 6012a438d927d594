"""The state journal's logic without services: folding records, choosing what to restore,
the ``state`` topic's settings, and the errors for a broker that does not answer.

tests/integration/streams/test_state_restore.py runs the same against the real Kafka and Redis.
"""

from __future__ import annotations

import json

import pytest
import redis

from streamrank.streams.config import Settings
from streamrank.streams.kafka import topics
from streamrank.streams.state import journal
from streamrank.streams.state.connections import registry_for
from streamrank.streams.state.journal import (
    JournalError,
    KafkaJournal,
    checkpoint_record_name,
    fold,
    read_journal,
)
from streamrank.streams.state.restore import (
    KindCounts,
    RestoreSummary,
    checkpoint_entries,
    kind_of,
    missing_records,
)
from tests.helpers import free_port


def test_the_last_value_of_a_name_wins_and_a_tombstone_deletes_it() -> None:
    state = fold(
        [
            (b"counter", b"1"),
            (b"artifact/a", b"blob"),
            (b"counter", b"2"),
            (b"artifact/a", None),
            (b"artifact/b", b"old"),
            (b"artifact/b", None),
            (b"artifact/b", b"new"),
        ]
    )
    assert state == {"counter": b"2", "artifact/b": b"new"}


def test_records_without_a_usable_name_are_skipped() -> None:
    assert fold([(None, b"x"), (b"", b"y"), (b"\xff\xfe", b"z"), (b"pointers", b"p")]) == {
        "pointers": b"p"
    }


def test_a_tombstone_for_a_name_never_written_is_harmless() -> None:
    assert fold([(b"artifact/never", None)]) == {}


def test_restore_takes_only_what_redis_lacks() -> None:
    journal_state = {
        "version/v1": b"one",
        "version/v2": b"two",
        "pointers": b"journal's",
        "audit/1": b"a",
        "checkpoints/p:learn:checkpoints": b"[]",
    }
    present = {"version/v1": b"one", "pointers": b"redis's"}
    assert sorted(missing_records(journal_state, present)) == [
        "audit/1",
        "checkpoints/p:learn:checkpoints",
        "version/v2",
    ]


def test_the_counter_takes_the_larger_of_journal_and_redis() -> None:
    assert missing_records({"counter": b"7"}, {"counter": b"3"}) == {"counter": b"7"}
    assert missing_records({"counter": b"3"}, {"counter": b"7"}) == {}
    assert missing_records({"counter": b"3"}, {}) == {"counter": b"3"}
    assert missing_records({"counter": b"3"}, {"counter": b"not a number"}) == {"counter": b"3"}


def test_nothing_is_restored_into_a_redis_that_has_everything() -> None:
    records = {"counter": b"2", "version/v1": b"1", "version/v2": b"2", "pointers": b"p"}
    assert missing_records(records, dict(records)) == {}


def test_kinds_are_the_names_up_to_the_first_slash() -> None:
    assert kind_of("version/v3") == "version"
    assert kind_of("counter") == "counter"
    assert kind_of(checkpoint_record_name("p:learn:checkpoints")) == "checkpoints"
    assert checkpoint_record_name("p:a/b") == "checkpoints/p:a/b"


def test_a_checkpoint_list_must_be_json_records_with_digests() -> None:
    good = [{"digest": "ab" * 32, "sessions_learned": 3}]
    assert checkpoint_entries(json.dumps(good).encode()) == good
    for bad in (b"{oops", b'{"digest": "x"}', b'[{"sessions_learned": 3}]', b"[1]"):
        with pytest.raises(ValueError):
            checkpoint_entries(bad)


def test_a_summary_adds_up_its_kinds_and_describes_them() -> None:
    summary = RestoreSummary(
        kinds={"version": KindCounts(3, 1, 2, 0), "audit": KindCounts(2, 0, 1, 1)}
    )
    assert (summary.restored, summary.failed) == (3, 1)
    assert summary.describe() == (
        "restored 2 version, 1 audit from the state journal; 1 failed to verify"
    )


def test_the_state_topic_is_compacted_single_partition_and_takes_large_records() -> None:
    settings = Settings()
    assert "state" in topics.MANAGED_KINDS
    configs = topics.topic_configs("state", settings)
    assert configs == {"max.message.bytes": "16777216", "cleanup.policy": "compact"}
    assert topics.partitions_for("state", settings.model_copy(update={"partitions": 8})) == 1


def test_the_registry_journals_to_kafka_unless_the_journal_is_off() -> None:
    client = redis.Redis(port=free_port())  # never contacted
    settings = Settings(registry_key="k", operator_token="op", topic_prefix="unit.")
    registry = registry_for(settings, client)
    assert isinstance(registry.journal, KafkaJournal)
    assert registry.journal.topic == "unit.state"
    assert registry.operator_key == b"op"
    off = registry_for(settings.model_copy(update={"journal_enabled": False}), client)
    assert off.journal is None
    presented = registry_for(settings, client, operator_key=b"presented")
    assert presented.operator_key == b"presented"
    no_token = registry_for(settings.model_copy(update={"operator_token": ""}), client)
    assert no_token.operator_key == b"k"


def test_an_unreachable_broker_is_a_clear_journal_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(journal, "TIMEOUT_MS", 1000)
    settings = Settings(kafka_bootstrap=f"127.0.0.1:{free_port()}", topic_prefix="unit.")
    writer = KafkaJournal(settings)
    with pytest.raises(JournalError, match=r"could not journal counter to unit\.state"):
        writer.write("counter", b"1")
    writer.close()
    with pytest.raises(JournalError, match=r"cannot read the state journal unit\.state"):
        read_journal(settings)


def test_a_record_needs_a_name() -> None:
    with pytest.raises(ValueError, match="needs a name"):
        KafkaJournal(Settings()).write("", b"x")

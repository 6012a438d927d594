"""The model registry in the real Redis: versions, signed artifacts, the signed pointer record,
the audit log, and rebuilding an emptied prefix from the journal."""

from __future__ import annotations

import json
import threading

import pytest

from streamrank.models.registry import ModelRegistry, PointerError, RegistryError
from streamrank.streams.config import Settings
from streamrank.streams.state.connections import redis_client

pytestmark = pytest.mark.integration


@pytest.fixture
def registry(settings: Settings) -> ModelRegistry:
    client = redis_client(settings)
    return ModelRegistry(
        client, prefix=settings.topic_prefix + "registry:", key=b"test-key", operator_key=b"op"
    )


class ListJournal:
    """A journal kept in a list, in write order (the Kafka one is helper code of its own)."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, bytes | None]] = []

    def write(self, name: str, value: bytes | None) -> None:
        self.entries.append((name, value))

    def latest(self) -> list[tuple[str, bytes | None]]:
        """What a compacted topic keeps: the last value per name."""
        return list(dict(self.entries).items())


def test_versions_are_numbered_and_read_back(registry: ModelRegistry) -> None:
    first = registry.register(pipeline="dense>ce:30", cross_encoder={"sha256": "abc"})
    second = registry.register(pipeline="ce", parent=first.version, training_events=10)
    assert (first.version, second.version) == ("v1", "v2")
    assert registry.get("v2").parent == "v1"
    assert [v.version for v in registry.versions()] == ["v1", "v2"]
    with pytest.raises(RegistryError, match="not in the registry"):
        registry.get("v9")


def test_tampered_artifacts_and_versions_are_refused(registry: ModelRegistry) -> None:
    digest = registry.put_artifact(b'{"w": [1, 2]}')
    client, prefix = registry.client, registry.prefix
    client.set(registry.artifact_keys(digest)[0], b'{"w": [9, 9]}')
    with pytest.raises(RegistryError, match="does not match its hash"):
        registry.get_artifact(digest)
    # A blob replaced together with a matching hash key still lacks the signature.
    forged = ModelRegistry(client, prefix, key=b"attacker-key").put_artifact(b"evil")
    with pytest.raises(RegistryError, match="signature"):
        registry.get_artifact(forged)
    version = registry.register(pipeline="ce")
    forged_payload = b'{"version": "v1", "pipeline": "x"}'
    client.hset(registry.record_key("versions"), version.version, forged_payload)
    with pytest.raises(RegistryError, match="signature"):
        registry.get(version.version)


def test_activate_rollback_and_shadows(registry: ModelRegistry) -> None:
    for pipeline in ("ce", "dense", "dense>ce:30"):
        registry.register(pipeline=pipeline)
    assert registry.active() is None and registry.pointers() is None
    registry.activate("v1")
    registry.add_shadow("v2")
    assert registry.shadows() == ["v2"]
    assert registry.activate("v2") == "v1"
    assert registry.shadows() == []  # the promoted shadow serves now
    registry.activate("v3")
    assert registry.pointers().history == ("v1", "v2")
    assert registry.rollback() == "v2"
    assert registry.active() == "v2"
    assert registry.rollback() == "v1"
    with pytest.raises(RegistryError, match="no earlier"):
        registry.rollback()
    with pytest.raises(RegistryError, match="not in the registry"):
        registry.activate("v99")
    with pytest.raises(RegistryError, match="not a shadow"):
        registry.remove_shadow("v3")
    assert registry.pointers().serial == 6  # one per change that happened


def test_every_change_is_audited(registry: ModelRegistry) -> None:
    registry.register(pipeline="ce")
    registry.register(pipeline="dense")
    registry.activate("v1", by="alice", reason="first")
    registry.add_shadow("v2", by="alice")
    registry.activate("v2", by="bob", action="promote", reason="wins", details={"forced": True})
    registry.rollback(by="carol", reason="canary")
    registry.add_shadow("v2")
    registry.remove_shadow("v2", reason="done")
    log = registry.audit_log()
    assert [(e["action"], e["version"], e["replaced"]) for e in log] == [
        ("activate", "v1", None),
        ("shadow-add", "v2", None),
        ("promote", "v2", "v1"),
        ("rollback", "v1", "v2"),
        ("shadow-add", "v2", None),
        ("shadow-remove", "v2", None),
    ]
    assert [e["by"] for e in log[:4]] == ["alice", "alice", "bob", "carol"]
    assert log[2]["forced"] is True and log[2]["reason"] == "wins" and log[3]["reason"] == "canary"
    assert [e["serial"] for e in log] == [1, 2, 3, 4, 5, 6]


def test_a_plain_redis_write_of_the_pointers_switches_nothing(registry: ModelRegistry) -> None:
    registry.register(pipeline="ce")
    registry.register(pipeline="dense")
    registry.activate("v1")
    key = registry.record_key("pointers")
    genuine = registry.client.get(key)
    envelope = json.loads(genuine)
    envelope["record"] = envelope["record"].replace('"active": "v1"', '"active": "v2"')
    registry.client.set(key, json.dumps(envelope))
    with pytest.raises(PointerError, match="does not verify"):
        registry.active()
    for forged in (b"v2", b"{}", b'{"record": 1, "signature": 2}'):
        registry.client.set(key, forged)
        with pytest.raises(PointerError):
            registry.active()
    with pytest.raises(PointerError):  # and nobody writes over it by accident
        registry.activate("v2")
    # Signed under another operator key (a token the workers do not hold): refused too.
    other = registry.with_operator_key(b"not-the-deployment's")
    registry.client.delete(key)
    other.activate("v2")
    with pytest.raises(PointerError):
        registry.active()
    # The way back for the holder of the key: a fresh record over the unverified one, audited.
    registry.activate("v1", replace_unverified=True, reason="overwritten")
    assert registry.active() == "v1"
    assert registry.audit_log(skip_unverified=True)[-1]["overwrote_unverified_record"] is True
    serial = registry.pointers().serial
    assert serial > 1_000_000  # past any serial a worker saw, even with the audit log gone
    assert registry.audited_state() == ("v1", serial)


def test_rollback_refuses_a_version_that_is_not_in_the_registry(registry: ModelRegistry) -> None:
    first = registry.register(pipeline="ce").version
    second = registry.register(pipeline="dense>ce:30").version
    registry.activate(first)
    registry.activate(second)
    # The earlier version disappears (a plain Redis delete): rollback must not point at it.
    registry.client.hdel(registry.record_key("versions"), first)
    with pytest.raises(RegistryError, match=f"cannot roll back: version {first} is not in"):
        registry.rollback()
    assert registry.active() == second  # nothing switched
    assert registry.pointers().history == (first,)


def test_concurrent_changes_are_not_lost(registry: ModelRegistry) -> None:
    """Twenty writers add a shadow each at once: compare-and-set keeps every one."""
    names = [registry.register(pipeline="ce").version for _ in range(20)]
    errors: list[Exception] = []

    def add(name: str) -> None:
        try:
            registry.with_operator_key(b"op").add_shadow(name)
        except Exception as error:  # reported below, not swallowed
            errors.append(error)

    threads = [threading.Thread(target=add, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert set(registry.shadows()) == set(names)
    assert registry.pointers().serial == 20 and len(registry.audit_log()) == 20


def test_audit_entries_are_signed(registry: ModelRegistry) -> None:
    registry.audit({"action": "note", "version": "v2", "by": "alice", "p_value": 0.01})
    assert registry.audit_log()[0]["by"] == "alice"
    key = registry.record_key("audit-log")
    (audit_id,) = registry.client.hkeys(key)
    raw = registry.client.hget(key, audit_id).replace(b"alice", b"mallory")
    registry.client.hset(key, audit_id, raw)
    with pytest.raises(RegistryError, match="signature"):
        registry.audit_log()
    assert registry.audit_log(skip_unverified=True) == []


def test_a_registry_without_a_key_is_refused(settings: Settings) -> None:
    with pytest.raises(RegistryError, match="STREAMRANK_REGISTRY_KEY"):
        ModelRegistry(redis_client(settings), "x:", key=b"")


def test_register_never_overwrites_a_version(registry: ModelRegistry) -> None:
    registry.register(pipeline="ce")
    registry.register(pipeline="dense")
    registry.client.set(registry.record_key("version-counter"), 0)  # a counter that fell behind
    third = registry.register(pipeline="first-stage")
    assert third.version == "v3"
    assert [registry.get(name).pipeline for name in ("v1", "v2")] == ["ce", "dense"]


def test_the_journal_rebuilds_an_emptied_registry(settings: Settings) -> None:
    journal = ListJournal()
    client = redis_client(settings)
    prefix = settings.topic_prefix + "journaled:"
    registry = ModelRegistry(client, prefix, key=b"k", operator_key=b"op", journal=journal)
    for pipeline in ("ce", "dense", "dense>ce:30"):
        registry.register(pipeline=pipeline)
    registry.activate("v1", reason="first")
    registry.activate("v2", action="promote", reason="wins")
    registry.add_shadow("v3")
    digest = registry.put_artifact(b"\x00\x01 raw bytes")
    gone = registry.put_artifact(b"superseded")
    registry.delete_artifact(gone)
    before = (registry.pointers(), registry.audit_log(), registry.versions())
    # Everything in Redis is in the journal, record for record.
    assert dict(registry.records()).items() <= dict(journal.latest()).items()

    registry.clear()
    assert registry.is_empty()
    counts = registry.restore(journal.latest())
    assert counts == {"counter": 1, "version": 3, "artifact": 2, "pointers": 1, "audit": 3}
    assert (registry.pointers(), registry.audit_log(), registry.versions()) == before
    assert registry.get_artifact(digest) == b"\x00\x01 raw bytes"
    with pytest.raises(RegistryError, match="not in the registry"):
        registry.get_artifact(gone)
    assert registry.register(pipeline="ce").version == "v4"


def test_restore_refuses_what_does_not_verify(settings: Settings) -> None:
    journal = ListJournal()
    client = redis_client(settings)
    prefix = settings.topic_prefix + "journaled:"
    registry = ModelRegistry(client, prefix, key=b"k", operator_key=b"op", journal=journal)
    registry.register(pipeline="ce")
    registry.activate("v1")
    forger = ModelRegistry(client, prefix + "x:", key=b"k2", operator_key=b"op2", journal=journal)
    forger.register(pipeline="dense")
    forger.activate("v1")  # a version, pointer record and audit entry under the wrong keys
    records = [
        *journal.entries,
        ("version/v7", b'{"payload": "{}", "signature": "00"}'),
        ("artifact/" + "0" * 64, b"0" * 64 + b"blob"),
        ("checkpoints/some-list", b"[]"),
    ]
    registry.clear()
    forger.clear()
    counts = registry.restore(records)
    # the forger's version, pointers and audit entry, the forged version and artifact
    assert counts["refused"] == 5 and counts["unknown"] == 1
    assert counts["version"] == 1 and counts["pointers"] == 1 and counts["audit"] == 1
    assert registry.active() == "v1" and registry.get("v1").pipeline == "ce"
    assert registry.register(pipeline="ce").version == "v2"

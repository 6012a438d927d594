"""The model registry: ranker versions, signed artifacts and the signed pointer record, in Redis.

A *version* is one ranker configuration: which cross-encoder (and its file hash), the cascade
settings, a snapshot of the online learner, the final ranker (a LambdaMART model and the
feature set it reads, both artifacts), the version it was derived from, when it was made,
how many training events it has seen and its metrics. Versions never change once written, and
a version name is never issued twice: a name is claimed with ``HSETNX``, so a counter that
fell behind (a Redis restored from an older copy) skips taken names instead of overwriting them.

An *artifact* is a blob (an online-model snapshot, say) stored under the SHA-256 of its bytes
and signed with HMAC-SHA256 under the registry key. Reading checks both the hash and the
signature, and artifacts are JSON or raw arrays, never pickles: nothing reaches a worker that
the holder of the key did not write.

What serves is ONE *pointer record*: the active version, the earlier actives (newest last, for
rollback), the shadow set, a serial number, when and by whom. It is signed with HMAC-SHA256
under the *operator key* (the operator token when the deployment has one, else the registry
key), so the registry key alone, which every process that registers versions holds, cannot
switch what the workers serve. Reading verifies it: a plain ``SET`` by someone without the
operator key is refused (:class:`PointerError`), never obeyed. Writing is compare-and-set
(``WATCH``/``MULTI``) on the record, so two operators cannot lose each other's change; each
change writes its audit entry, signed under the same key, in the same transaction.

Every record can also go to a :class:`Journal` (a durable log kept outside Redis), written
*before* the Redis write, so that nothing exists in Redis that the journal lacks;
:meth:`ModelRegistry.restore` rebuilds an emptied Redis from it. The one exception is the
version counter, journaled just after its ``INCR`` and before any version uses the number: a
number lost that way was never given to a version, and restore raises the counter to the
highest version it saw anyway.

Examples
--------
>>> client = redis_from_env()  # $STREAMRANK_REDIS_URL (a cluster when so set), else local
>>> registry = ModelRegistry(client, prefix="doctest-registry:", key=b"secret")
>>> digest = registry.put_artifact(b'{"weights": [0.5, 1.5]}')  # doctest: +SKIP
>>> registry.get_artifact(digest)  # doctest: +SKIP
b'{"weights": [0.5, 1.5]}'
>>> registry.clear()  # doctest: +SKIP
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import json
import os
import random
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol

import redis
from redis.cluster import ClusterNode

SIGNATURE_CHARS = 64  # hex HMAC-SHA256
CAS_ATTEMPTS = 50
ACTIVATIONS = frozenset({"activate", "promote", "rollback"})  # audit actions that move active


def redis_from_env() -> redis.Redis:
    """A client for ``$STREAMRANK_REDIS_URL`` (else the local Redis): a ``RedisCluster`` when
    ``$STREAMRANK_REDIS_CLUSTER`` is true, which also starts from the ``host:port`` nodes of
    ``$STREAMRANK_REDIS_CLUSTER_NODES``.

    For examples and tools of this package, which must not import the streaming runtime
    (``streamrank.streams.state.connections.redis_client`` is what the deployment uses); a
    plain client on a cluster would be answered ``MOVED`` for most keys.
    """
    url = os.environ.get("STREAMRANK_REDIS_URL", "redis://127.0.0.1:6379/0")
    if os.environ.get("STREAMRANK_REDIS_CLUSTER", "").strip().lower() in ("1", "true", "yes", "on"):
        listed = os.environ.get("STREAMRANK_REDIS_CLUSTER_NODES", "").split(",")
        nodes = [node.strip().rsplit(":", 1) for node in listed if node.strip()]
        startup = [ClusterNode(host, int(port)) for host, port in nodes]
        return redis.RedisCluster.from_url(url, startup_nodes=startup)  # type: ignore[return-value]
    return redis.Redis.from_url(url)


class RegistryError(RuntimeError):
    """A version or artifact that is missing, or whose hash or signature does not verify."""


class PointerError(RegistryError):
    """The pointer record does not verify under this registry's operator key."""


class Journal(Protocol):
    """A durable, ordered log of the registry's records (``None``: the record is deleted)."""

    def write(self, name: str, value: bytes | None) -> None: ...


@dataclass(frozen=True)
class Version:
    """One ranker configuration; immutable once registered."""

    version: str
    pipeline: str
    cross_encoder: dict[str, str] = field(default_factory=dict)  # name, sha256
    online_snapshot: str | None = None  # artifact digest
    final_ranker: dict[str, str] = field(default_factory=dict)  # model, features: artifacts
    parent: str | None = None
    created_at: float = field(default_factory=time.time)
    training_events: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    notes: str = ""


@dataclass(frozen=True)
class Pointers:
    """What serves: the signed pointer record's content.

    ``history`` holds the earlier active versions, newest last; ``serial`` grows by one with
    every change, so a worker can refuse an older (replayed) record it has already seen past.
    """

    active: str | None = None
    history: tuple[str, ...] = ()
    shadows: tuple[str, ...] = ()
    serial: int = 0
    at: float = 0.0
    by: str = ""

    def to_json(self) -> str:
        record = asdict(self) | {"history": list(self.history), "shadows": list(self.shadows)}
        return json.dumps(record, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Pointers:
        """Parse a verified record; a wrong shape is refused like a bad signature."""
        try:
            data = json.loads(text)
            pointers = cls(
                active=data["active"],
                history=tuple(data["history"]),
                shadows=tuple(data["shadows"]),
                serial=int(data["serial"]),
                at=float(data["at"]),
                by=str(data["by"]),
            )
        except (ValueError, KeyError, TypeError) as error:
            raise PointerError(f"the pointer record is malformed ({error})") from None
        names = [*pointers.history, *pointers.shadows]
        if pointers.active is not None:
            names.append(pointers.active)
        if not all(isinstance(name, str) for name in names):
            raise PointerError("the pointer record is malformed (a version is not a string)")
        return pointers


class ModelRegistry:
    """Versions, artifacts, the signed pointer record and the audit log under one prefix.

    ``key`` signs versions and artifacts; ``operator_key`` signs the pointer record and the
    audit log (empty: the registry key signs them too). Workers hold the deployment's operator
    key; the CLI uses the token the operator presents, so a wrong token writes nothing a
    worker would obey.
    """

    def __init__(
        self,
        client: redis.Redis,
        prefix: str,
        key: bytes,
        operator_key: bytes = b"",
        journal: Journal | None = None,
    ) -> None:
        if not key:
            raise RegistryError(
                "the registry needs a signing key: set STREAMRANK_REGISTRY_KEY to a long secret"
            )
        self.client = client
        self.prefix = prefix
        self.key = key
        self.operator_key = operator_key or key
        self.journal = journal

    def with_operator_key(self, operator_key: bytes) -> ModelRegistry:
        """The same registry, signing and verifying pointers under ``operator_key``."""
        return ModelRegistry(self.client, self.prefix, self.key, operator_key, self.journal)

    # -- signing and the journal ------------------------------------------------------------

    def _sign(self, payload: bytes, key: bytes | None = None) -> str:
        return hmac.new(key or self.key, payload, hashlib.sha256).hexdigest()

    def _verify(
        self, payload: bytes, signature: bytes | None, what: str, key: bytes | None = None
    ) -> None:
        expected = self._sign(payload, key)
        if signature is None or not hmac.compare_digest(expected.encode(), signature):
            raise RegistryError(f"{what}: signature does not verify; refusing to load it")

    def _journal(self, name: str, value: bytes | None) -> None:
        if self.journal is not None:
            self.journal.write(name, value)

    def _key(self, name: str) -> str:
        """The key of one of the registry's own records (counter, versions, pointers, audit).

        They share the hash tag ``{registry}``: a Redis Cluster keeps them in one slot, so the
        transactions that write two of them (a version and its signature; the pointer record
        and its audit entry, under ``WATCH``) are allowed there. The store is small, so one
        slot costs nothing; the prefix stays first, so ``<prefix>*`` still finds every key.
        """
        return f"{self.prefix}{{registry}}:{name}"

    def record_key(self, name: str) -> str:
        """The Redis key of a registry record (``pointers``, ``audit-log``, ``versions``, ...)."""
        return self._key(name)

    def artifact_keys(self, digest: str) -> tuple[str, str]:
        """The keys of an artifact's blob and of its signature.

        Tagged by the digest: the two are read together (``MGET``) and deleted together, so
        they share a slot, while artifacts (MB-sized learner checkpoints among them) spread
        over a cluster's shards.
        """
        return (
            f"{self.prefix}artifact:{{{digest}}}",
            f"{self.prefix}artifact-signature:{{{digest}}}",
        )

    # -- artifacts ------------------------------------------------------------------------

    def put_artifact(self, blob: bytes) -> str:
        """Store a blob under its SHA-256; returns the digest. Storing it again is a no-op."""
        digest = hashlib.sha256(blob).hexdigest()
        signature = self._sign(blob)
        self._journal(f"artifact/{digest}", signature.encode() + blob)
        self._store_artifact(digest, blob, signature)
        return digest

    def _store_artifact(self, digest: str, blob: bytes, signature: str) -> None:
        blob_key, signature_key = self.artifact_keys(digest)
        pipe = self.client.pipeline(transaction=True)  # both, or neither
        pipe.set(blob_key, blob)
        pipe.set(signature_key, signature)
        pipe.execute()

    def get_artifact(self, digest: str) -> bytes:
        blob, signature = self.client.mget(*self.artifact_keys(digest))
        if blob is None:
            raise RegistryError(f"artifact {digest} is not in the registry")
        if hashlib.sha256(blob).hexdigest() != digest:
            raise RegistryError(f"artifact {digest}: content does not match its hash")
        self._verify(blob, signature, f"artifact {digest}")
        return blob

    def delete_artifact(self, digest: str) -> None:
        """Forget an artifact (superseded learner checkpoints, say); unknown digests are fine."""
        self._journal(f"artifact/{digest}", None)
        self.client.delete(*self.artifact_keys(digest))

    # -- versions -------------------------------------------------------------------------

    def register(self, **fields: Any) -> Version:
        """Register a new version (``version`` is assigned: v1, v2, ...) and return it.

        The name is claimed with ``HSETNX``: when it is taken already (the counter fell
        behind), the next number is tried, so no version is ever overwritten.
        """
        while True:
            number = int(self.client.incr(self._key("version-counter")))
            self._journal("counter", str(number).encode())
            version = Version(version=f"v{number}", **fields)
            payload = json.dumps(asdict(version), sort_keys=True).encode()
            signature = self._sign(payload)
            record = {"payload": payload.decode(), "signature": signature}
            self._journal(f"version/{version.version}", json.dumps(record).encode())
            pipe = self.client.pipeline(transaction=True)  # MULTI: both fields, or neither
            pipe.hsetnx(self._key("versions"), version.version, payload)
            pipe.hsetnx(self._key("version-signatures"), version.version, signature)
            claimed, _ = pipe.execute()
            if claimed:
                return version

    def get(self, version: str) -> Version:
        payload = self.client.hget(self._key("versions"), version)
        if payload is None:
            raise RegistryError(f"version {version} is not in the registry")
        signature = self.client.hget(self._key("version-signatures"), version)
        self._verify(payload, signature, f"version {version}")
        return Version(**json.loads(payload))

    def versions(self) -> list[Version]:
        names = [name.decode() for name in self.client.hkeys(self._key("versions"))]
        return [self.get(name) for name in sorted(names, key=lambda name: int(name[1:]))]

    # -- the pointer record ---------------------------------------------------------------

    def pointers(self) -> Pointers | None:
        """The verified pointer record; None when there is none yet.

        Raises :class:`PointerError` when the stored record does not verify under this
        registry's operator key (tampered with, or signed with another token).
        """
        return self._parse_pointers(self.client.get(self._key("pointers")))

    def _parse_pointers(self, raw: bytes | None) -> Pointers | None:
        if raw is None:
            return None
        try:
            envelope = json.loads(raw)
            text, signature = envelope["record"], envelope["signature"]
            if not isinstance(text, str) or not isinstance(signature, str):
                raise TypeError("record and signature must be strings")
        except (ValueError, KeyError, TypeError) as error:
            raise PointerError(f"the pointer record is malformed ({error}); refusing it") from None
        expected = self._sign(text.encode(), self.operator_key)
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            raise PointerError(
                "the pointer record does not verify under this operator key "
                "(signed with another token, or written without one); refusing it"
            )
        return Pointers.from_json(text)

    def _envelope(self, pointers: Pointers) -> bytes:
        text = pointers.to_json()
        signature = self._sign(text.encode(), self.operator_key)
        return json.dumps({"record": text, "signature": signature}).encode()

    def active(self) -> str | None:
        """The active version (verified), or None before the first activation."""
        pointers = self.pointers()
        return pointers.active if pointers else None

    def shadows(self) -> list[str]:
        """The shadow versions (verified), sorted."""
        pointers = self.pointers()
        return sorted(pointers.shadows) if pointers else []

    def activate(
        self,
        version: str,
        *,
        reason: str = "",
        by: str | None = None,
        action: str = "activate",
        details: dict[str, Any] | None = None,
        replace_unverified: bool = False,
    ) -> str | None:
        """Point ``active`` at a version; returns the one it replaced.

        ``replace_unverified`` writes a fresh record (no history, its serial jumps to the
        current Unix time) over one that does not verify: the way back after someone without
        the operator key overwrote it. It gives no power a Redis writer lacks, since workers
        obey only what verifies.
        """
        self.get(version)  # refuses unknown or tampered versions

        def change(old: Pointers) -> tuple[Pointers, str | None]:
            history = old.history
            if old.active and old.active != version:
                history = (*history, old.active)
            shadows = tuple(name for name in old.shadows if name != version)
            return replace(old, active=version, history=history, shadows=shadows), old.active

        _, replaced = self._change(
            change, action, version, reason, by, details or {}, replace_unverified
        )
        return replaced

    def rollback(self, *, reason: str = "", by: str | None = None) -> str:
        """Return ``active`` to the version before it; returns that version.

        The earlier version is verified like any other before ``active`` points at it: a
        history entry naming a version that is gone would otherwise leave every new worker
        unable to start. An empty history is refused.
        """

        def change(old: Pointers) -> tuple[Pointers, str | None]:
            if not old.history:
                raise RegistryError("there is no earlier active version to roll back to")
            previous = old.history[-1]
            try:
                self.get(previous)
            except RegistryError as error:
                raise RegistryError(f"cannot roll back: {error}") from None
            return replace(old, active=previous, history=old.history[:-1]), old.active

        new, _ = self._change(change, "rollback", None, reason, by, {}, False)
        return str(new.active)

    def add_shadow(self, version: str, *, reason: str = "", by: str | None = None) -> None:
        """Add a (verified) version to the shadow set; the active version cannot shadow."""
        self.get(version)

        def change(old: Pointers) -> tuple[Pointers, str | None]:
            if version == old.active:
                raise RegistryError(f"{version} is the active version; it cannot be a shadow")
            return replace(old, shadows=tuple(sorted({*old.shadows, version}))), None

        self._change(change, "shadow-add", version, reason, by, {}, False)

    def remove_shadow(self, version: str, *, reason: str = "", by: str | None = None) -> None:
        """Take a version out of the shadow set (refused when it is not a shadow)."""

        def change(old: Pointers) -> tuple[Pointers, str | None]:
            if version not in old.shadows:
                raise RegistryError(f"{version} is not a shadow")
            return replace(old, shadows=tuple(s for s in old.shadows if s != version)), None

        self._change(change, "shadow-remove", version, reason, by, {}, False)

    def _change(
        self,
        change: Callable[[Pointers], tuple[Pointers, str | None]],
        action: str,
        version: str | None,
        reason: str,
        by: str | None,
        details: dict[str, Any],
        replace_unverified: bool,
    ) -> tuple[Pointers, str | None]:
        """Compare-and-set the pointer record and write its audit entry in one transaction.

        Journal first (record and audit entry), then ``MULTI``; when another writer got in
        between (``WatchError``), the lost attempt's audit entry is withdrawn from the journal
        and the change is computed again on the new record.
        """
        who = by or getpass.getuser()
        key = self._key("pointers")
        for _ in range(CAS_ATTEMPTS):
            with self.client.pipeline(transaction=True) as pipe:
                pipe.watch(key)
                raw = pipe.get(key)
                old, overwritten = self._current(raw, replace_unverified)
                new, replaced = change(old)
                new = replace(new, serial=old.serial + 1, at=time.time(), by=who)
                entry = {
                    "action": action,
                    "version": version or new.active,
                    "replaced": replaced,
                    "by": who,
                    "serial": new.serial,
                    "reason": reason,
                } | details
                if overwritten:
                    entry["overwrote_unverified_record"] = True
                audit_id, audit_record = self._audit_record(entry)
                envelope = self._envelope(new)
                self._journal("pointers", envelope)
                self._journal(f"audit/{audit_id}", audit_record)
                try:
                    pipe.multi()
                    pipe.set(key, envelope)
                    pipe.hset(self._key("audit-log"), audit_id, audit_record)
                    pipe.execute()
                    return new, replaced
                except redis.WatchError:
                    self._journal(f"audit/{audit_id}", None)
                    current = self.client.get(key)
                    if current is not None:
                        self._journal("pointers", current)
                    time.sleep(random.uniform(0, 0.01))  # spread writers that collided
        raise RegistryError(f"the pointer record kept changing; {action} not applied, try again")

    def _current(self, raw: bytes | None, replace_unverified: bool) -> tuple[Pointers, bool]:
        try:
            return self._parse_pointers(raw) or Pointers(), False
        except PointerError:
            if not replace_unverified:
                raise
            # Past every serial a worker may have seen, even with the audit log deleted: the
            # fresh record must not look like a replay to a worker that saw a later one.
            return Pointers(serial=max(self.audited_state()[1], int(time.time()))), True

    def audited_state(self) -> tuple[str | None, int]:
        """The version the newest verifying audit entry made active, and the highest serial
        any verifying entry names ((None, 0): there is none).

        What a worker falls back to when the pointer record does not verify, and the serial
        below which a record is a replay: audit entries are signed under the same operator
        key, so someone without it can only delete them, never choose what this returns.
        """
        active, serial = None, 0
        for entry in self.audit_log(skip_unverified=True):
            if entry.get("action") in ACTIVATIONS and isinstance(entry.get("version"), str):
                active = entry["version"]
            if isinstance(entry.get("serial"), int):
                serial = max(serial, entry["serial"])
        return active, serial

    # -- audit ----------------------------------------------------------------------------

    def _audit_record(self, entry: dict[str, Any]) -> tuple[str, bytes]:
        """A new audit id (time-ordered, unique) and the signed record stored under it."""
        audit_id = f"{time.time_ns():020d}-{secrets.token_hex(4)}"
        payload = json.dumps(entry | {"at": entry.get("at", time.time())}, sort_keys=True)
        signature = self._sign(payload.encode(), self.operator_key)
        return audit_id, json.dumps({"entry": payload, "signature": signature}).encode()

    def audit(self, entry: dict[str, Any]) -> None:
        """Append a signed entry to the audit log (who, when, why, the statistics then)."""
        audit_id, record = self._audit_record(entry)
        self._journal(f"audit/{audit_id}", record)
        self.client.hset(self._key("audit-log"), audit_id, record)

    def audit_log(self, skip_unverified: bool = False) -> list[dict[str, Any]]:
        """Every audit entry, oldest first; one that does not verify raises (or is skipped)."""
        raw = self.client.hgetall(self._key("audit-log"))
        entries = []
        for audit_id in sorted(raw):
            try:
                entries.append(self._audit_entry(raw[audit_id]))
            except RegistryError:
                if not skip_unverified:
                    raise
        return entries

    def _audit_entry(self, raw: bytes) -> dict[str, Any]:
        try:
            record = json.loads(raw)
            payload, signature = record["entry"].encode(), record["signature"].encode()
        except (ValueError, KeyError, TypeError, AttributeError):
            raise RegistryError("audit entry: malformed; refusing it") from None
        self._verify(payload, signature, "audit entry", self.operator_key)
        return json.loads(payload)

    # -- the journal's view: every record, and restoring them -------------------------------

    def records(self) -> Iterator[tuple[str, bytes]]:
        """Every record under this prefix in journal form (what :meth:`restore` reads)."""
        counter = self.client.get(self._key("version-counter"))
        if counter is not None:
            yield "counter", counter
        payloads = self.client.hgetall(self._key("versions"))
        signatures = self.client.hgetall(self._key("version-signatures"))
        for name, payload in payloads.items():
            record = {"payload": payload.decode(), "signature": signatures.get(name, b"").decode()}
            yield f"version/{name.decode()}", json.dumps(record).encode()
        for key in self.client.scan_iter(match=f"{self.prefix}artifact:*"):
            digest = key.decode().rsplit(":", 1)[1].strip("{}")
            blob, signature = self.client.mget(*self.artifact_keys(digest))
            if blob is not None and signature is not None:
                yield f"artifact/{digest}", signature + blob
        pointers = self.client.get(self._key("pointers"))
        if pointers is not None:
            yield "pointers", pointers
        for audit_id, record in sorted(self.client.hgetall(self._key("audit-log")).items()):
            yield f"audit/{audit_id.decode()}", record

    def restore(self, records: Iterable[tuple[str, bytes | None]]) -> dict[str, int]:
        """Write journaled records back to Redis; returns counts per kind.

        Every signature is checked: what does not verify is counted under ``refused`` and
        skipped, and names this registry does not own under ``unknown``. Of several pointer
        records the newest serial wins. The counter ends at least at the highest version
        number seen, so no name is issued twice.
        """
        counts: Counter[str] = Counter()
        highest, pointers = 0, None
        for name, value in records:
            kind, _, rest = name.partition("/")
            try:
                if kind == "counter" and value is not None:
                    highest = max(highest, int(value))
                elif kind == "version" and value is not None:
                    highest = max(highest, self._restore_version(rest, value))
                elif kind == "artifact":
                    self._restore_artifact(rest, value)
                elif kind == "pointers" and value is not None:
                    found = self._parse_pointers(value)
                    if found and (pointers is None or found.serial >= pointers[0].serial):
                        pointers = (found, value)
                elif kind == "audit" and value is not None:
                    self._audit_entry(value)
                    self.client.hset(self._key("audit-log"), rest, value)
                else:
                    counts["unknown"] += 1
                    continue
            except (RegistryError, ValueError, KeyError, TypeError, AttributeError):
                counts["refused"] += 1
                continue
            counts[kind] += 1
        if pointers is not None:
            self.client.set(self._key("pointers"), pointers[1])
        self._raise_counter(highest)
        return dict(counts)

    def _restore_version(self, name: str, value: bytes) -> int:
        record = json.loads(value)
        payload, signature = record["payload"].encode(), record["signature"].encode()
        self._verify(payload, signature, f"version {name}")
        if json.loads(payload)["version"] != name or not name[1:].isdigit():
            raise RegistryError(f"version {name}: the record names another version")
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(self._key("versions"), name, payload)
        pipe.hset(self._key("version-signatures"), name, signature)
        pipe.execute()
        return int(name[1:])

    def _restore_artifact(self, digest: str, value: bytes | None) -> None:
        if value is None:
            self.client.delete(*self.artifact_keys(digest))
            return
        signature, blob = value[:SIGNATURE_CHARS], value[SIGNATURE_CHARS:]
        if hashlib.sha256(blob).hexdigest() != digest:
            raise RegistryError(f"artifact {digest}: content does not match its hash")
        self._verify(blob, signature, f"artifact {digest}")
        self._store_artifact(digest, blob, signature.decode())

    def _raise_counter(self, highest: int) -> None:
        """Set the counter to ``highest`` unless it is higher already (a Lua max, atomic)."""
        script = (
            "local now = tonumber(redis.call('GET', KEYS[1]) or '0') "
            "if tonumber(ARGV[1]) > now then redis.call('SET', KEYS[1], ARGV[1]) end"
        )
        self.client.eval(script, 1, self._key("version-counter"), highest)

    def is_empty(self) -> bool:
        """Whether nothing at all is stored under this prefix (a Redis that came back empty)."""
        return next(iter(self.client.scan_iter(match=f"{self.prefix}*", count=1000)), None) is None

    def clear(self) -> None:
        """Delete everything under this registry's prefix (tests and demos)."""
        for name in self.client.scan_iter(match=f"{self.prefix}*"):
            self.client.delete(name)

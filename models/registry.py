"""The model registry: ranker versions, signed artifacts and the active/shadow pointers, in Redis.

A *version* is one ranker configuration: which cross-encoder (and its file hash), the cascade
settings, a snapshot of the online learner, the version it was derived from, when it was made,
how many training events it has seen and its metrics. Versions never change once written.

An *artifact* is a blob (an online-model snapshot, say) stored under the SHA-256 of its bytes
and signed with HMAC-SHA256 under the registry key. Reading checks both the hash and the
signature, and artifacts are JSON or raw arrays, never pickles: nothing reaches a worker that
the holder of the key did not write.

Pointers say what serves: ``active`` (one version) and ``shadows`` (any number). Every change
of the active pointer is pushed on a history list, so a rollback returns to the one before.

Examples
--------
>>> import os
>>> import redis
>>> url = os.environ.get("STREAMRANK_REDIS_URL", "redis://127.0.0.1:6379/0")
>>> client = redis.Redis.from_url(url)  # $STREAMRANK_REDIS_URL, else local Redis
>>> registry = ModelRegistry(client, prefix="doctest-registry:", key=b"secret")
>>> digest = registry.put_artifact(b'{"weights": [0.5, 1.5]}')  # doctest: +SKIP
>>> registry.get_artifact(digest)  # doctest: +SKIP
b'{"weights": [0.5, 1.5]}'
>>> registry.clear()  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import redis


class RegistryError(RuntimeError):
    """A version or artifact that is missing, or whose hash or signature does not verify."""


@dataclass(frozen=True)
class Version:
    """One ranker configuration; immutable once registered."""

    version: str
    pipeline: str
    cross_encoder: dict[str, str] = field(default_factory=dict)  # name, sha256
    online_snapshot: str | None = None  # artifact digest
    parent: str | None = None
    created_at: float = field(default_factory=time.time)
    training_events: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    notes: str = ""


class ModelRegistry:
    """Versions, artifacts and pointers under one Redis key prefix."""

    def __init__(self, client: redis.Redis, prefix: str, key: bytes) -> None:
        if not key:
            raise RegistryError(
                "the registry needs a signing key: set STREAMRANK_REGISTRY_KEY to a long secret"
            )
        self.client = client
        self.prefix = prefix
        self.key = key

    # -- signing --------------------------------------------------------------------------

    def _sign(self, payload: bytes) -> str:
        return hmac.new(self.key, payload, hashlib.sha256).hexdigest()

    def _verify(self, payload: bytes, signature: bytes | None, what: str) -> None:
        expected = self._sign(payload)
        if signature is None or not hmac.compare_digest(expected, signature.decode()):
            raise RegistryError(f"{what}: signature does not verify; refusing to load it")

    # -- artifacts ------------------------------------------------------------------------

    def put_artifact(self, blob: bytes) -> str:
        """Store a blob under its SHA-256; returns the digest. Storing it again is a no-op."""
        digest = hashlib.sha256(blob).hexdigest()
        pipe = self.client.pipeline()
        pipe.set(f"{self.prefix}artifact:{digest}", blob)
        pipe.set(f"{self.prefix}artifact-signature:{digest}", self._sign(blob))
        pipe.execute()
        return digest

    def get_artifact(self, digest: str) -> bytes:
        blob, signature = self.client.mget(
            f"{self.prefix}artifact:{digest}", f"{self.prefix}artifact-signature:{digest}"
        )
        if blob is None:
            raise RegistryError(f"artifact {digest} is not in the registry")
        if hashlib.sha256(blob).hexdigest() != digest:
            raise RegistryError(f"artifact {digest}: content does not match its hash")
        self._verify(blob, signature, f"artifact {digest}")
        return blob

    def delete_artifact(self, digest: str) -> None:
        """Forget an artifact (superseded learner checkpoints, say); unknown digests are fine."""
        self.client.delete(
            f"{self.prefix}artifact:{digest}", f"{self.prefix}artifact-signature:{digest}"
        )

    # -- versions -------------------------------------------------------------------------

    def register(self, **fields: Any) -> Version:
        """Register a new version (``version`` is assigned: v1, v2, ...) and return it."""
        number = self.client.incr(f"{self.prefix}version-counter")
        version = Version(version=f"v{number}", **fields)
        payload = json.dumps(asdict(version), sort_keys=True).encode()
        pipe = self.client.pipeline()
        pipe.hset(f"{self.prefix}versions", version.version, payload)
        pipe.hset(f"{self.prefix}version-signatures", version.version, self._sign(payload))
        pipe.execute()
        return version

    def get(self, version: str) -> Version:
        payload = self.client.hget(f"{self.prefix}versions", version)
        if payload is None:
            raise RegistryError(f"version {version} is not in the registry")
        signature = self.client.hget(f"{self.prefix}version-signatures", version)
        self._verify(payload, signature, f"version {version}")
        return Version(**json.loads(payload))

    def versions(self) -> list[Version]:
        names = [name.decode() for name in self.client.hkeys(f"{self.prefix}versions")]
        return [self.get(name) for name in sorted(names, key=lambda name: int(name[1:]))]

    # -- pointers -------------------------------------------------------------------------

    def active(self) -> str | None:
        value = self.client.get(f"{self.prefix}active")
        return value.decode() if value else None

    def activate(self, version: str) -> str | None:
        """Point ``active`` at a version; returns the one it replaced."""
        self.get(version)  # refuses unknown or tampered versions
        previous = self.active()
        pipe = self.client.pipeline()
        pipe.set(f"{self.prefix}active", version)
        if previous and previous != version:
            pipe.rpush(f"{self.prefix}active-history", previous)
        pipe.srem(f"{self.prefix}shadows", version)
        pipe.execute()
        return previous

    def rollback(self) -> str:
        """Return ``active`` to the version before it; returns that version.

        The earlier version is verified like any other before ``active`` points at it: a
        history entry naming an unknown or tampered version would otherwise leave every new
        worker unable to start. Refused, the entry goes back where it was.
        """
        history = f"{self.prefix}active-history"
        previous = self.client.rpop(history)
        if previous is None:
            raise RegistryError("there is no earlier active version to roll back to")
        try:
            self.get(previous.decode())
        except RegistryError as error:
            self.client.rpush(history, previous)
            raise RegistryError(f"cannot roll back: {error}") from None
        self.client.set(f"{self.prefix}active", previous)
        return previous.decode()

    def shadows(self) -> list[str]:
        return sorted(name.decode() for name in self.client.smembers(f"{self.prefix}shadows"))

    def add_shadow(self, version: str) -> None:
        self.get(version)
        self.client.sadd(f"{self.prefix}shadows", version)

    def remove_shadow(self, version: str) -> None:
        self.client.srem(f"{self.prefix}shadows", version)

    # -- audit ----------------------------------------------------------------------------

    def audit(self, entry: dict[str, Any]) -> None:
        """Append a signed entry to the audit log (who, when, why, the statistics then)."""
        payload = json.dumps(entry | {"at": entry.get("at", time.time())}, sort_keys=True)
        record = json.dumps({"entry": payload, "signature": self._sign(payload.encode())})
        self.client.rpush(f"{self.prefix}audit", record)

    def audit_log(self) -> list[dict[str, Any]]:
        entries = []
        for raw in self.client.lrange(f"{self.prefix}audit", 0, -1):
            record = json.loads(raw)
            self._verify(record["entry"].encode(), record["signature"].encode(), "audit entry")
            entries.append(json.loads(record["entry"]))
        return entries

    def clear(self) -> None:
        """Delete everything under this registry's prefix (tests and demos)."""
        for name in self.client.scan_iter(match=f"{self.prefix}*"):
            self.client.delete(name)

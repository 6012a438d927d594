"""Moving a single Redis from the key layout without hash tags to the tagged one, once.

Keys that a script, a transaction or a multi-key command touches together carry a common hash
tag (``{...}``) so that a Redis Cluster keeps them in one slot; the same names are used on a
single Redis. A deployment that ran a release without the tags has its state under the old
names: click statistics, the registry, sessions in flight, counters. Left there it would be
invisible to the new code, and a restart must lose nothing users taught, so the first start
of the new release renames it (:func:`upgrade_key_layout`, called by
:func:`~streamrank.streams.state.restore.restore_if_lost`, hence by every worker and registry
command before it reads anything). ``RENAME`` keeps each key's value and TTL.

The move is recorded under ``<prefix>key-layout``, so later starts cost one ``GET``. It needs
a single Redis (a cluster never held the old layout: its scripts were refused there) and
workers of the old release stopped, or they would go on writing the old names.

Sessions in flight are found through the due sets, which say their partition; a session that
is no longer due (learned, kept only to recognise late events) is left under its old name and
expires with it. The per-minute CTR counts and the session markers move to their groups
(:func:`~streamrank.streams.state.service_metrics.ctr_bucket`); the old global counters go to
partition 0's (the sum over partitions is what is read).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import redis

from streamrank.streams.config import Settings
from streamrank.streams.state.connections import key
from streamrank.streams.state.feature_state import move_untagged_keys
from streamrank.streams.state.service_metrics import ctr_bucket

log = logging.getLogger(__name__)

LAYOUT = 2
"""The layout this release reads: 2, the tagged one."""
REGISTRY_RECORDS = ("version-counter", "versions", "version-signatures", "pointers", "audit-log")
SHADOW_AGGREGATES = ("counts", "samples", "clicks", "interleaving", "ab:primary", "ab:shadow")
LEARNER_KINDS = ("pairs", "docstats", "applied", "state")
RANKING_METRICS = ("counts", "latency", "vectors-missing")


def layout_key(settings: Settings) -> str:
    return key(settings, "key-layout")


def upgrade_key_layout(settings: Settings, client: redis.Redis) -> dict[str, int] | None:
    """Rename this deployment's keys of the old layout (see the module docstring); how many
    per kind, or None when there was nothing to do (a cluster, or done before)."""
    if isinstance(client, redis.RedisCluster) or client.get(layout_key(settings)) is not None:
        return None
    moved: dict[str, int] = {}
    for kind, step in _steps(settings, client):
        count = step()
        if count:
            moved[kind] = count
    client.set(layout_key(settings), LAYOUT)
    if moved:
        log.warning("moved Redis keys to the hash-tagged layout: %s", moved)
    return moved


def _steps(settings: Settings, client: redis.Redis) -> Iterator[tuple[str, Callable[[], int]]]:
    yield "registry", lambda: _registry(settings, client)
    yield "learner", lambda: _learner(settings, client)
    yield "sessions", lambda: _sessions(settings, client)
    yield "metrics", lambda: _metrics(settings, client)
    yield "shadow", lambda: _shadow(settings, client)
    yield "features", lambda: move_untagged_keys(client, key(settings, "features:"))


def _rename(client: redis.Redis, old: str | bytes, new: str) -> int:
    """Rename ``old`` to ``new`` unless ``new`` exists (the new release wrote it first)."""
    return int(bool(client.renamenx(old, new)))


def _scan(client: redis.Redis, pattern: str) -> list[str]:
    """Every key matching ``pattern`` (listed first: renaming while scanning skips nothing,
    but could visit a renamed key twice)."""
    return [name.decode() for name in client.scan_iter(match=pattern, count=1000)]


def _registry(settings: Settings, client: redis.Redis) -> int:
    prefix = key(settings, "registry:")
    moved = sum(
        _rename(client, prefix + name, f"{prefix}{{registry}}:{name}")
        for name in REGISTRY_RECORDS
        if client.exists(prefix + name)
    )
    for kind in ("artifact", "artifact-signature"):
        for old in _scan(client, f"{prefix}{kind}:*"):
            digest = old.rsplit(":", 1)[1]
            if not digest.startswith("{"):
                moved += _rename(client, old, f"{prefix}{kind}:{{{digest}}}")
    return moved


def _learner(settings: Settings, client: redis.Redis) -> int:
    prefix = key(settings, "ltr:")
    moved = 0
    for kind in LEARNER_KINDS:
        for old in _scan(client, f"{prefix}{kind}:*"):
            moved += _rename(client, old, f"{prefix}{{learner}}:{old.removeprefix(prefix)}")
    return moved


def _sessions(settings: Settings, client: redis.Redis) -> int:
    learn = key(settings, "learn", "")
    moved, partitions = 0, set()
    for old_due in _scan(client, f"{learn}due:*"):
        partition = old_due.rsplit(":", 1)[1]
        tagged = f"{learn}{{p{partition}}}:"
        partitions.add(partition)
        for rid in client.zrange(old_due, 0, -1):
            session = f"{learn}session:{rid.decode()}"
            if client.exists(session):
                moved += _rename(client, session, f"{tagged}session:{rid.decode()}")
        moved += _rename(client, old_due, f"{tagged}due")
        for name in ("orphans", "orphan"):
            if client.exists(f"{learn}{name}:{partition}"):
                moved += _rename(client, f"{learn}{name}:{partition}", f"{tagged}{name}")
    for partition, offset in client.hgetall(f"{learn}offsets").items():
        partitions.add(partition.decode())
        client.set(f"{learn}{{p{partition.decode()}}}:offset", offset, nx=True)
    counts = client.hgetall(f"{learn}counts")
    for name, value in counts.items():
        client.hincrby(f"{learn}{{p0}}:counts", name.decode(), int(value))
    if counts:
        partitions.add("0")
    if partitions:
        client.sadd(f"{learn}partitions", *partitions)
    client.delete(f"{learn}offsets", f"{learn}counts")
    return moved + len(counts)


def _metrics(settings: Settings, client: redis.Redis) -> int:
    metrics = key(settings, "metrics", "")
    moved = sum(
        _rename(client, metrics + name, f"{metrics}{{rankings}}:{name}")
        for name in RANKING_METRICS
        if client.exists(metrics + name)
    )
    for old in _scan(client, f"{metrics}session-seen:*"):
        rid = old.removeprefix(f"{metrics}session-seen:")
        moved += _rename(client, old, f"{metrics}{{ctr-{ctr_bucket(rid)}}}:session-seen:{rid}")
    for old in _scan(client, f"{metrics}ctr:*"):
        ttl = client.ttl(old)
        new = f"{metrics}{{ctr-0}}:{old.removeprefix(metrics)}"  # a minute's sums: one group
        for name, value in client.hgetall(old).items():
            client.hincrby(new, name.decode(), int(value))
        if ttl > 0:
            client.expire(new, ttl)
        client.delete(old)
        moved += 1
    return moved


def _shadow(settings: Settings, client: redis.Redis) -> int:
    prefix = key(settings, "shadow:")
    moved = 0
    for aggregate in SHADOW_AGGREGATES:
        for old in _scan(client, f"{prefix}*:{aggregate}"):
            version = old.removeprefix(prefix).removesuffix(f":{aggregate}")
            if version and "{" not in version and ":" not in version:
                moved += _rename(client, old, f"{prefix}{{{version}}}:{aggregate}")
    return moved

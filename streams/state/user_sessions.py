"""Sessions of interactions in Redis: the join to impressions, closing, orphans, checkpoints.

The learn agent (:mod:`streamrank.streams.agents.learn`) is a thin Faust shell around this module,
which needs only Redis, so tests and benchmarks drive it directly.

Every key lives under ``<prefix>learn:``; those of one ``interactions`` partition ``p`` share
the hash tag ``{p<p>}``, so that a Redis Cluster keeps them in one slot (the scripts and
transactions below touch several of them at once) while the partitions spread over the shards:

========================== =====================================================================
``{p<p>}:session:<rid>``   hash: event id -> ``type|position|doc`` for each interaction of a
                           request (a request's interactions share its partition: they are keyed
                           by request id); the field ``_learned`` freezes it once it is learned
``{p<p>}:due``             sorted set: request ids with interactions, scored by when the session
                           closes (``session_close_s`` after its last new event)
``{p<p>}:orphans``         sorted set: event ids whose impression was missing, by first-seen
                           time; ``{p<p>}:orphan`` holds each one's original message for a dead
                           letter
``{p<p>}:offset``          the highest offset of the partition applied (the close barrier reads
                           it)
``{p<p>}:counts``          hash: counters (``interactions``, ``duplicates``,
                           ``sessions_learned``, ...); :meth:`SessionStore.counts` sums them
                           over the partitions
``partitions``             set: the partitions that have keys (what the sums run over)
``checkpoints``            list: the newest learner checkpoints, newest first (see
                           :class:`Checkpoints`)
========================== =====================================================================

Exactly once, with at-least-once delivery:

- a batch of interactions is applied by one Lua script per partition: each event is stored
  with ``HSETNX`` under its event id, so a replayed or duplicated event changes nothing, and
  the partition's applied offset is raised in the same step. Whether each event's impression
  is in Redis is read just before (the impression is another request's key, in another slot):
  one written in between makes the event an orphan, joined at the next orphan retry;
- a session is learned once: :meth:`SessionStore.claim` freezes it (``_learned``) but keeps it
  due until :meth:`SessionStore.finish`, and the learner applies its click statistics under
  the event id ``request_id`` atomically with a dedupe marker
  (:class:`streamrank.streams.state.learner_store.RedisLearnerStore`). A crash anywhere in between
  learns the session again, and the statistics refuse the second application;
- a session closes only behind a :class:`Barriers` barrier: every message that was in the
  partition when its close time passed has been applied, so a restarted worker re-reads its
  backlog before it closes anything, and a lagging consumer never closes a session whose
  later events are still waiting in the log.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from pydantic_core import from_json

from streamrank.models.learning.online_ranker import Impression
from streamrank.models.registry import ModelRegistry, RegistryError
from streamrank.streams.config import Settings
from streamrank.streams.events import (
    ContractError,
    DeadLetter,
    Interaction,
    Limits,
    decode_interaction,
)
from streamrank.streams.online import OnlineServing
from streamrank.streams.state.connections import key
from streamrank.streams.state.journal import checkpoint_record_name
from streamrank.streams.state.replicas import ReplicaWait
from streamrank.streams.state.scripts import queue_script

log = logging.getLogger(__name__)

LEARNED = "_learned"
CLICK_TYPES = frozenset({"click", "add_to_cart", "purchase"})
"""Interaction types that count as a click on the document; the others as a look at it."""
STATUSES = ("new", "duplicate", "late", "orphan")

# KEYS: the partition's counts, offset, due zset, orphan zset and orphan hash, then per event
# its session. ARGV: now, close_s, session ttl, event count, the offset to raise to (-1: none),
# then per event: event id, request id, payload, orphan record, 1 if its impression exists.
ACCUMULATE_SCRIPT = """
local now, close, ttl, n = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local counts = {new = 0, duplicate = 0, late = 0, orphan = 0}
local out = {}
for i = 1, n do
  local session, a = KEYS[5 + i], 5 + (i - 1) * 5
  local event_id = ARGV[a + 1]
  local status
  if ARGV[a + 5] == '0' then
    status = 'orphan'
    if redis.call('ZADD', KEYS[4], 'NX', now, event_id) == 1 then
      redis.call('HSET', KEYS[5], event_id, ARGV[a + 4])
      counts.orphan = counts.orphan + 1
    end
  elseif redis.call('HEXISTS', session, '_learned') == 1 then
    if redis.call('HEXISTS', session, event_id) == 1 then
      status = 'duplicate'
    else
      status = 'late'
    end
    counts[status] = counts[status] + 1
  elseif redis.call('HSETNX', session, event_id, ARGV[a + 3]) == 1 then
    redis.call('EXPIRE', session, ttl)
    redis.call('ZADD', KEYS[3], now + close, ARGV[a + 2])
    status = 'new'
    counts.new = counts.new + 1
  else
    status = 'duplicate'
    counts.duplicate = counts.duplicate + 1
  end
  out[i] = status
end
local offset = tonumber(ARGV[5])
if offset >= 0 and offset > tonumber(redis.call('GET', KEYS[2]) or '-1') then
  redis.call('SET', KEYS[2], offset)
end
redis.call('HINCRBY', KEYS[1], 'interactions', counts.new)
redis.call('HINCRBY', KEYS[1], 'duplicates', counts.duplicate)
redis.call('HINCRBY', KEYS[1], 'late', counts.late)
redis.call('HINCRBY', KEYS[1], 'orphans', counts.orphan)
return out
"""

# KEYS: the partition's due zset. ARGV: close-before time, limit, the partition's session key
# prefix (the sessions it names share the due zset's hash tag, hence its slot), session ttl.
# Returns, per due session: request id, its events as a flat list.
CLAIM_SCRIPT = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, rid in ipairs(ids) do
  local session = ARGV[3] .. rid
  redis.call('HSET', session, '_learned', '1')
  redis.call('EXPIRE', session, ARGV[4])
  table.insert(out, {rid, redis.call('HGETALL', session)})
end
return out
"""


@dataclass(frozen=True)
class Incoming:
    """One decoded interaction with where it came from."""

    interaction: Interaction
    raw: bytes
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True)
class Claimed:
    """A session taken for learning: its request id, impression record and events."""

    request_id: str
    record: dict[str, Any] | None
    events: dict[str, str]


@dataclass(frozen=True)
class Orphan:
    """An interaction that waits for its impression, as stored in ``orphan:<p>``."""

    event_id: str
    request_id: str
    payload: str
    raw: bytes
    topic: str
    partition: int
    offset: int
    first_seen: float

    def dead_letter(self, window_s: float) -> DeadLetter:
        """The dead letter for an orphan whose window has passed (the original, whole)."""
        error = f"no impression for request {self.request_id!r} within {window_s:g} s"
        return dead_letter(self.raw, self.topic, self.partition, self.offset, "orphan", error)


def dead_letter(
    raw: bytes, topic: str, partition: int, offset: int, reason: str, error: str
) -> DeadLetter:
    """A learn-agent dead letter for a message that decoded but cannot be learned from."""
    return DeadLetter(
        original_b64=base64.b64encode(raw).decode("ascii"),
        topic=topic,
        partition=partition,
        offset=offset,
        reason=reason,
        error=error,
        agent="learn",
    )


def late_letters(batch: Sequence[Incoming], statuses: Sequence[str]) -> list[DeadLetter]:
    """Dead letters for interactions whose session had been learned already (``late``)."""
    return [
        dead_letter(
            item.raw,
            item.topic,
            item.partition,
            item.offset,
            "late",
            f"session {item.interaction.request_id!r} was learned before this interaction came",
        )
        for item, status in zip(batch, statuses, strict=True)
        if status == "late"
    ]


def payload_of(interaction: Interaction) -> str:
    """What a session keeps of an interaction: ``type|position|doc``."""
    position = "" if interaction.position is None else str(interaction.position)
    return f"{interaction.type}|{position}|{interaction.doc_id}"


def orphan_record(incoming: Incoming) -> bytes:
    """What an orphan keeps: where it came from and the original message, ``p|offset|topic|raw``
    (topic names cannot hold ``|``)."""
    where = f"{incoming.partition}|{incoming.offset}|{incoming.topic}|".encode()
    return where + incoming.raw


def parse_orphan(event_id: str, record: bytes, first_seen: float) -> Orphan:
    partition, offset, topic, raw = record.split(b"|", 3)
    try:
        interaction = decode_interaction(raw, Limits())  # as it was decoded when it came
        request_id, payload = interaction.request_id, payload_of(interaction)
    except ContractError as error:
        # Stored by a release that decoded otherwise: it can join nothing, so it waits out
        # the orphan window and is dead-lettered whole, instead of failing every learn tick.
        log.warning("orphan %s no longer decodes (%s); it will be dead-lettered", event_id, error)
        request_id, payload = "", ""
    return Orphan(
        event_id=event_id,
        request_id=request_id,
        payload=payload,
        raw=raw,
        topic=topic.decode(),
        partition=int(partition),
        offset=int(offset),
        first_seen=first_seen,
    )


def clicked_docs(claimed: Claimed) -> list[str]:
    """The documents clicked in a closed session, in the order the events arrived."""
    docs = []
    for event_id, payload in claimed.events.items():
        if event_id == LEARNED:
            continue
        kind, _, doc = payload.split("|", 2)
        if kind in CLICK_TYPES and doc not in docs:
            docs.append(doc)
    return docs


def build_impression(claimed: Claimed) -> Impression | None:
    """The learner's :class:`Impression` for a closed session (None: nothing to learn).

    The shown list is the served list down to the deepest result the user interacted with;
    events on documents that were not served are ignored. Each shown document keeps the
    prior-model features it was served with.
    """
    record = claimed.record
    if record is None or record.get("learn") is False:  # experiment traffic: not learned from
        return None
    items = record.get("items", [])
    rank_of = {item["doc_id"]: rank for rank, item in enumerate(items)}
    seen: set[int] = set()
    clicked: set[int] = set()
    for event_id, payload in claimed.events.items():
        if event_id == LEARNED:
            continue
        kind, _, doc = payload.split("|", 2)
        rank = rank_of.get(doc)
        if rank is None:
            continue
        seen.add(rank)
        if kind in CLICK_TYPES:
            clicked.add(rank)
    if not seen:
        return None
    depth = max(seen) + 1
    return Impression(
        event_id=claimed.request_id,
        query=record["query"],
        docs=tuple(items[r]["doc_id"] for r in range(depth)),
        clicked=tuple(sorted(clicked)),
        features=tuple(items[r].get("ranker_features", {}) for r in range(depth)),
        randomized=bool(record.get("randomized", False)),
    )


class Barriers:
    """When the sessions of a partition may close: behind a (time, highwater) barrier.

    At a tick without a barrier, the partition's end offset ``highwater`` is read at ``now``
    and becomes the barrier. Sessions due by ``now`` close once every message below
    ``highwater`` has been applied: any of their events that was already in the log by then
    has been joined. A new barrier is taken at the next tick.

    Examples
    --------
    >>> barriers = Barriers()
    >>> barriers.close_before(0, now=10.0, highwater=100, applied=49)  # 50 still to apply
    >>> barriers.close_before(0, now=11.0, highwater=120, applied=99)  # barrier 100 reached
    10.0
    >>> barriers.close_before(0, now=12.0, highwater=120, applied=119)
    12.0
    """

    def __init__(self) -> None:
        self._pending: dict[int, tuple[float, int]] = {}

    def close_before(
        self, partition: int, now: float, highwater: int, applied: int
    ) -> float | None:
        """The time before which due sessions may close now, or None (not caught up yet)."""
        at, target = self._pending.setdefault(partition, (now, highwater))
        if applied + 1 < target:
            return None
        del self._pending[partition]
        return at

    def keep_only(self, partitions: Iterable[int]) -> None:
        """Forget barriers of partitions this worker no longer owns."""
        owned = set(partitions)
        self._pending = {p: b for p, b in self._pending.items() if p in owned}


class SessionStore:
    """Interactions by session, due sessions and orphans, in Redis.

    Parameters
    ----------
    client
        The Redis client (synchronous: callers on an event loop use a thread).
    settings
        Key prefix, ``session_close_s``, ``orphan_window_s`` and ``impression_ttl_s``.
    """

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self._accumulate = client.register_script(ACCUMULATE_SCRIPT)
        self._claim = client.register_script(CLAIM_SCRIPT)
        self._impression_prefix = key(settings, "impression", "")
        self.replicas = ReplicaWait.from_settings(settings)

    # -- keys -----------------------------------------------------------------------------

    def key(self, *parts: str | int) -> str:
        """A key of the store that belongs to no partition (``checkpoints``, ...)."""
        return key(self.settings, "learn", *map(str, parts))

    def partition_key(self, partition: int, *parts: str) -> str:
        """A key of partition ``partition``: under its hash tag ``{p<partition>}``."""
        return self.key(f"{{p{partition}}}", *parts)

    def session_key(self, partition: int, request_id: str) -> str:
        return self.partition_key(partition, "session", request_id)

    def impression_key(self, request_id: str) -> str:
        return self._impression_prefix + request_id

    @property
    def partitions_key(self) -> str:
        return self.key("partitions")

    def partitions(self) -> list[int]:
        """The partitions that have keys, sorted."""
        return sorted(int(p) for p in self.client.smembers(self.partitions_key))

    # -- accumulating ---------------------------------------------------------------------

    def _script_input(
        self, partition: int, batch: Sequence[Incoming], found: Sequence[bool], offset: int
    ) -> tuple[list[str], list[Any]]:
        keys = [
            self.partition_key(partition, name)
            for name in ("counts", "offset", "due", "orphans", "orphan")
        ]
        args: list[Any] = [
            repr(time.time()),
            repr(self.settings.session_close_s),
            self.settings.impression_ttl_s,
            len(batch),
            offset,
        ]
        for item, has_impression in zip(batch, found, strict=True):
            rid = item.interaction.request_id
            keys.append(self.session_key(partition, rid))
            args += [item.interaction.event_id, rid, payload_of(item.interaction)]
            args += [orphan_record(item), int(has_impression)]
        return keys, args

    def _impressions_found(self, request_ids: Sequence[str]) -> list[bool]:
        """Whether each request's impression is in Redis (one pipelined read)."""
        pipe = self.client.pipeline(transaction=False)
        for request_id in request_ids:
            pipe.exists(self.impression_key(request_id))
        return [bool(found) for found in pipe.execute()] if request_ids else []

    def accumulate(
        self, batch: Sequence[Incoming], offsets: Mapping[int, int] | None = None
    ) -> list[str]:
        """Apply a batch, atomically per partition; one status per event (see
        :data:`STATUSES`), in the batch's order.

        ``offsets`` (partition -> highest offset in the batch, malformed messages included)
        raise the applied offsets in the same step. It blocks: the learn agent runs it in an
        executor thread, because the synchronous client packs the script's arguments (ten
        per event) with hiredis in C, where the asyncio client packs them in Python, which
        cost more than the script itself.
        """
        offsets = offsets or {}
        if not batch and not offsets:
            return []
        found = self._impressions_found([item.interaction.request_id for item in batch])
        members: dict[int, list[int]] = {p: [] for p in offsets}  # partition -> batch indices
        for i, item in enumerate(batch):
            members.setdefault(item.partition, []).append(i)
        pipe = self.client.pipeline(transaction=False)
        pipe.sadd(self.partitions_key, *members)
        for partition, indices in members.items():
            keys, args = self._script_input(
                partition,
                [batch[i] for i in indices],
                [found[i] for i in indices],
                offsets.get(partition, -1),
            )
            queue_script(pipe, self._accumulate, keys, args)
        _, *replies = pipe.execute()
        # before the caller commits the batch's offsets: a master failover must not lose it
        written = [self.partition_key(p, "offset") for p in members]
        self.replicas.after_writes(self.client, [self.partitions_key, *written])
        statuses = [""] * len(batch)
        for indices, reply in zip(members.values(), replies, strict=True):
            for i, status in zip(indices, reply, strict=True):
                statuses[i] = status.decode()
        return statuses

    # -- closing --------------------------------------------------------------------------

    def claim(self, partition: int, before: float, limit: int) -> list[Claimed]:
        """Freeze and read up to ``limit`` sessions of a partition that were due ``before``,
        with their impressions (read after the claim: they are other requests' keys)."""
        rows = self._claim(
            keys=[self.partition_key(partition, "due")],
            args=[
                repr(before),
                limit,
                self.session_key(partition, ""),
                self.settings.impression_ttl_s,
            ],
        )
        if not rows:
            return []
        pipe = self.client.pipeline(transaction=False)
        for rid, _ in rows:
            pipe.get(self.impression_key(rid.decode()))
        claimed = []
        for (rid, flat), record in zip(rows, pipe.execute(), strict=True):
            events = {flat[i].decode(): flat[i + 1].decode() for i in range(0, len(flat), 2)}
            # pydantic's JSON parser: the same values as json.loads, in less than half the time
            # (an impression holds every shown result's features: most of a claim's cost)
            claimed.append(Claimed(rid.decode(), from_json(record) if record else None, events))
        return claimed

    def finish(self, partition: int, claimed: Sequence[Claimed], counts: Mapping[str, int]) -> None:
        """Take learned sessions off the due set and count what was learned (one
        transaction: the partition's keys share a slot)."""
        pipe = self.client.pipeline(transaction=True)
        if claimed:
            pipe.zrem(self.partition_key(partition, "due"), *[c.request_id for c in claimed])
        for name, value in counts.items():
            if value:
                pipe.hincrby(self.partition_key(partition, "counts"), name, value)
        pipe.execute()

    # -- orphans --------------------------------------------------------------------------

    def orphans(self, partition: int, limit: int = 1000) -> list[Orphan]:
        """The oldest orphans of a partition, with their stored originals."""
        orphans_key = self.partition_key(partition, "orphans")
        members = self.client.zrange(orphans_key, 0, limit - 1, withscores=True)
        if not members:
            return []
        ids = [member for member, _ in members]
        records = self.client.hmget(self.partition_key(partition, "orphan"), ids)
        orphans = []
        for (event_id, first_seen), record in zip(members, records, strict=True):
            if record is None:  # the record went with a finished retry: only the member is left
                self.client.zrem(orphans_key, event_id)
                continue
            orphans.append(parse_orphan(event_id.decode(), record, float(first_seen)))
        return orphans

    def with_impressions(self, orphans: Sequence[Orphan]) -> list[bool]:
        """Whether each orphan's impression is in Redis now."""
        pipe = self.client.pipeline(transaction=False)
        for orphan in orphans:
            pipe.exists(self.impression_key(orphan.request_id))
        return [bool(found) for found in pipe.execute()]

    def forget_orphans(self, partition: int, orphans: Sequence[Orphan], counter: str) -> None:
        """Remove resolved or dead-lettered orphans and count them under ``counter``."""
        if not orphans:
            return
        ids = [orphan.event_id for orphan in orphans]
        pipe = self.client.pipeline(transaction=True)
        pipe.zrem(self.partition_key(partition, "orphans"), *ids)
        pipe.hdel(self.partition_key(partition, "orphan"), *ids)
        pipe.hincrby(self.partition_key(partition, "counts"), counter, len(orphans))
        pipe.execute()

    # -- reading --------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """All counters, as integers, summed over the partitions."""
        pipe = self.client.pipeline(transaction=False)
        for partition in self.partitions():
            pipe.hgetall(self.partition_key(partition, "counts"))
        totals: dict[str, int] = {}
        for raw in pipe.execute():
            for name, value in raw.items():
                totals[name.decode()] = totals.get(name.decode(), 0) + int(value)
        return totals

    def applied_offsets(self) -> dict[int, int]:
        """Partition -> the highest offset applied (partitions with none are left out)."""
        partitions = self.partitions()
        pipe = self.client.pipeline(transaction=False)
        for partition in partitions:
            pipe.get(self.partition_key(partition, "offset"))
        offsets = zip(partitions, pipe.execute(), strict=True)
        return {p: int(offset) for p, offset in offsets if offset is not None}


def orphan_as_incoming(orphan: Orphan) -> Incoming:
    """A resolved orphan, ready to be accumulated like a fresh interaction."""
    kind, position, doc = orphan.payload.split("|", 2)
    interaction = Interaction(
        event_id=orphan.event_id,
        request_id=orphan.request_id,
        doc_id=doc,
        type=kind,  # type: ignore[arg-type]
        position=int(position) if position else None,
    )
    return Incoming(interaction, orphan.raw, orphan.topic, orphan.partition, orphan.offset)


def learn_sessions(online: OnlineServing, claimed: Sequence[Claimed]) -> dict[str, int]:
    """Learn each claimed session once; the counters to add to ``counts``.

    ``sessions_replayed`` are sessions whose statistics had been applied before (a claim
    repeated after a crash); ``sessions_expired`` lost their impression before closing;
    ``sessions_empty`` had no event on a served document.
    """
    impressions = [build_impression(c) for c in claimed]
    todo = [imp for imp in impressions if imp is not None]
    learned = online.learn(todo)
    done = [imp for imp, ok in zip(todo, learned, strict=True) if ok]
    expired = sum(1 for c in claimed if c.record is None)
    return {
        "sessions_learned": len(done),
        "sessions_replayed": len(todo) - len(done),
        "sessions_expired": expired,
        "sessions_empty": len(claimed) - len(todo) - expired,
        "impressions_learned": sum(len(imp.docs) for imp in done),
        "clicks_learned": sum(len(imp.clicked) for imp in done),
    }


# -- checkpoints -------------------------------------------------------------------------------


class Checkpoints:
    """The learner's model state as signed registry artifacts, newest first.

    A checkpoint is one JSON artifact: the ranker's ``state_dict()`` (River prior, satisfaction
    table, position-bias estimates), how many sessions it has learned and the applied offsets
    of the ``interactions`` partitions it covers. The list ``checkpoints`` keeps the newest
    ``keep``; older artifacts are deleted. Loading takes the newest one whose hash and
    signature verify, and records the load under ``checkpoint-loads``.

    When the registry has a journal (:mod:`streamrank.streams.state.journal`), the list is
    journaled too, whole, as ``checkpoints/<list key>``, before Redis is changed (the artifact
    itself is journaled by the registry): a Redis that comes back empty gets the list back
    from ``streamrank state restore``, and the learner resumes from its newest checkpoint.
    """

    def __init__(self, store: SessionStore, registry: ModelRegistry, keep: int = 5) -> None:
        self.store = store
        self.registry = registry
        self.keep = keep

    @property
    def list_key(self) -> str:
        return self.store.key("checkpoints")

    @property
    def loads_key(self) -> str:
        return self.store.key("checkpoint-loads")

    def save(self, online: OnlineServing) -> dict[str, Any]:
        """Write a checkpoint of ``online``'s model; returns its pointer record."""
        state = online.state_dict()
        record: dict[str, Any] = {
            "sessions_learned": online.sessions_learned,
            "offsets": self.store.applied_offsets(),
            "created_at": time.time(),
            "pid": os.getpid(),
        }
        blob = json.dumps(record | {"state": state}).encode()
        record["digest"] = self.registry.put_artifact(blob)
        kept, dropped = self._push(json.dumps(record))
        for digest in {r["digest"] for r in dropped} - {r["digest"] for r in kept}:
            self.registry.delete_artifact(digest)
        return record

    def _push(self, raw: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Put ``raw`` first in the list, keeping ``keep``; the (kept, dropped) records.

        The new list is journaled before it is written, and written only if nobody changed
        the list in between (``WATCH``), else computed again: so the journal's last list is
        the one Redis holds, even with several workers checkpointing at once.
        """
        with self.store.client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(self.list_key)
                    current = pipe.lrange(self.list_key, 0, -1)
                    kept = [raw.encode(), *current][: self.keep]
                    dropped = current[self.keep - 1 :]
                    self._journal([json.loads(entry) for entry in kept])
                    pipe.multi()
                    pipe.delete(self.list_key)
                    pipe.rpush(self.list_key, *kept)
                    pipe.execute()
                except redis.WatchError:
                    continue
                return [json.loads(entry) for entry in kept], [json.loads(e) for e in dropped]

    def _journal(self, records: list[dict[str, Any]]) -> None:
        if self.registry.journal is not None:
            name = checkpoint_record_name(self.list_key)
            self.registry.journal.write(name, json.dumps(records).encode())

    def records(self) -> list[dict[str, Any]]:
        """The pointer records, newest first."""
        return [json.loads(raw) for raw in self.store.client.lrange(self.list_key, 0, -1)]

    def load_latest(self, online: OnlineServing) -> dict[str, Any] | None:
        """Load the newest checkpoint that verifies into ``online``; its record, or None."""
        for record in self.records():
            try:
                blob = self.registry.get_artifact(record["digest"])
            except RegistryError as error:
                log.error("refusing learner checkpoint %s: %s", record["digest"], error)
                continue
            online.load_state_dict(json.loads(blob)["state"])
            loaded = {"digest": record["digest"], "pid": os.getpid(), "at": time.time()}
            self.store.client.lpush(self.loads_key, json.dumps(loaded))
            self.store.client.ltrim(self.loads_key, 0, 99)
            log.info(
                "loaded learner checkpoint %s (%d sessions learned, offsets %s)",
                record["digest"],
                record["sessions_learned"],
                record["offsets"],
            )
            return record
        return None

    def loads(self) -> list[dict[str, Any]]:
        """Which checkpoints workers loaded, newest first."""
        return [json.loads(raw) for raw in self.store.client.lrange(self.loads_key, 0, -1)]

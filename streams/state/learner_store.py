"""The online learner's click statistics in Redis, shared by every worker.

Implements :class:`streamrank.models.learning.online_ranker.LearnerStore`. Per-(query, document)
statistics live in one hash per query, per-document totals in one hash per document; every write
refreshes a TTL, so pairs nobody clicks any more expire instead of growing without bound (the same
eviction the in-memory store does by size). Writes are one Lua script
(:meth:`RedisLearnerStore.apply_many`): the check that an event was not applied before and all its
increments happen atomically, so a replayed interaction (a crash before the offset commit, a
duplicate from the producer) is applied exactly once.

Every key is ``<prefix>{learner}:<name>`` (``pairs:<query digest>``, ``docstats:<doc>``,
``applied:<event>``, ``state:<name>``): one hash tag for the whole store, so a Redis Cluster
keeps it in one slot. The apply script must check an event's marker and add to the pair
hash of its query and to the total of every document it shows, all in one step, and the
documents of one session are anywhere in the catalogue: no smaller group holds what one step
touches. The price is that a cluster serves the whole store from one shard (its replicas can
take the reads).

:class:`BatchingStore` wraps it for the learn agent: one prefetch and one flush per batch of
sessions instead of two round trips per session.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import redis

from streamrank.models.learning.online_ranker import Stats
from streamrank.streams.state.replicas import ReplicaWait
from streamrank.streams.state.scripts import queue_script

FIELDS = len(Stats().to_list())
FIELD_NUMBERS = range(1, FIELDS + 1)
APPLY_CHUNK = 100
"""Events per apply script. Redis serves no other client while a script runs, so a chunk
must stay short enough not to stall the other clients; larger chunks share more of their
sums, so they cost less Redis time than one script per session."""

# KEYS: the store's tagged prefix, not a key itself: it routes the script to the slot of every
# key the script builds from it (they share its hash tag, so a cluster allows them).
# ARGV: ttl, then per event: event id, query digest, number of deltas, then per
# delta: doc id, how many of its fields are not zero, then each such field's number and
# increment. Returns 1 per event applied now, 0 per event applied before (or earlier in the
# same call). The increments of the events applied now are summed per hash field (sessions
# of one query share most of their documents), added to the stored totals and written with
# one HSET per hash. Everything is read and checked before the first write: Redis does not
# undo a script that fails half-way, so a bad increment must fail it before it writes.
APPLY_SCRIPT = """
local prefix, ttl, SLICE = KEYS[1], ARGV[1], 1000
local sums, order, touched, markers, out = {}, {}, {}, {}, {}
local function add(key, name, value)
  if value == nil or value ~= value or value == math.huge or value == -math.huge then
    error('increment is not a finite number: ' .. tostring(value))
  end
  local hash = sums[key]
  if hash == nil then
    hash = {}
    sums[key] = hash
    table.insert(order, key)
  end
  hash[name] = (hash[name] or 0) + value
end
local at = 2
while at <= #ARGV do
  local marker = prefix .. 'applied:' .. ARGV[at]
  local pair_key = prefix .. 'pairs:' .. ARGV[at + 1]
  local count = tonumber(ARGV[at + 2])
  local fresh = markers[marker] == nil and redis.call('EXISTS', marker) == 0
  at = at + 3
  if fresh then
    markers[marker] = true
    touched[pair_key] = true
  end
  for _ = 1, count do
    local doc, nonzero = ARGV[at], tonumber(ARGV[at + 1])
    if fresh then
      local doc_key = prefix .. 'docstats:' .. doc
      touched[doc_key] = true
      for i = 0, nonzero - 1 do
        local field, value = ARGV[at + 2 + 2 * i], tonumber(ARGV[at + 3 + 2 * i])
        add(pair_key, doc .. ':' .. field, value)
        add(doc_key, field, value)
      end
    end
    at = at + 2 + 2 * nonzero
  end
  table.insert(out, fresh and 1 or 0)
end
-- read every total to change (in slices: unpack has a stack limit), then write each hash
-- with one HSET: far cheaper than an HINCRBYFLOAT per field
local totals = {}
for k, key in ipairs(order) do
  local names, values = {}, {}
  for name, value in pairs(sums[key]) do
    table.insert(names, name)
    table.insert(values, value)
  end
  local flat = {}
  for first = 1, #names, SLICE do
    local last = math.min(first + SLICE - 1, #names)
    local current = redis.call('HMGET', key, unpack(names, first, last))
    for i = first, last do
      local stored, base = current[i - first + 1], 0
      if stored then
        base = tonumber(stored)
        if base == nil then
          error('not a number: ' .. key .. ' ' .. names[i] .. ' = ' .. stored)
        end
      end
      -- %.17g: the exact double; redis.call refuses Lua floats
      table.insert(flat, names[i])
      table.insert(flat, string.format('%.17g', base + values[i]))
    end
  end
  totals[k] = flat
end
for marker in pairs(markers) do
  redis.call('SET', marker, '1', 'EX', ttl)
end
for k, key in ipairs(order) do
  local flat = totals[k]
  for first = 1, #flat, 2 * SLICE do
    redis.call('HSET', key, unpack(flat, first, math.min(first + 2 * SLICE - 1, #flat)))
  end
end
for key in pairs(touched) do
  redis.call('EXPIRE', key, ttl)
end
return out
"""


def query_digest(query: str) -> str:
    return hashlib.sha1(query.encode()).hexdigest()[:20]


class RedisLearnerStore:
    """Click evidence and learner state under ``prefix``; entries live ``ttl_s`` after a write.

    ``reads`` is the client of the unbatched reads (:meth:`pair_stats`, :meth:`doc_stats`:
    what serving asks), ``client`` that of the scripts and batched reads of the learn path;
    they differ in a worker, where serving reads with short timeouts and the learn path's
    scripts may take longer. Without ``reads`` both use ``client``. ``replicas``: how many
    replicas of a Redis Cluster master must confirm each batch of applied statistics (see
    :mod:`streamrank.streams.state.replicas`); none by default.
    """

    def __init__(
        self,
        client: redis.Redis,
        prefix: str,
        ttl_s: int,
        reads: redis.Redis | None = None,
        replicas: ReplicaWait | None = None,
    ) -> None:
        self.client = client
        self.replicas = replicas or ReplicaWait(replicas=0, timeout_s=1.0)
        self.reads = reads if reads is not None else client
        self.prefix = prefix
        self.tagged = f"{prefix}{{learner}}:"
        """What every key starts with: the prefix and the store's hash tag."""
        self.ttl_s = ttl_s
        self._apply = client.register_script(APPLY_SCRIPT)

    def _pair_key(self, query: str) -> str:
        return f"{self.tagged}pairs:{query_digest(query)}"

    def _doc_key(self, doc: str) -> str:
        return f"{self.tagged}docstats:{doc}"

    def marker_key(self, event_id: str) -> str:
        """The key that says ``event_id`` was applied (it lives ``ttl_s``)."""
        return f"{self.tagged}applied:{event_id}"

    def pair_stats(self, query: str, docs: Sequence[str]) -> list[Stats]:
        if not docs:
            return []
        fields = [f"{doc}:{f}" for doc in docs for f in range(1, FIELDS + 1)]
        values = self.reads.hmget(self._pair_key(query), fields)
        return [_stats(values[i * FIELDS : (i + 1) * FIELDS]) for i in range(len(docs))]

    def doc_stats(self, docs: Sequence[str]) -> list[Stats]:
        pipe = self.reads.pipeline(transaction=False)
        for doc in docs:
            pipe.hmget(self._doc_key(doc), [str(f) for f in range(1, FIELDS + 1)])
        return [_stats(values) for values in pipe.execute()]

    def apply(self, event_id: str, query: str, deltas: Sequence[tuple[str, Stats]]) -> bool:
        return self.apply_many([(event_id, query, deltas)])[0]

    def apply_many(
        self, events: Sequence[tuple[str, str, Sequence[tuple[str, Stats]]]]
    ) -> list[bool]:
        """:meth:`apply` for many ``(event_id, query, deltas)`` in one round trip: one atomic
        script per :data:`APPLY_CHUNK` events. An event id that comes twice is applied at its
        first."""
        if not events:
            return []
        pipe = self.client.pipeline(transaction=False)
        for start in range(0, len(events), APPLY_CHUNK):
            args: list[Any] = [self.ttl_s]
            for event_id, query, deltas in events[start : start + APPLY_CHUNK]:
                args += [event_id, query_digest(query), len(deltas)]
                for doc, delta in deltas:
                    args += [doc, *_nonzero(delta)]
            queue_script(pipe, self._apply, [self.tagged], args)
        replies = pipe.execute()
        # before the sessions are marked learned: a master failover must not lose the stats
        self.replicas.after_writes(self.client, [self.tagged])
        return [bool(applied) for chunk in replies for applied in chunk]

    def prefetch(
        self, wanted: Sequence[tuple[str, str, Sequence[str]]]
    ) -> tuple[list[bool], list[list[Stats]]]:
        """For ``(event_id, query, docs)`` triples: whether each event was applied, and the
        pair statistics of its documents; one round trip (one read per distinct query)."""
        if not wanted:
            return [], []
        docs_of: dict[str, dict[str, None]] = {}  # query -> its documents, in first-seen order
        for _, query, docs in wanted:
            if docs:  # HMGET needs a field
                docs_of.setdefault(query, {}).update(dict.fromkeys(docs))
        pipe = self.client.pipeline(transaction=False)
        # One MGET: the markers share the store's slot. Sent as a raw command because a
        # cluster pipeline refuses its mget() (meant for keys of many slots) outright.
        pipe.execute_command("MGET", *[self.marker_key(event_id) for event_id, _, _ in wanted])
        for query, docs in docs_of.items():
            pipe.hmget(self._pair_key(query), [f"{d}:{f}" for d in docs for f in FIELD_NUMBERS])
        markers, *replies = pipe.execute()
        known: dict[tuple[str, str], Stats] = {}
        for (query, docs), values in zip(docs_of.items(), replies, strict=True):
            for i, doc in enumerate(docs):
                known[(query, doc)] = _stats(values[i * FIELDS : (i + 1) * FIELDS])
        stats = [[Stats(*known[(q, d)].to_list()) for d in docs] for _, q, docs in wanted]
        return [marker is not None for marker in markers], stats

    def get_state(self, name: str) -> dict[str, Any] | None:
        raw = self.client.get(f"{self.tagged}state:{name}")
        return json.loads(raw) if raw else None

    def put_state(self, name: str, state: dict[str, Any]) -> None:
        self.client.set(f"{self.tagged}state:{name}", json.dumps(state))


def _nonzero(delta: Stats) -> list[Any]:
    """A delta as the apply script reads it: how many fields are not zero, then each one's
    number and value (most fields of a delta are zero: a shown document is skipped at one
    rank, clicked or not, ...)."""
    fields = [(f, repr(float(v))) for f, v in enumerate(delta.to_list(), start=1) if v != 0]
    return [len(fields), *(item for field in fields for item in field)]


def _stats(values: Sequence[bytes | None]) -> Stats:
    return Stats(*(float(value) if value is not None else 0.0 for value in values))


class BatchingStore:
    """A :class:`RedisLearnerStore` whose reads and writes can be batched per thread.

    Outside :meth:`batch` every call goes straight to Redis. Inside it (on the thread that
    opened it), ``pair_stats`` reads from one pipelined prefetch, ``apply`` checks the
    prefetched dedupe markers, updates the prefetched statistics and defers the write, and
    leaving the block applies every deferred write in one pipeline (each still the atomic,
    idempotent script). A learner session then costs no Redis round trip of its own.

    Other threads (the serving ones) keep reading Redis directly, so they see a batch's
    statistics when it is flushed, milliseconds later.
    """

    def __init__(self, inner: RedisLearnerStore) -> None:
        self.inner = inner
        self._local = threading.local()
        self.raced = 0
        """Deferred writes Redis refused because another worker applied the event first."""

    def pair_stats(self, query: str, docs: Sequence[str]) -> list[Stats]:
        batch: _Batch | None = getattr(self._local, "batch", None)
        if batch is None or any((query, doc) not in batch.pairs for doc in docs):
            return self.inner.pair_stats(query, docs)
        return [Stats(*batch.pairs[(query, doc)].to_list()) for doc in docs]

    def doc_stats(self, docs: Sequence[str]) -> list[Stats]:
        return self.inner.doc_stats(docs)

    def apply(self, event_id: str, query: str, deltas: Sequence[tuple[str, Stats]]) -> bool:
        batch: _Batch | None = getattr(self._local, "batch", None)
        if batch is None:
            return self.inner.apply(event_id, query, deltas)
        if event_id in batch.applied:
            return False
        batch.applied.add(event_id)
        batch.pending.append((event_id, query, list(deltas)))
        for doc, delta in deltas:
            batch.pairs.setdefault((query, doc), Stats()).add(delta)
        return True

    def get_state(self, name: str) -> dict[str, Any] | None:
        return self.inner.get_state(name)

    def put_state(self, name: str, state: dict[str, Any]) -> None:
        self.inner.put_state(name, state)

    @contextmanager
    def batch(self, wanted: Sequence[tuple[str, str, Sequence[str]]]) -> Iterator[None]:
        """Prefetch for ``(event_id, query, docs)`` triples; flush the deferred writes on exit.

        An exception inside the block discards the deferred writes (nothing was applied, so
        the same events can be learned again).
        """
        applied, stats = self.inner.prefetch(wanted)
        batch = _Batch(applied={e for (e, _, _), done in zip(wanted, applied, strict=True) if done})
        for (_, query, docs), values in zip(wanted, stats, strict=True):
            for doc, value in zip(docs, values, strict=True):
                batch.pairs[(query, doc)] = value
        self._local.batch = batch
        try:
            yield
        finally:
            self._local.batch = None
        if batch.pending:
            self.raced += self.inner.apply_many(batch.pending).count(False)


@dataclass
class _Batch:
    applied: set[str] = field(default_factory=set)
    pairs: dict[tuple[str, str], Stats] = field(default_factory=dict)
    pending: list[tuple[str, str, list[tuple[str, Stats]]]] = field(default_factory=list)

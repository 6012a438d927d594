"""The online learner's click statistics in Redis, shared by every worker.

Implements :class:`models.online_ranker.LearnerStore`. Per-(query, document) statistics live in
one hash per query, per-document totals in one hash per document; every write refreshes a TTL,
so pairs nobody clicks any more expire instead of growing without bound (the same eviction the
in-memory store does by size). ``apply`` is one Lua script: the check that an event was not
applied before and all its increments happen atomically, so a replayed interaction (a crash
before the offset commit, a duplicate from the producer) is applied exactly once.

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

from models.online_ranker import Stats

FIELDS = len(Stats().to_list())

# KEYS: event marker, pair hash, then one document hash per delta.
# ARGV: ttl, number of deltas, fields per delta, then per delta: doc id and its increments.
APPLY_SCRIPT = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  return 0
end
local count = tonumber(ARGV[2])
local fields = tonumber(ARGV[3])
local at = 4
for i = 1, count do
  local doc = ARGV[at]
  for f = 1, fields do
    local value = ARGV[at + f]  -- passed on as a string: redis.call refuses Lua floats
    if tonumber(value) ~= 0 then
      redis.call('HINCRBYFLOAT', KEYS[2], doc .. ':' .. f, value)
      redis.call('HINCRBYFLOAT', KEYS[2 + i], f, value)
    end
  end
  redis.call('EXPIRE', KEYS[2 + i], ARGV[1])
  at = at + fields + 1
end
redis.call('EXPIRE', KEYS[2], ARGV[1])
return 1
"""


def query_digest(query: str) -> str:
    return hashlib.sha1(query.encode()).hexdigest()[:20]


class RedisLearnerStore:
    """Click evidence and learner state under ``prefix``; entries live ``ttl_s`` after a write."""

    def __init__(self, client: redis.Redis, prefix: str, ttl_s: int) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl_s = ttl_s
        self._apply = client.register_script(APPLY_SCRIPT)

    def _pair_key(self, query: str) -> str:
        return f"{self.prefix}pairs:{query_digest(query)}"

    def _doc_key(self, doc: str) -> str:
        return f"{self.prefix}docstats:{doc}"

    def pair_stats(self, query: str, docs: Sequence[str]) -> list[Stats]:
        if not docs:
            return []
        fields = [f"{doc}:{f}" for doc in docs for f in range(1, FIELDS + 1)]
        values = self.client.hmget(self._pair_key(query), fields)
        return [_stats(values[i * FIELDS : (i + 1) * FIELDS]) for i in range(len(docs))]

    def doc_stats(self, docs: Sequence[str]) -> list[Stats]:
        pipe = self.client.pipeline(transaction=False)
        for doc in docs:
            pipe.hmget(self._doc_key(doc), [str(f) for f in range(1, FIELDS + 1)])
        return [_stats(values) for values in pipe.execute()]

    def apply(self, event_id: str, query: str, deltas: Sequence[tuple[str, Stats]]) -> bool:
        keys, args = self._apply_input(event_id, query, deltas)
        return bool(self._apply(keys=keys, args=args))

    def _apply_input(
        self, event_id: str, query: str, deltas: Sequence[tuple[str, Stats]]
    ) -> tuple[list[str], list[Any]]:
        keys = [f"{self.prefix}applied:{event_id}", self._pair_key(query)]
        args: list[Any] = [self.ttl_s, len(deltas), FIELDS]
        for doc, delta in deltas:
            keys.append(self._doc_key(doc))
            args.extend([doc, *(repr(float(value)) for value in delta.to_list())])
        return keys, args

    def apply_many(
        self, events: Sequence[tuple[str, str, Sequence[tuple[str, Stats]]]]
    ) -> list[bool]:
        """:meth:`apply` for many ``(event_id, query, deltas)`` in one round trip."""
        pipe = self.client.pipeline(transaction=False)
        for event_id, query, deltas in events:
            keys, args = self._apply_input(event_id, query, deltas)
            self._apply(keys=keys, args=args, client=pipe)
        return [bool(applied) for applied in pipe.execute()]

    def prefetch(
        self, wanted: Sequence[tuple[str, str, Sequence[str]]]
    ) -> tuple[list[bool], list[list[Stats]]]:
        """For ``(event_id, query, docs)`` triples: whether each event was applied, and the
        pair statistics of its documents; one round trip."""
        pipe = self.client.pipeline(transaction=False)
        for event_id, query, docs in wanted:
            pipe.exists(f"{self.prefix}applied:{event_id}")
            fields = [f"{doc}:{f}" for doc in docs for f in range(1, FIELDS + 1)]
            if fields:
                pipe.hmget(self._pair_key(query), fields)
            else:
                pipe.echo("")
        replies = pipe.execute()
        applied = [bool(replies[2 * i]) for i in range(len(wanted))]
        stats = []
        for i, (_, _, docs) in enumerate(wanted):
            values = replies[2 * i + 1] if docs else []
            stats.append([_stats(values[j * FIELDS : (j + 1) * FIELDS]) for j in range(len(docs))])
        return applied, stats

    def get_state(self, name: str) -> dict[str, Any] | None:
        raw = self.client.get(f"{self.prefix}state:{name}")
        return json.loads(raw) if raw else None

    def put_state(self, name: str, state: dict[str, Any]) -> None:
        self.client.set(f"{self.prefix}state:{name}", json.dumps(state))


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

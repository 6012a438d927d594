"""The online learner's click statistics in Redis, shared by every worker.

Implements :class:`models.online_ranker.LearnerStore`. Per-(query, document) statistics live in
one hash per query, per-document totals in one hash per document; every write refreshes a TTL,
so pairs nobody clicks any more expire instead of growing without bound (the same eviction the
in-memory store does by size). ``apply`` is one Lua script: the check that an event was not
applied before and all its increments happen atomically, so a replayed interaction (a crash
before the offset commit, a duplicate from the producer) is applied exactly once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
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
        keys = [f"{self.prefix}applied:{event_id}", self._pair_key(query)]
        args: list[Any] = [self.ttl_s, len(deltas), FIELDS]
        for doc, delta in deltas:
            keys.append(self._doc_key(doc))
            args.extend([doc, *(repr(float(value)) for value in delta.to_list())])
        return bool(self._apply(keys=keys, args=args))

    def get_state(self, name: str) -> dict[str, Any] | None:
        raw = self.client.get(f"{self.prefix}state:{name}")
        return json.loads(raw) if raw else None

    def put_state(self, name: str, state: dict[str, Any]) -> None:
        self.client.set(f"{self.prefix}state:{name}", json.dumps(state))


def _stats(values: Sequence[bytes | None]) -> Stats:
    return Stats(*(float(value) if value is not None else 0.0 for value in values))

"""Service metrics every worker adds to in Redis: what ``/metrics`` and ``/dashboard`` show.

Counters and a latency histogram of published rankings (Prometheus' cumulative ``le``
buckets), the candidates each vector tier found without a stored document vector (an
ingestion gap: such candidates are left unscored by that tier), and a per-minute
click-through rate of closed sessions: the live learning curve.
Kept in Redis, not in the worker, so they survive restarts and add up across workers.

Keys (under ``<prefix>metrics:``): the ranking counters, the histogram and the missing-vector
counts share the hash tag ``{rankings}`` (one transaction writes them, so a Redis Cluster must
keep them in one slot); the per-minute session counts and the replay markers of the sessions
are split into :data:`CTR_BUCKETS` groups by the request id, ``{ctr-<b>}:ctr:<minute>`` and
``{ctr-<b>}:session-seen:<request>``: a marker and the counts it guards are changed by one
script, so they share a slot, and the markers (one per session, a week each) spread over the
shards. A minute's click-through rate is the sum over the groups.

Examples
--------
>>> from streamrank.streams.config import Settings, get_settings
>>> from streamrank.streams.state.connections import redis_client
>>> client = redis_client(get_settings())  # $STREAMRANK_REDIS_URL, else local Redis
>>> metrics = ServiceMetrics(client, Settings(topic_prefix="doctest-metrics."))
>>> metrics.clear()
>>> metrics.record_ranking(latency_ms=120.0, degraded=False)
>>> metrics.record_ranking(latency_ms=480.0, degraded=True, vectors_missing={"dense": 3})
>>> snapshot = metrics.snapshot()
>>> snapshot["rankings"], snapshot["degraded"], snapshot["latency_buckets"]["250"]
(2, 1, 1)
>>> snapshot["vectors_missing"]
{'dense': 3}
>>> metrics.clear()
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import redis

from streamrank.streams.config import Settings
from streamrank.streams.state.connections import key
from streamrank.streams.state.scripts import queue_script

LATENCY_BUCKETS_MS = (10, 25, 50, 100, 150, 200, 250, 300, 400, 500, 750, 1000, 2500, 5000)
"""Upper bounds of the latency histogram, ms (``+Inf`` is implied)."""
MINUTES_KEPT = 24 * 60
CTR_BUCKETS = 8
"""Groups the session markers and per-minute counts are split into: more spread them over
more shards, and cost more reads per minute shown (one ``HGETALL`` per group)."""

# KEYS: the minute's hash, then one seen-marker per session. ARGV: marker ttl, minute ttl, then
# per session 1 (clicked) or 0. Returns how many sessions were new (replays count nothing).
RECORD_SESSIONS_SCRIPT = """
local counted, clicked = 0, 0
for i = 2, #KEYS do
  if redis.call('SET', KEYS[i], '1', 'NX', 'EX', ARGV[1]) then
    counted = counted + 1
    clicked = clicked + tonumber(ARGV[i + 1])
  end
end
if counted > 0 then
  redis.call('HINCRBY', KEYS[1], 'sessions', counted)
  redis.call('HINCRBY', KEYS[1], 'clicked', clicked)
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return counted
"""


class ServiceMetrics:
    """Rankings, their latency and per-minute session CTR, summed over every worker."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self._record_sessions = client.register_script(RECORD_SESSIONS_SCRIPT)

    def _key(self, *parts: str) -> str:
        return key(self.settings, "metrics", *parts)

    def _ranking_key(self, name: str) -> str:
        """A ranking counter's key: ``counts``, ``latency`` or ``vectors-missing``."""
        return self._key("{rankings}", name)

    def _ctr_key(self, bucket: int, *parts: str) -> str:
        """A key of session-CTR group ``bucket`` (its per-minute hashes and markers)."""
        return self._key(f"{{ctr-{bucket}}}", *parts)

    def record_ranking(
        self,
        latency_ms: float,
        degraded: bool,
        vectors_missing: Mapping[str, int] | None = None,
    ) -> None:
        """Count one published ranking, and the candidates each vector tier found without a
        stored vector (``vectors_missing``: tier name -> count) since the last one counted."""
        bucket = next((str(b) for b in LATENCY_BUCKETS_MS if latency_ms <= b), "+Inf")
        counts = self._ranking_key("counts")
        pipe = self.client.pipeline(transaction=True)  # a snapshot never sees half a ranking
        pipe.hincrby(counts, "rankings", 1)
        pipe.hincrby(counts, "degraded", int(degraded))
        pipe.hincrbyfloat(counts, "latency_sum_ms", latency_ms)
        pipe.hincrby(self._ranking_key("latency"), bucket, 1)
        for tier, count in (vectors_missing or {}).items():
            if count:
                pipe.hincrby(self._ranking_key("vectors-missing"), tier, int(count))
        pipe.execute()

    def record_session(self, request_id: str, clicked: bool, at: float | None = None) -> bool:
        """Count one closed session in its minute; False (nothing counted) for a replay."""
        return self.record_sessions([(request_id, clicked)], at) == 1

    def record_sessions(self, sessions: Sequence[tuple[str, bool]], at: float | None = None) -> int:
        """Count closed ``(request_id, clicked)`` sessions in one minute, in one round trip.

        Each request id counts once (a marker per id, set in the same script as the counts
        it guards); returns how many were counted, replays left out. One script per group
        of request ids (see the module docstring), all in one pipeline.
        """
        if not sessions:
            return 0
        minute = str(int((at or time.time()) // 60))
        groups: dict[int, list[tuple[str, bool]]] = {}
        for request_id, clicked in sessions:
            groups.setdefault(ctr_bucket(request_id), []).append((request_id, clicked))
        pipe = self.client.pipeline(transaction=False)
        for bucket, members in groups.items():
            keys = [self._ctr_key(bucket, "ctr", minute)]
            keys += [self._ctr_key(bucket, "session-seen", rid) for rid, _ in members]
            args = [self.settings.dedupe_ttl_s, MINUTES_KEPT * 60]
            args += [int(clicked) for _, clicked in members]
            queue_script(pipe, self._record_sessions, keys, args)
        return sum(int(counted) for counted in pipe.execute())

    def ctr_by_minute(self, minutes: int = 60) -> list[dict[str, float]]:
        now = int(time.time() // 60)
        shown = range(now - minutes + 1, now + 1)
        points = []
        for minute, (sessions, clicked) in zip(shown, self.minute_counts(shown), strict=True):
            if sessions:
                points.append(
                    {"minute": minute * 60, "sessions": sessions, "ctr": clicked / sessions}
                )
        return points

    def minute_counts(self, minutes: Sequence[int]) -> list[tuple[int, int]]:
        """(sessions, clicked sessions) counted in each minute (Unix time // 60), summed
        over the groups; one pipelined read."""
        pipe = self.client.pipeline(transaction=False)
        for minute in minutes:
            for bucket in range(CTR_BUCKETS):
                pipe.hgetall(self._ctr_key(bucket, "ctr", str(minute)))
        replies = pipe.execute()
        totals = []
        for i in range(len(minutes)):
            groups = replies[i * CTR_BUCKETS : (i + 1) * CTR_BUCKETS]
            totals.append(
                (
                    sum(int(raw.get(b"sessions", 0)) for raw in groups),
                    sum(int(raw.get(b"clicked", 0)) for raw in groups),
                )
            )
        return totals

    def snapshot(self) -> dict[str, Any]:
        pipe = self.client.pipeline(transaction=True)  # one moment
        pipe.hgetall(self._ranking_key("counts"))
        pipe.hgetall(self._ranking_key("latency"))
        pipe.hgetall(self._ranking_key("vectors-missing"))
        stored, latency, missing = pipe.execute()
        counts = {k.decode(): float(v) for k, v in stored.items()}
        raw = {k.decode(): int(v) for k, v in latency.items()}
        cumulative, total = {}, 0
        for bound in [*map(str, LATENCY_BUCKETS_MS), "+Inf"]:
            total += raw.get(bound, 0)
            cumulative[bound] = total
        return {
            "rankings": int(counts.get("rankings", 0)),
            "degraded": int(counts.get("degraded", 0)),
            "latency_sum_ms": counts.get("latency_sum_ms", 0.0),
            "latency_buckets": cumulative,
            "vectors_missing": {k.decode(): int(v) for k, v in sorted(missing.items())},
        }

    def clear(self) -> None:
        """Delete every metric of this deployment (tests, demos)."""
        for name in self.client.scan_iter(match=self._key("*")):
            self.client.delete(name)


def ctr_bucket(request_id: str) -> int:
    """The session-CTR group of a request id: stable across processes (CRC-32, not
    ``hash``), so a replay finds the marker its first count left.

    Examples
    --------
    >>> ctr_bucket("r1") == ctr_bucket("r1") and 0 <= ctr_bucket("r1") < CTR_BUCKETS
    True
    """
    return zlib.crc32(request_id.encode()) % CTR_BUCKETS

"""Service metrics every worker adds to in Redis: what ``/metrics`` and ``/dashboard`` show.

Counters and a latency histogram of published rankings (Prometheus' cumulative ``le``
buckets), the candidates each vector tier found without a stored document vector (an
ingestion gap: such candidates are left unscored by that tier), and a per-minute
click-through rate of closed sessions: the live learning curve.
Kept in Redis, not in the worker, so they survive restarts and add up across workers.

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
from collections.abc import Mapping, Sequence
from typing import Any

import redis

from streamrank.streams.config import Settings
from streamrank.streams.state.connections import key

LATENCY_BUCKETS_MS = (10, 25, 50, 100, 150, 200, 250, 300, 400, 500, 750, 1000, 2500, 5000)
"""Upper bounds of the latency histogram, ms (``+Inf`` is implied)."""
MINUTES_KEPT = 24 * 60

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

    def record_ranking(
        self,
        latency_ms: float,
        degraded: bool,
        vectors_missing: Mapping[str, int] | None = None,
    ) -> None:
        """Count one published ranking, and the candidates each vector tier found without a
        stored vector (``vectors_missing``: tier name -> count) since the last one counted."""
        bucket = next((str(b) for b in LATENCY_BUCKETS_MS if latency_ms <= b), "+Inf")
        pipe = self.client.pipeline()
        pipe.hincrby(self._key("counts"), "rankings", 1)
        pipe.hincrby(self._key("counts"), "degraded", int(degraded))
        pipe.hincrbyfloat(self._key("counts"), "latency_sum_ms", latency_ms)
        pipe.hincrby(self._key("latency"), bucket, 1)
        for tier, count in (vectors_missing or {}).items():
            if count:
                pipe.hincrby(self._key("vectors-missing"), tier, int(count))
        pipe.execute()

    def record_session(self, request_id: str, clicked: bool, at: float | None = None) -> bool:
        """Count one closed session in its minute; False (nothing counted) for a replay."""
        return self.record_sessions([(request_id, clicked)], at) == 1

    def record_sessions(self, sessions: Sequence[tuple[str, bool]], at: float | None = None) -> int:
        """Count closed ``(request_id, clicked)`` sessions in one minute, in one round trip.

        Each request id counts once (a marker per id, set in the same script as the counts);
        returns how many were counted, replays left out.
        """
        if not sessions:
            return 0
        minute = str(int((at or time.time()) // 60))
        keys = [self._key("ctr", minute)]
        keys += [self._key("session-seen", request_id) for request_id, _ in sessions]
        args = [self.settings.dedupe_ttl_s, MINUTES_KEPT * 60]
        args += [int(clicked) for _, clicked in sessions]
        return int(self._record_sessions(keys=keys, args=args))

    def ctr_by_minute(self, minutes: int = 60) -> list[dict[str, float]]:
        now = int(time.time() // 60)
        names = [self._key("ctr", str(m)) for m in range(now - minutes + 1, now + 1)]
        pipe = self.client.pipeline()
        for name in names:
            pipe.hgetall(name)
        points = []
        for minute, raw in zip(range(now - minutes + 1, now + 1), pipe.execute(), strict=True):
            sessions = int(raw.get(b"sessions", 0))
            if sessions:
                clicked = int(raw.get(b"clicked", 0))
                points.append(
                    {"minute": minute * 60, "sessions": sessions, "ctr": clicked / sessions}
                )
        return points

    def snapshot(self) -> dict[str, Any]:
        counts = {k.decode(): float(v) for k, v in self.client.hgetall(self._key("counts")).items()}
        raw = {k.decode(): int(v) for k, v in self.client.hgetall(self._key("latency")).items()}
        cumulative, total = {}, 0
        for bound in [*map(str, LATENCY_BUCKETS_MS), "+Inf"]:
            total += raw.get(bound, 0)
            cumulative[bound] = total
        missing = self.client.hgetall(self._key("vectors-missing"))
        return {
            "rankings": int(counts.get("rankings", 0)),
            "degraded": int(counts.get("degraded", 0)),
            "latency_sum_ms": counts.get("latency_sum_ms", 0.0),
            "latency_buckets": cumulative,
            "vectors_missing": {k.decode(): int(v) for k, v in sorted(missing.items())},
        }

    def clear(self) -> None:
        for name in self.client.scan_iter(match=self._key("*")):
            self.client.delete(name)

"""Impressions Redis did not take, kept in the worker's memory until it answers again.

A ranking served while Redis is away (a restart, a Redis Cluster master failing over) cannot
record its impression, and a click on it would join nothing: the learn path waits
``orphan_window_s`` for the impression, then dead-letters the click as an orphan. Most outages
are shorter than that window (a failover takes seconds), so the worker keeps those
impressions and writes them once Redis answers, each with what is left of its lifetime;
the clicks that waited join them and are learned.

The backlog is bounded (``limit``; the oldest goes first, counted in ``dropped``) and lives in
one worker's memory: a worker that dies during the outage loses it, and those clicks are
dead-lettered as orphans, as without a backlog.

Examples
--------
>>> backlog = ImpressionBacklog(limit=2, ttl_s=60)
>>> for request_id in ("r1", "r2", "r3"):
...     _ = backlog.keep(request_id, "{}")
>>> len(backlog), backlog.dropped
(2, 1)
>>> written = []
>>> backlog.flush(written.extend)
2
>>> [(request_id, ttl_s) for request_id, _, ttl_s in written]
[('r2', 60), ('r3', 60)]
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

log = logging.getLogger(__name__)

Entry = tuple[str, str, int]
"""A request id, its impression record (JSON) and the seconds it has left to live."""


class ImpressionBacklog:
    """Impression records waiting for Redis, oldest first; safe to use from many threads."""

    def __init__(self, limit: int, ttl_s: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.ttl_s = ttl_s
        self.clock = clock
        self.dropped = 0
        """Impressions pushed out by newer ones, or kept too long to be worth writing."""
        self._waiting: deque[tuple[str, str, float]] = deque()  # id, record, kept at
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._waiting)

    def keep(self, request_id: str, record: str) -> bool:
        """Keep an impression Redis did not take; False when the backlog holds none."""
        if self.limit == 0:
            return False
        with self._lock:
            self._waiting.append((request_id, record, self.clock()))
            self._trim()
        return True

    def flush(self, write: Callable[[Sequence[Entry]], None]) -> int:
        """``write`` every waiting impression still alive, with its time left; how many.

        An impression older than its lifetime is dropped unwritten (no click can join it any
        more). When ``write`` raises, the impressions wait again and the error propagates.
        """
        with self._lock:
            taken = list(self._waiting)
            self._waiting.clear()
        now = self.clock()
        alive = [entry for entry in taken if now - entry[2] < self.ttl_s]
        self.dropped += len(taken) - len(alive)
        if not alive:
            return 0
        try:
            write(
                [(rid, record, math.ceil(self.ttl_s - (now - kept))) for rid, record, kept in alive]
            )
        except Exception:
            with self._lock:
                self._waiting.extendleft(reversed(alive))
                self._trim()
            raise
        log.info("wrote %d impressions kept while Redis did not answer", len(alive))
        return len(alive)

    def _trim(self) -> None:
        while len(self._waiting) > self.limit:
            request_id, _, _ = self._waiting.popleft()
            self.dropped += 1
            log.warning(
                "impression of %s dropped: %d wait for Redis already", request_id, self.limit
            )

"""Bounded logging: a filter that lets a burst of each kind of record through per interval and
sums up the rest in one line.

A worker whose broker goes away logs the same few errors from every connection attempt of
every client, thousands a second; the lines say nothing new after the first few, bury
whatever else was logged and fill disks. Counting per (logger, level, message template)
keeps what is distinct: the first ``burst`` records of each kind in an interval pass, later
ones are counted, and when the interval is over one summary line says how many of that kind
were suppressed. A broker outage then costs a few lines per kind per interval, however long
it lasts and however fast the clients retry.

The template is the record's ``msg`` before its arguments are applied (``"Unable connect to
%r: %r"``), so records that differ only in their arguments count as one kind. Summaries are
written when the next record of any kind arrives after the interval (a filter has no clock of
its own), or by :meth:`RateLimitFilter.flush`.

Example:

>>> import io, logging
>>> stream = io.StringIO()
>>> handler = logging.StreamHandler(stream)
>>> clock = iter([0.0, 0.1, 0.2, 0.3, 11.0]).__next__
>>> handler.addFilter(RateLimitFilter(handler, burst=2, interval_s=10, clock=clock))
>>> logger = logging.getLogger("doctest.logs")
>>> logger.propagate = False
>>> logger.addHandler(handler)
>>> for attempt in range(4):
...     logger.error("connection to %s failed", "broker")
>>> logger.error("broker is back")
>>> print(stream.getvalue(), end="")
connection to broker failed
connection to broker failed
suppressed 2 similar messages in 10 s from doctest.logs: connection to %s failed
broker is back
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

SUMMARY_ATTRIBUTE = "streamrank_rate_limit_summary"
TEMPLATE_CHARS = 200  # a template is a format string; longer ones are pre-formatted messages
MAX_KINDS = 1000  # kinds tracked at once; more share one bucket per logger and level


@dataclass
class Window:
    """One kind's current interval: when it started, records seen, records suppressed."""

    started: float
    seen: int = 0
    suppressed: int = 0


class RateLimitFilter(logging.Filter):
    """A handler filter: ``burst`` records per kind per ``interval_s``, then one summary.

    Parameters
    ----------
    handler
        The handler this filter is installed on; summaries are written through it, so each
        handler (console, file) sums up what it itself suppressed.
    burst
        Records of one kind let through per interval.
    interval_s
        Length of an interval in seconds.
    clock
        Monotonic seconds (a parameter so that tests need not sleep).
    """

    def __init__(
        self,
        handler: logging.Handler,
        burst: int = 5,
        interval_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        if burst < 1 or interval_s <= 0:
            raise ValueError(f"burst must be >= 1 and interval_s > 0, got {burst}, {interval_s}")
        self.handler = handler
        self.burst = burst
        self.interval_s = interval_s
        self.clock = clock
        self._windows: dict[tuple[str, int, str], Window] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, SUMMARY_ATTRIBUTE, False):
            return True
        now = self.clock()
        with self._lock:
            due = self._close_windows(now)
            window = self._window(record, now)
            window.seen += 1
            passes = window.seen <= self.burst
            if not passes:
                window.suppressed += 1
        self._write(due)  # outside the lock: writing runs this filter again
        return passes

    def flush(self) -> None:
        """Write the summaries of every interval with suppressed records, ended or not."""
        with self._lock:
            due = [(kind, w.suppressed) for kind, w in self._windows.items() if w.suppressed]
            self._windows.clear()
        self._write(due)

    def _window(self, record: logging.LogRecord, now: float) -> Window:
        kind = (record.name, record.levelno, template_of(record))
        if kind not in self._windows and len(self._windows) >= MAX_KINDS:
            kind = (record.name, record.levelno, "<other messages>")
        return self._windows.setdefault(kind, Window(started=now))

    def _close_windows(self, now: float) -> list[tuple[tuple[str, int, str], int]]:
        """Forget the intervals that are over; the summaries of those that suppressed any."""
        over = [kind for kind, w in self._windows.items() if now - w.started >= self.interval_s]
        closed = [(kind, self._windows.pop(kind).suppressed) for kind in over]
        return [(kind, count) for kind, count in closed if count]

    def _write(self, due: list[tuple[tuple[str, int, str], int]]) -> None:
        for (name, level, template), count in due:
            summary = logging.makeLogRecord(
                {
                    "name": name,
                    "levelno": level,
                    "levelname": logging.getLevelName(level),
                    "msg": "suppressed %d similar messages in %.0f s from %s: %s",
                    "args": (count, self.interval_s, name, template),
                    SUMMARY_ATTRIBUTE: True,
                }
            )
            self.handler.handle(summary)


def template_of(record: logging.LogRecord) -> str:
    """The record's message before its arguments, cut to :data:`TEMPLATE_CHARS`."""
    return str(record.msg)[:TEMPLATE_CHARS]


def install(
    burst: int = 5, interval_s: float = 10.0, logger: logging.Logger | None = None
) -> list[RateLimitFilter]:
    """Put a :class:`RateLimitFilter` on every handler of ``logger`` (the root logger by
    default) that has none yet; returns the filters added.

    Handler filters, not logger filters: a logger's filters see only the records logged on
    that very logger, not those that propagate up from ``aiokafka.conn`` and the like, while a
    handler sees every record it writes.
    """
    target = logger if logger is not None else logging.getLogger()
    added = []
    for handler in target.handlers:
        if any(isinstance(f, RateLimitFilter) for f in handler.filters):
            continue
        limiter = RateLimitFilter(handler, burst=burst, interval_s=interval_s)
        handler.addFilter(limiter)
        added.append(limiter)
    return added

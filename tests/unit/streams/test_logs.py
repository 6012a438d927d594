"""The rate-limiting log filter: a burst per kind per interval, then one summary line."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from streamrank.streams.logs import MAX_KINDS, RateLimitFilter, install


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def logged(clock: Clock) -> Iterator[tuple[logging.Logger, io.StringIO, RateLimitFilter]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    limiter = RateLimitFilter(handler, burst=3, interval_s=10, clock=clock)
    handler.addFilter(limiter)
    logger = logging.getLogger("test.logs.aiokafka")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield logger, stream, limiter
    logger.removeHandler(handler)


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_a_flood_of_one_kind_costs_a_burst_and_one_summary_per_interval(logged, clock) -> None:
    logger, stream, _ = logged
    for interval in range(3):
        for attempt in range(10_000):
            clock.now = interval * 10 + attempt / 10_000
            logger.error("Unable connect to node with id %s: %s", attempt % 2, "refused")
    clock.now = 30.5
    logger.info("connected")
    out = lines(stream)
    summary = (
        "test.logs.aiokafka ERROR suppressed 9997 similar messages in 10 s from "
        "test.logs.aiokafka: Unable connect to node with id %s: %s"
    )
    assert out.count(summary) == 3
    assert sum("Unable connect to node with id" in line for line in out) == 3 * 3 + 3
    assert out[-1] == "test.logs.aiokafka INFO connected"
    assert len(out) == 13


def test_kinds_are_counted_apart_by_template_logger_and_level(logged, clock) -> None:
    logger, stream, _ = logged
    other = logger.getChild("conn")
    for _ in range(5):
        logger.error("heartbeat failed: %s", "x")
        logger.warning("heartbeat failed: %s", "x")
        logger.error("fetch failed")
        other.error("heartbeat failed: %s", "x")
    assert len(lines(stream)) == 4 * 3  # every kind had its own burst of 3


def test_a_quiet_kind_is_never_summed_up(logged, clock) -> None:
    logger, stream, _ = logged
    for second in range(100):
        clock.now = float(second * 5)
        logger.error("once in a while %d", second)
    assert len(lines(stream)) == 100
    assert not any("suppressed" in line for line in lines(stream))


def test_flush_writes_the_pending_summaries(logged, clock) -> None:
    logger, stream, limiter = logged
    for _ in range(7):
        logger.error("broker down")
    assert len(lines(stream)) == 3
    limiter.flush()
    assert lines(stream)[-1].endswith(
        "suppressed 4 similar messages in 10 s from test.logs.aiokafka: broker down"
    )
    limiter.flush()
    assert len(lines(stream)) == 4


def test_pre_formatted_messages_beyond_the_kind_limit_share_one_bucket(logged, clock) -> None:
    logger, stream, _ = logged
    for n in range(MAX_KINDS + 500):
        logger.error(f"unique message {n}")  # pre-formatted: no template
    assert len(lines(stream)) == MAX_KINDS + 3


def test_install_adds_one_filter_per_handler_once() -> None:
    logger = logging.getLogger("test.logs.install")
    handlers = [logging.StreamHandler(io.StringIO()), logging.StreamHandler(io.StringIO())]
    for handler in handlers:
        logger.addHandler(handler)
    try:
        assert len(install(2, 5.0, logger)) == 2
        assert install(2, 5.0, logger) == []
        for handler in handlers:
            [limiter] = handler.filters
            assert limiter.handler is handler and limiter.burst == 2
    finally:
        for handler in handlers:
            logger.removeHandler(handler)


@pytest.mark.parametrize(("burst", "interval_s"), [(0, 1.0), (1, 0.0), (-1, -5.0)])
def test_nonsense_limits_are_refused(burst: int, interval_s: float) -> None:
    with pytest.raises(ValueError, match="burst must be"):
        RateLimitFilter(logging.NullHandler(), burst=burst, interval_s=interval_s)

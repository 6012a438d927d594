"""Which ranker version a worker serves, and how it switches when an operator says so.

The registry's ``active`` pointer is the truth. Operators change it with ``streamrank promote``
or ``rollback``, which also publish a ``control`` message. Every worker follows the control
topic with its own group-less consumer (a consumer group would hand each message to only one
worker), and on each message re-reads the pointer. A worker also re-reads the pointer every few
seconds, so one that missed a message (it was restarting) still converges.

A switch loads the new version completely, in an executor thread, while the old one keeps
serving; only then is the reference swapped. A request is served by the version that was
current when it started, so none is dropped and none meets a half-loaded model.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

log = logging.getLogger(__name__)
RankerT = TypeVar("RankerT")


@dataclass(frozen=True)
class Serving(Generic[RankerT]):
    version: str
    ranker: RankerT


class RankerSlot(Generic[RankerT]):
    """Holds the serving (version, ranker) pair; ``switch_to`` replaces it atomically."""

    def __init__(self, load: Callable[[str], RankerT], initial_version: str) -> None:
        self._load = load
        self._lock = asyncio.Lock()
        self.current: Serving[RankerT] = Serving(initial_version, load(initial_version))
        self.switches = 0

    async def switch_to(self, version: str) -> bool:
        """Load ``version`` off the event loop and swap it in; False if it already serves."""
        async with self._lock:
            if version == self.current.version:
                return False
            loop = asyncio.get_running_loop()
            ranker = await loop.run_in_executor(None, self._load, version)
            self.current = Serving(version, ranker)  # one assignment: atomic for readers
            self.switches += 1
            log.info("now serving version %s", version)
            return True


async def follow_control(
    slot: RankerSlot[RankerT],
    active_version: Callable[[], str | None],
    bootstrap: str,
    topic_name: str,
    poll_s: float,
    client_options: dict,
) -> None:
    """Keep ``slot`` on the registry's active version, for as long as the worker runs.

    Reads ``control`` without a consumer group (every worker must see every message), from
    its end: the pointer, not the message history, is the truth, so each message (and a
    timer, for messages missed while restarting) only says "look at the pointer now".
    """
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic_name,
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="latest",
        **client_options,
    )
    await consumer.start()
    loop = asyncio.get_running_loop()
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=int(poll_s * 1000))
            if batch:
                log.info("control message received; re-reading the active version")
            version = await loop.run_in_executor(None, active_version)
            if version is not None:
                await _switch(slot, version)
    finally:
        await consumer.stop()


async def _switch(slot: RankerSlot[RankerT], version: str) -> None:
    try:
        await slot.switch_to(version)
    except Exception:  # a bad version must not stop the worker: it keeps the current one
        log.exception("could not load version %s; still serving %s", version, slot.current.version)

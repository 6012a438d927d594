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

"""How library code reports progress without drawing it.

Long library operations (fetching the models, building an index, encoding documents, ranking
a candidate file) report their stages to a :class:`ProgressReporter` they are given. The CLI
gives one that draws terminal progress bars; everyone else gets :class:`SilentProgress`. The
library so stays free of a terminal UI, and a bench, a notebook or a test sees no bars unless
it asks for them.

Examples
--------
>>> with SilentProgress().stage("encoding", total=3) as advance:
...     for _ in range(3):
...         advance(1)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol


class ProgressReporter(Protocol):
    """Reports the stages of a long operation; see :class:`SilentProgress`."""

    def stage(
        self, description: str, total: int | None
    ) -> AbstractContextManager[Callable[[int], None]]:
        """A context for one stage; yields ``advance(n)`` for ``n`` units of ``total`` done.

        ``total`` is ``None`` when the amount of work is unknown beforehand (a download); the
        stage counts as done when its context exits.
        """
        ...


class SilentProgress:
    """A :class:`ProgressReporter` that reports nothing: the default of every library call."""

    @contextmanager
    def stage(self, description: str, total: int | None) -> Iterator[Callable[[int], None]]:
        yield lambda _done: None

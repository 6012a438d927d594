"""Batching model calls across concurrent requests.

Workers rank several requests at once, each in an executor thread, so the event loop never
waits on inference. Left alone, each thread would call the model with its own few dozen pairs.
:class:`CrossRequestBatcher` merges the calls that arrive together into one larger call, which
is what a CPU runtime wants: fewer, fuller matrix multiplies and better length bucketing.

The first thread to arrive leads: it waits ``max_wait_s`` for others to join, runs the model on
everything pending, hands each caller its slice of the scores, and repeats while work keeps
arriving. Callers simply block in ``predict`` until their scores are ready.

It merges whatever the model function takes a list of: (query, passage) pairs, or the
cross-encoder's already tokenized pairs (the service passes those, so that a request under a
deadline is tokenized once, for both its cost estimate and the model).

Examples
--------
>>> import numpy as np
>>> batcher = CrossRequestBatcher(lambda pairs: np.array([len(d) for _, d in pairs], float))
>>> batcher.predict([("q", "abc"), ("q", "de")]).tolist()
[3.0, 2.0]
>>> batcher.model_calls
1
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

import numpy as np

Item = TypeVar("Item")  # one scored unit: a (query, passage) pair or its encoding


class _Job(Generic[Item]):
    def __init__(self, items: Sequence[Item]) -> None:
        self.items = list(items)
        self.done = threading.Event()
        self.scores: np.ndarray | None = None
        self.error: BaseException | None = None


class CrossRequestBatcher(Generic[Item]):
    """Run ``predict_fn`` on the merged items of calls that arrive within ``max_wait_s``."""

    def __init__(
        self,
        predict_fn: Callable[[list[Item]], np.ndarray],
        max_wait_s: float = 0.002,
        max_pairs: int = 512,
    ) -> None:
        self.predict_fn = predict_fn
        self.max_wait_s = max_wait_s
        self.max_pairs = max_pairs
        self.model_calls = 0
        self.pairs_scored = 0
        self._lock = threading.Lock()
        self._pending: list[_Job[Item]] = []
        self._leading = False

    def predict(self, items: Sequence[Item]) -> np.ndarray:
        """Scores for ``items``, computed together with whatever else is pending."""
        if not items:
            return np.zeros(0, dtype=np.float32)
        job = _Job(items)
        with self._lock:
            self._pending.append(job)
            lead = not self._leading
            self._leading = True
        if lead:
            self._lead()
        job.done.wait()
        if job.error is not None:
            raise job.error
        assert job.scores is not None
        return job.scores

    def _lead(self) -> None:
        time.sleep(self.max_wait_s)  # let the calls that arrive together join this batch
        while True:
            with self._lock:
                batch = self._take_batch()
                if not batch:
                    self._leading = False
                    return
            self._run(batch)

    def _take_batch(self) -> list[_Job[Item]]:
        """Pending jobs up to ``max_pairs`` (always at least one job); call under the lock."""
        batch, size = [], 0
        while self._pending and (not batch or size + len(self._pending[0].items) <= self.max_pairs):
            job = self._pending.pop(0)
            batch.append(job)
            size += len(job.items)
        return batch

    def _run(self, batch: list[_Job[Item]]) -> None:
        merged = [item for job in batch for item in job.items]
        try:
            scores = np.asarray(self.predict_fn(merged))
        except BaseException as error:  # every waiting caller must hear of it
            for job in batch:
                job.error = error
                job.done.set()
            return
        self.model_calls += 1
        self.pairs_scored += len(merged)
        start = 0
        for job in batch:
            job.scores = scores[start : start + len(job.items)]
            start += len(job.items)
            job.done.set()

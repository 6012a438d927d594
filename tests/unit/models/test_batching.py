"""Cross-request batching: concurrent calls merge into fewer model calls, results stay right."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from streamrank.models.scoring.batching import CrossRequestBatcher


def text_length_model(pairs: list[tuple[str, str]]) -> np.ndarray:
    time.sleep(0.02)  # a model call takes time, so concurrent callers pile up behind it
    return np.array([len(query) * 1000 + len(doc) for query, doc in pairs], dtype=np.float32)


def test_concurrent_calls_share_model_calls_and_get_their_own_scores() -> None:
    batcher = CrossRequestBatcher(text_length_model, max_wait_s=0.01)
    requests = [[("q" * n, "d" * m) for m in range(1, 6)] for n in range(1, 9)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(batcher.predict, requests))
    for n, scores in enumerate(results, start=1):
        assert scores.tolist() == [n * 1000 + m for m in range(1, 6)]
    assert batcher.pairs_scored == 40
    assert batcher.model_calls < len(requests)


def test_batches_respect_max_pairs() -> None:
    sizes: list[int] = []

    def model(pairs: list[tuple[str, str]]) -> np.ndarray:
        sizes.append(len(pairs))
        time.sleep(0.01)
        return np.zeros(len(pairs))

    batcher = CrossRequestBatcher(model, max_wait_s=0.01, max_pairs=10)
    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(batcher.predict, [[("q", "d")] * 4] * 6))
    assert sum(sizes) == 24
    assert max(sizes) <= 10


def test_a_model_error_reaches_every_caller_of_that_batch() -> None:
    def broken(pairs: list[tuple[str, str]]) -> np.ndarray:
        raise RuntimeError("onnxruntime failed")

    batcher = CrossRequestBatcher(broken)
    with pytest.raises(RuntimeError, match="onnxruntime failed"):
        batcher.predict([("q", "d")])
    # The batcher is not left stuck: a later call leads a new batch.
    assert not batcher._leading


def test_empty_input_needs_no_model_call() -> None:
    calls = threading.Event()
    batcher = CrossRequestBatcher(lambda pairs: calls.set() or np.zeros(len(pairs)))
    assert batcher.predict([]).shape == (0,)
    assert not calls.is_set()

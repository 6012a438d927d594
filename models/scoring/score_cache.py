"""Cache hooks of the cascade: cross-encoder scores and document vectors, with their keys.

The cascade asks a cache before any inference and fills it afterwards. A cache is any object
with ``get_many(keys) -> list[value | None]`` and ``set_many({key: value})``:
:class:`InMemoryCache` here (tests, one process) or
``streamrank.streams.state.redis_cache.RedisScoreCache`` / ``RedisVectorCache`` (shared by every
worker, with a TTL). :class:`LayeredVectors` puts stores in front of each other: the worker
reads document vectors from an in-process LRU first, then (where it holds a first-stage index)
the index's own vectors, then Redis; one MGET of 1,000 vectors costs more than a request of
1,000 candidates can spend on them (``bench/vector_lookup.py``).

Keys carry everything a value depends on, so a new model, a changed document text or
another query never hits a stale entry:

- scores: model version, normalized query, document id, hash of the text;
- vectors: encoder version, document id, hash of the text.

Examples
--------
>>> key = score_key("ce-v1", "  What IS a flea? ", "d1", "Fleas are insects.")
>>> key == score_key("ce-v1", "what is a  flea?", "d1", "Fleas are insects.")
True
>>> key == score_key("ce-v1", "what is a flea?", "d1", "Fleas are bugs.")
False
>>> cache = InMemoryCache()
>>> cache.set_many({key: 3.5})
>>> cache.get_many([key, "missing"])
[3.5, None]
"""

from __future__ import annotations

import hashlib
import threading
import unicodedata
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np


class ScoreCache(Protocol):
    """Where cross-encoder scores are kept between requests."""

    def get_many(self, keys: Sequence[str]) -> list[float | None]: ...

    def set_many(self, scores: Mapping[str, float]) -> None: ...


class VectorCache(Protocol):
    """Where document vectors (or token-vector matrices) are kept between requests."""

    def get_many(self, keys: Sequence[str]) -> list[np.ndarray | None]: ...

    def set_many(self, vectors: Mapping[str, np.ndarray]) -> None: ...


def normalize_query(query: str) -> str:
    """The form of a query used in keys: NFKC, case-folded, whitespace collapsed.

    The cross-encoder's tokenizer lower-cases and splits on whitespace itself, so queries that
    normalize alike get the same scores.

    Examples
    --------
    >>> normalize_query("  Café   AU lait ")
    'café au lait'
    """
    return " ".join(unicodedata.normalize("NFKC", query).casefold().split())


def text_hash(text: str) -> str:
    """A short stable hash of a text (16 hex digits of blake2b).

    Examples
    --------
    >>> text_hash("abc")
    'd8bb14d833d59559'
    """
    return hashlib.blake2b(text.encode("utf-8"), digest_size=8).hexdigest()


def score_key(model_version: str, query: str, doc_id: str, text: str) -> str:
    """Cache key of one cross-encoder score."""
    return f"{model_version}:{text_hash(normalize_query(query))}:{text_hash(text)}:{doc_id}"


def vector_key(encoder_version: str, doc_id: str, text: str) -> str:
    """Cache key of one document's vector(s)."""
    return f"{encoder_version}:{text_hash(text)}:{doc_id}"


def parse_vector_key(key: str) -> tuple[str, str, str]:
    """``(encoder_version, text_hash, doc_id)`` of a :func:`vector_key`.

    Encoder versions hold no ``:``; document ids may.

    Examples
    --------
    >>> parse_vector_key(vector_key("bge-L512", "doc:7", "abc"))
    ('bge-L512', 'd8bb14d833d59559', 'doc:7')
    """
    version, digest, doc_id = key.split(":", 2)
    return version, digest, doc_id


class InMemoryCache:
    """A thread-safe in-process cache with least-recently-used eviction.

    Parameters
    ----------
    max_items
        Entries kept; the least recently used go first. ``None``: unbounded.
    max_bytes
        Bytes of array values kept (``nbytes``; other values count 0); ``None``: unbounded.
        ColBERT's token matrices are a hundred times a dense vector's size, so a bound on
        entries alone does not bound memory.

    Attributes
    ----------
    hits, misses : int
        Lookups answered and not answered so far.
    """

    def __init__(self, max_items: int | None = 100_000, max_bytes: int | None = None) -> None:
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.hits = 0
        self.misses = 0
        self.nbytes = 0
        self._items: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get_many(self, keys: Sequence[str]) -> list[Any]:
        with self._lock:
            found = []
            for key in keys:
                value = self._items.get(key)
                if value is not None:
                    self._items.move_to_end(key)
                found.append(value)
            self.hits += sum(v is not None for v in found)
            self.misses += sum(v is None for v in found)
            return found

    def set_many(self, values: Mapping[str, Any]) -> None:
        with self._lock:
            for key, value in values.items():
                self.nbytes += _size(value) - _size(self._items.get(key))
                self._items[key] = value
                self._items.move_to_end(key)
            while self._items and self._over():
                self.nbytes -= _size(self._items.popitem(last=False)[1])

    def _over(self) -> bool:
        return (self.max_items is not None and len(self._items) > self.max_items) or (
            self.max_bytes is not None and self.nbytes > self.max_bytes
        )

    def __len__(self) -> int:
        return len(self._items)


def _size(value: object) -> int:
    return int(getattr(value, "nbytes", 0))


class LayeredVectors:
    """Vector stores asked in order; what a later one answers is copied into the earlier ones.

    Put the fastest first (an in-process :class:`InMemoryCache`), the shared one last (Redis).
    ``set_many`` writes to every layer that takes writes (a read-only layer, such as a
    first-stage index's own vectors, has ``read_only = True``).

    Examples
    --------
    >>> front, back = InMemoryCache(), InMemoryCache()
    >>> back.set_many({"k": np.ones(2, dtype=np.float32)})
    >>> layered = LayeredVectors([front, back])
    >>> [v is not None for v in layered.get_many(["k", "x"])], len(front)
    ([True, False], 1)
    """

    def __init__(self, layers: Sequence[VectorCache]) -> None:
        self.layers = list(layers)

    def get_many(self, keys: Sequence[str]) -> list[np.ndarray | None]:
        found: list[np.ndarray | None] = [None] * len(keys)
        todo = list(range(len(keys)))
        for depth, layer in enumerate(self.layers):
            if not todo:
                break
            answers = layer.get_many([keys[i] for i in todo])
            hits = {keys[i]: v for i, v in zip(todo, answers, strict=True) if v is not None}
            for i, value in zip(todo, answers, strict=True):
                found[i] = value
            todo = [i for i in todo if found[i] is None]
            if hits:
                for earlier in self.layers[:depth]:
                    if not getattr(earlier, "read_only", False):
                        earlier.set_many(hits)
        return found

    def set_many(self, vectors: Mapping[str, np.ndarray]) -> None:
        for layer in self.layers:
            if not getattr(layer, "read_only", False):
                layer.set_many(vectors)

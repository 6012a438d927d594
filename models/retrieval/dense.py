"""Dense retrieval: one vector per document, exact inner-product search with numpy.

Any encoder fits that has ``encode(texts) -> np.ndarray`` returning one L2-normalized float32
row per text (the :class:`Encoder` protocol); when it also has ``encode_queries``, queries go
through that (bge models prepend an instruction to queries only). For the 5k-10k documents of
the demo and SciFact an exact search is one matrix-vector product, far cheaper than encoding
the query, so no approximate index is needed; it also keeps updates trivial. Updates mirror the BM25
index: replaced or deleted rows are masked (tombstones), new vectors go to a small delta matrix.

Examples
--------
>>> import numpy as np
>>> from streamrank.models.retrieval.corpus import Document
>>> class Letters:  # a toy encoder: counts of a, b, c, normalized
...     def encode(self, texts):
...         rows = np.array([[t.count(c) for c in "abc"] for t in texts], dtype=np.float32)
...         return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-9)
>>> index = DenseIndex.build([Document("d1", "aaa"), Document("d2", "bbb")], Letters())
>>> [hit.doc_id for hit in index.search("ab a", Letters(), k=2)]
['d1', 'd2']
>>> index.upsert([Document("d3", "ccc")], Letters())
>>> _ = index.delete(["d1"])
>>> [hit.doc_id for hit in index.search("cc", Letters(), k=1)]
['d3']
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from streamrank.models.retrieval.corpus import Document
from streamrank.models.retrieval.hits import Hit, top_k

FORMAT = 1
ENCODE_BATCH = 32  # documents per encoder call: big enough for throughput, small for progress


@runtime_checkable
class Encoder(Protocol):
    """Anything that turns texts into L2-normalized float32 rows."""

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


class HashingEncoder:
    """A deterministic bag-of-words encoder: each word hashed to a signed bucket, L2-normalized.

    No model and no download: for tests and smoke runs of the dense code paths. It finds
    documents sharing words, nothing more; real retrieval quality needs the bi-encoder.

    Examples
    --------
    >>> vectors = HashingEncoder(dim=16).encode(["river russia", "Russia river", ""])
    >>> vectors.shape, bool(np.allclose(vectors[0], vectors[1])), float(vectors[2].sum())
    ((3, 16), True, 0.0)
    """

    def __init__(self, dim: int = 64) -> None:
        self.dim = dim
        self.name = f"hashing-{dim}"
        self.calls = 0  # encoder calls so far; lets tests check what was (not) re-encoded

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        rows = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w\w+", text.lower()):
                digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
                value = int.from_bytes(digest, "little")
                rows[row, value % self.dim] += 1.0 if value >> 63 else -1.0
        norms = np.linalg.norm(rows, axis=1, keepdims=True)
        return rows / np.maximum(norms, 1e-12)


def encode_queries(encoder: Encoder, texts: Sequence[str]) -> np.ndarray:
    """Encode queries with ``encoder.encode_queries`` when it has one, else ``encode``."""
    method = getattr(encoder, "encode_queries", None)
    return np.asarray(method(list(texts)) if callable(method) else encoder.encode(list(texts)))


def encoder_name(encoder: Encoder) -> str:
    """A label for the manifest: the encoder's ``name`` attribute, else its class."""
    name = getattr(encoder, "name", None)
    return name if isinstance(name, str) else type(encoder).__name__


def encoder_version(encoder: Encoder) -> str:
    """The encoder's exact identity: its ``version`` attribute (the bi-encoder's includes its
    weights' hash and max length, what its vectors depend on), else :func:`encoder_name`."""
    version = getattr(encoder, "version", None)
    return version if isinstance(version, str) else encoder_name(encoder)


def encode_documents(
    docs: Sequence[Document],
    encoder: Encoder,
    batch_size: int = ENCODE_BATCH,
    on_progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Encode title + text of each document, in batches; returns a float32 matrix."""
    rows: list[np.ndarray] = []
    for start in range(0, len(docs), batch_size):
        batch = docs[start : start + batch_size]
        vectors = np.asarray(encoder.encode([doc.content for doc in batch]), dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(batch):
            raise ValueError(f"encoder returned shape {vectors.shape} for {len(batch)} texts")
        rows.append(vectors)
        if on_progress is not None:
            on_progress(len(batch))
    return np.vstack(rows) if rows else np.zeros((0, 0), dtype=np.float32)


class DenseIndex:
    """Document vectors (main matrix + delta + tombstones) searched exactly by inner product."""

    def __init__(
        self, vectors: np.ndarray, ids: list[str], model: str = "", version: str = ""
    ) -> None:
        if vectors.ndim != 2 or vectors.shape[0] != len(ids):
            raise ValueError(f"{vectors.shape[0]} vectors for {len(ids)} ids")
        self.model = model
        # The encoder's exact identity (weights and max length: ``encoder_version``), which a
        # reader of these vectors in place of its own must match; "" when not recorded.
        self.version = version
        self._vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self._ids = ids
        self._position = {doc_id: position for position, doc_id in enumerate(ids)}
        self._live = np.ones(len(ids), dtype=bool)
        self._delta: dict[str, np.ndarray] = {}
        self._delta_matrix: np.ndarray | None = None  # stacked lazily, after updates
        self._delta_ids: list[str] = []

    @property
    def dim(self) -> int:
        return int(self._vectors.shape[1])

    @classmethod
    def build(
        cls,
        docs: Sequence[Document],
        encoder: Encoder,
        *,
        batch_size: int = ENCODE_BATCH,
        on_progress: Callable[[int], None] | None = None,
    ) -> DenseIndex:
        """Encode every document once; ``on_progress`` gets the count encoded per batch."""
        if not docs:
            raise ValueError("cannot build a dense index from no documents")
        vectors = encode_documents(docs, encoder, batch_size, on_progress)
        ids = [doc.id for doc in docs]
        return cls(vectors, ids, encoder_name(encoder), encoder_version(encoder))

    def save(self, directory: str | Path) -> None:
        """Write the main matrix (``vectors.npy``), its ids and a manifest."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        temporary = directory / "vectors.tmp.npy"
        np.save(temporary, self._vectors)
        os.replace(temporary, directory / "vectors.npy")
        (directory / "ids.json").write_text(json.dumps(self._ids), encoding="utf-8")
        meta = {
            "format": FORMAT,
            "documents": len(self._ids),
            "dim": self.dim,
            "model": self.model,
            "version": self.version,
        }
        (directory / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")

    @classmethod
    def load(cls, directory: str | Path, mmap: bool = False) -> DenseIndex:
        """Load what :meth:`save` wrote (memory-mapped when ``mmap``)."""
        directory = Path(directory)
        if not (directory / "meta.json").exists():
            raise FileNotFoundError(f"no dense index in {directory}: build with --dense")
        meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
        vectors = np.load(directory / "vectors.npy", mmap_mode="r" if mmap else None)
        ids = json.loads((directory / "ids.json").read_text(encoding="utf-8"))
        return cls(np.asarray(vectors), ids, meta.get("model", ""), meta.get("version", ""))

    # ---- updates ------------------------------------------------------------------------

    def upsert(self, docs: Iterable[Document], encoder: Encoder) -> None:
        """Encode and add or replace documents."""
        docs = list(docs)
        self.upsert_vectors([doc.id for doc in docs], encode_documents(docs, encoder))

    def upsert_vectors(self, doc_ids: Sequence[str], vectors: np.ndarray) -> None:
        """Add or replace documents whose vectors are already known (replay, compaction)."""
        for doc_id, vector in zip(doc_ids, vectors, strict=True):
            self._tombstone(doc_id)
            self._delta.pop(doc_id, None)
            self._delta[doc_id] = np.asarray(vector, dtype=np.float32)
        self._delta_matrix = None

    def delete(self, doc_ids: Iterable[str]) -> int:
        """Remove documents; returns how many were live."""
        deleted = 0
        for doc_id in doc_ids:
            in_main = self._tombstone(doc_id)
            in_delta = self._delta.pop(doc_id, None) is not None
            deleted += in_main or in_delta
            if in_delta:
                self._delta_matrix = None
        return deleted

    def _tombstone(self, doc_id: str) -> bool:
        position = self._position.get(doc_id)
        if position is None or not self._live[position]:
            return False
        self._live[position] = False
        return True

    def vector(self, doc_id: str) -> np.ndarray | None:
        """The live vector of a document, or None."""
        if doc_id in self._delta:
            return self._delta[doc_id]
        position = self._position.get(doc_id)
        if position is None or not self._live[position]:
            return None
        return self._vectors[position]

    # ---- queries ------------------------------------------------------------------------

    def search(self, query: str, encoder: Encoder, k: int = 1000) -> list[Hit]:
        """Encode ``query`` and return the ``k`` nearest live documents."""
        if not query.strip() or k <= 0:
            return []
        return self.search_vector(encode_queries(encoder, [query])[0], k)

    def search_vector(self, vector: np.ndarray, k: int = 1000) -> list[Hit]:
        """The ``k`` live documents with the largest inner product with ``vector``."""
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        if vector.shape[0] != self.dim:
            raise ValueError(f"query vector has {vector.shape[0]} dims, the index {self.dim}")
        main = self._vectors @ vector
        main[~self._live] = -np.inf
        if self._delta_matrix is None:
            self._delta_ids = list(self._delta)
            rows = list(self._delta.values())
            self._delta_matrix = np.vstack(rows) if rows else np.zeros((0, self.dim), np.float32)
        scores = np.concatenate([main, self._delta_matrix @ vector])
        n_main = len(self._ids)
        return [
            Hit(self._ids[pos] if pos < n_main else self._delta_ids[pos - n_main], score)
            for pos, score in top_k(scores, k)
        ]

    def scores_for(self, vector: np.ndarray, doc_ids: Sequence[str]) -> np.ndarray:
        """Inner products of ``vector`` with the given documents (NaN where none is live)."""
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        out = np.full(len(doc_ids), np.nan, dtype=np.float32)
        for i, doc_id in enumerate(doc_ids):
            row = self.vector(doc_id)
            if row is not None:
                out[i] = float(row @ vector)
        return out

    # ---- state --------------------------------------------------------------------------

    def __contains__(self, doc_id: object) -> bool:
        return isinstance(doc_id, str) and self.vector(doc_id) is not None

    def __len__(self) -> int:
        return int(self._live.sum()) + len(self._delta)

    def live_vectors(self, doc_ids: Sequence[str]) -> np.ndarray:
        """Stack the live vectors of ``doc_ids`` in that order (compaction reuses them).

        Raises
        ------
        KeyError
            One of the documents has no live vector.
        """
        rows = []
        for doc_id in doc_ids:
            row = self.vector(doc_id)
            if row is None:
                raise KeyError(f"no vector for document {doc_id!r}")
            rows.append(row)
        return np.vstack(rows) if rows else np.zeros((0, self.dim), dtype=np.float32)

    def stats(self) -> dict[str, Any]:
        return {
            "main_documents": len(self._ids),
            "live_documents": len(self),
            "delta_documents": len(self._delta),
            "tombstones": int((~self._live).sum()),
            "dim": self.dim,
            "model": self.model,
        }

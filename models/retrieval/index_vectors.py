"""A first-stage index's own document vectors, read as a vector store by the dense tier.

A worker that runs the retrieve agent holds its index in memory, vectors included: the dense
tier can read a candidate's vector there instead of asking Redis, for the cost of a dictionary
lookup. Only a vector the tier would have stored itself is served: the index's encoder version
(weights and max length, recorded at build) must be the tier's, and the candidate's text must
be the document's as indexed (its hash is in the key, :func:`~streamrank.models.scoring.
score_cache.vector_key`). Anything else is a miss, and the next store is asked.

It is read-only (``read_only``): the index gets its vectors from ``index build`` and from the
``items`` updates it follows.

Examples
--------
>>> import numpy as np
>>> from streamrank.models.retrieval.corpus import Document
>>> from streamrank.models.retrieval.dense import HashingEncoder
>>> from streamrank.models.scoring.score_cache import vector_key
>>> doc = Document("d1", "Volga", "River in Russia.")
>>> stage = FirstStage.build([doc], encoder=HashingEncoder(dim=8))
>>> store = IndexVectors(stage)
>>> found = store.get_many([vector_key("hashing-8", "d1", doc.content),
...                         vector_key("hashing-8", "d1", "another text"),
...                         vector_key("other-model", "d1", doc.content)])
>>> [v is not None for v in found]
[True, False, False]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from streamrank.models.retrieval.corpus import Document
from streamrank.models.retrieval.first_stage import FirstStage
from streamrank.models.scoring.score_cache import parse_vector_key, text_hash


class IndexVectors:
    """The dense vectors of a :class:`FirstStage`, by content key (see the module docstring).

    Parameters
    ----------
    first_stage
        The index; its updates are seen as they happen.
    version
        The encoder version the index's vectors are of; default: what its build recorded
        (an index built before versions were recorded serves nothing: rebuild it).
    """

    read_only = True

    def __init__(self, first_stage: FirstStage, version: str | None = None) -> None:
        self.first_stage = first_stage
        dense = first_stage.dense
        self.version = version if version is not None else (dense.version if dense else "")
        # text hash per document, computed once per document object (a changed document is a
        # new object); hashing 1,000 texts per request would cost more than the lookup
        self._hashes: dict[str, tuple[Document, str]] = {}

    def _hash(self, doc: Document) -> str:
        known = self._hashes.get(doc.id)
        if known is not None and known[0] is doc:
            return known[1]
        digest = text_hash(doc.content)
        self._hashes[doc.id] = (doc, digest)
        return digest

    def get_many(self, keys: Sequence[str]) -> list[np.ndarray | None]:
        if not self.version or not keys:
            return [None] * len(keys)
        parsed = [parse_vector_key(key) for key in keys]
        stored = self.first_stage.stored_vectors([doc_id for _, _, doc_id in parsed])
        return [
            vector
            if doc is not None and version == self.version and digest == self._hash(doc)
            else None
            for (version, digest, _), (doc, vector) in zip(parsed, stored, strict=True)
        ]

    def set_many(self, vectors: Mapping[str, np.ndarray]) -> None:
        """Nothing: the index is read-only here."""

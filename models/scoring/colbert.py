"""Late interaction (ColBERT): token vectors per text, relevance = sum of per-query-token MaxSim.

The model folder holds answerai-colbert-small-v1 as an int8 ONNX BERT body. Input conventions
follow ColBERT (``colbert-ai``), which the model was trained with:

- a query is ``[CLS] [unused0] tokens [SEP]``, padded with ``[MASK]`` to ``query_length``
  (query augmentation: the ``[MASK]`` positions get vectors too and take part in MaxSim);
- a document is ``[CLS] [unused1] tokens [SEP]``, truncated to ``doc_length``, and the vectors
  of punctuation tokens are dropped;
- every token vector is L2-normalized; score(q, d) = sum over query tokens of the largest
  dot product with any document token.

The folder's ONNX graph ends at the BERT body (384-d ``last_hidden_state``): the model's
final 384 -> 96 linear projection is not in it, so vectors are the normalized 384-d hidden
states. That costs quality (see ``docs/models.md``) but document vectors are still computed
once and cached like the bi-encoder's.

Examples
--------
>>> q = np.array([[1.0, 0.0], [0.0, 1.0]])
>>> d = np.array([[0.6, 0.8], [1.0, 0.0]])
>>> maxsim(q, d)
1.8
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from streamrank.models.assets.model_files import sha256_file
from streamrank.models.onnx.sessions import load_session, physical_cores
from streamrank.models.scoring.bi_encoder import normalize
from streamrank.models.scoring.buckets import pad_batch, token_budget_batches
from streamrank.models.scoring.cross_encoder import resolve_model_folder

FOLDER = "colbert"
QUERY_MARKER = "[unused0]"
DOC_MARKER = "[unused1]"


def maxsim(query: np.ndarray, doc: np.ndarray) -> float:
    """Late-interaction score: for each query vector its best dot product with a doc vector."""
    if len(doc) == 0:
        return 0.0
    return float((query @ doc.T).max(axis=1).sum())


class ColBERT:
    """Token vectors for queries and documents, and MaxSim scores.

    Parameters
    ----------
    model_dir
        The model's folder, or a model directory holding a ``colbert`` folder.
    query_length
        Query tokens after ``[MASK]`` augmentation.
    doc_length
        Most tokens per document.
    batch_tokens
        Token budget of one batch.
    threads
        Batches run at the same time; default: the physical cores.
    """

    def __init__(
        self,
        model_dir: str | Path,
        query_length: int = 32,
        doc_length: int = 300,
        batch_tokens: int = 2048,
        threads: int | None = None,
    ) -> None:
        self.folder = resolve_model_folder(model_dir, FOLDER)
        self.query_length = query_length
        self.doc_length = doc_length
        self.batch_tokens = batch_tokens
        self.threads = threads or physical_cores()
        self.tokenizer = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self.session = load_session(self.folder / "model.onnx", threads=1)
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.output = self.session.get_outputs()[0].name
        self.version = f"{self.folder.name}-{sha256_file(self.folder / 'model.onnx')[:12]}"
        self.name = self.version
        ids = self.tokenizer.token_to_id
        self.cls, self.sep, self.mask = ids("[CLS]"), ids("[SEP]"), ids("[MASK]")
        self.query_marker, self.doc_marker = ids(QUERY_MARKER), ids(DOC_MARKER)
        self.skip = {token_id for p in string.punctuation if (token_id := ids(p)) is not None}
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="colbert")

    def _ids(self, texts: Sequence[str], marker: int, length: int) -> list[list[int]]:
        encodings = self.tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [[self.cls, marker, *e.ids[: length - 3], self.sep] for e in encodings]

    def encode_queries(self, texts: Sequence[str]) -> list[np.ndarray]:
        """One ``(query_length, dim)`` matrix of unit vectors per query."""
        rows = self._ids(texts, self.query_marker, self.query_length)
        rows = [row + [self.mask] * (self.query_length - len(row)) for row in rows]
        masks = [[0 if t == self.mask else 1 for t in row] for row in rows]
        return self._encode(rows, masks, keep_all=True)

    def encode_documents(self, texts: Sequence[str]) -> list[np.ndarray]:
        """One ``(tokens, dim)`` matrix of unit vectors per document, punctuation dropped."""
        rows = self._ids(texts, self.doc_marker, self.doc_length)
        return self._encode(rows, [[1] * len(row) for row in rows], keep_all=False)

    def score(self, query: np.ndarray, docs: Sequence[np.ndarray]) -> np.ndarray:
        """MaxSim of one encoded query against encoded documents."""
        return np.array([maxsim(query, doc) for doc in docs], dtype=np.float32)

    def _encode(
        self, rows: list[list[int]], masks: list[list[int]], keep_all: bool
    ) -> list[np.ndarray]:
        if not rows:
            return []
        lengths = np.array([len(r) for r in rows])
        batches = token_budget_batches(lengths, max(self.batch_tokens, int(lengths.max())))
        out: list[np.ndarray] = [np.zeros(0)] * len(rows)

        def run(batch: np.ndarray) -> list[np.ndarray]:
            feed = pad_batch([rows[i] for i in batch], [[0] * len(rows[i]) for i in batch])
            for j, i in enumerate(batch):
                feed["attention_mask"][j, : len(masks[i])] = masks[i]
            feed = {k: v for k, v in feed.items() if k in self.inputs}
            hidden = self.session.run([self.output], feed)[0]
            return [
                self._keep(hidden[j, : len(rows[i])], rows[i], keep_all)
                for j, i in enumerate(batch)
            ]

        for batch, matrices in zip(batches, self._pool.map(run, batches), strict=True):
            for i, matrix in zip(batch, matrices, strict=True):
                out[i] = matrix
        return out

    def _keep(self, hidden: np.ndarray, row: list[int], keep_all: bool) -> np.ndarray:
        if not keep_all:
            hidden = hidden[[t not in self.skip for t in row]]
        return normalize(hidden.astype(np.float32))

    def close(self) -> None:
        """Stop the worker threads."""
        self._pool.shutdown(wait=False)

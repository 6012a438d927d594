"""BM25 over a corpus that changes: a static bm25s index, a small delta and tombstones.

bm25s precomputes every (term, document) score into a sparse matrix, which makes queries fast
but the index static. Documents arriving on the ``items`` topic are handled like segments in
Lucene:

* the **main** index is a bm25s index built once (and again at each compaction);
* a changed or deleted main document gets a **tombstone**: its row is masked at query time;
* new and changed documents go to the **delta**, a few postings lists rebuilt in milliseconds.

Delta documents are scored with the main index's *frozen* statistics (document count,
average length and each term's document frequency, read back from the bm25s matrix), with the
same Lucene BM25 formula bm25s uses, so a document scores exactly as it would have in the main
index and the two score lists merge with one sort. Terms the main index has never seen take
their document frequency from the delta. The cost: statistics drift as the corpus changes
(tombstoned documents still count, as in Lucene before a merge), so callers compact (rebuild
the main index from the live documents) once the delta plus tombstones pass
:data:`COMPACT_RATIO` of the main index. See docs/retrieval.md.

Examples
--------
>>> from streamrank.models.retrieval.corpus import Document
>>> index = BM25Index.build([Document("d1", "Volga", "The longest river in Europe."),
...                          Document("d2", "Danube", "A river in Central Europe."),
...                          Document("d3", "Alps", "A mountain range.")])
>>> [hit.doc_id for hit in index.search("river europe", k=10)]
['d1', 'd2']
>>> index.upsert([Document("d4", "Rhine", "A river in Western Europe, the rhine.")])
>>> index.delete(["d1"])
1
>>> sorted(hit.doc_id for hit in index.search("river", k=10))
['d2', 'd4']
>>> index.search("zzz unknown", k=10)
[]
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import bm25s
import numpy as np
import Stemmer

from streamrank.models.retrieval.corpus import Document
from streamrank.models.retrieval.hits import Hit, top_k

FORMAT = 1
STOPWORDS = "en"  # bm25s's English list; the reference SciFact figure uses it
COMPACT_RATIO = 0.10  # compact when delta + tombstones exceed this share of the main index
COMPACT_MINIMUM = 500  # ... but never for fewer changes than this
TOKENIZE_CHUNK = 2000  # documents per tokenizer call: bounds memory and paces the progress bar


@cache
def _stemmer() -> Stemmer.Stemmer:
    return Stemmer.Stemmer("english")


def tokenize(texts: Sequence[str]) -> list[list[str]]:
    """Lower-case, split on words of 2+ characters, drop English stop words, Snowball-stem.

    Examples
    --------
    >>> tokenize(["The rivers of Russia"])
    [['river', 'russia']]
    """
    if not texts:
        return []
    return bm25s.tokenize(
        list(texts),
        lower=True,
        stopwords=STOPWORDS,
        stemmer=_stemmer(),
        return_ids=False,
        show_progress=False,
    )


def _atomic_write_text(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


class BM25Index:
    """A bm25s main index plus an in-memory delta and tombstones; see the module docstring.

    Build with :meth:`build` or :meth:`load`. :meth:`save` writes the main index only; the
    delta is the caller's to persist (the first stage keeps the documents and replays them).
    """

    def __init__(
        self, retriever: bm25s.BM25, ids: list[str], avg_doc_len: float, stopwords: str
    ) -> None:
        self._main = retriever
        self._ids = ids
        self._position = {doc_id: position for position, doc_id in enumerate(ids)}
        self._live = np.ones(len(ids), dtype=bool)
        self._avg_doc_len = avg_doc_len
        self._stopwords = stopwords
        # Each CSC column holds one term's postings, so its length is the term's document
        # frequency: the statistics of the main index are recoverable from bm25s's own matrix.
        self._df = np.diff(np.asarray(retriever.scores["indptr"]))
        self._delta: dict[str, list[str]] = {}  # doc id -> tokens, in arrival order
        self._delta_ids: list[str] = []
        self._postings: dict[str, tuple[np.ndarray, np.ndarray]] | None = {}

    # ---- building and persistence -------------------------------------------------------

    @classmethod
    def build(
        cls,
        docs: Sequence[Document],
        *,
        k1: float = 1.5,
        b: float = 0.75,
        on_progress: Callable[[int], None] | None = None,
    ) -> BM25Index:
        """Index ``docs`` (title + text); ``on_progress`` gets the count of documents tokenized.

        Raises
        ------
        ValueError
            No documents, or no indexable term in any of them.
        """
        if not docs:
            raise ValueError("cannot build a BM25 index from no documents")
        tokens: list[list[str]] = []
        for start in range(0, len(docs), TOKENIZE_CHUNK):
            batch = docs[start : start + TOKENIZE_CHUNK]
            tokens.extend(tokenize([doc.content for doc in batch]))
            if on_progress is not None:
                on_progress(len(batch))
        if not any(tokens):
            raise ValueError("no indexable term in any document (only stop words?)")
        retriever = bm25s.BM25(k1=k1, b=b, method="lucene")
        retriever.index(tokens, show_progress=False)
        # bm25s does not keep the average length; it is needed to score delta documents.
        avg_doc_len = float(np.mean([len(doc_tokens) for doc_tokens in tokens]))
        return cls(retriever, [doc.id for doc in docs], avg_doc_len, STOPWORDS)

    def save(self, directory: str | Path) -> None:
        """Write the main index (bm25s files plus ids and statistics) into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._main.save(str(directory / "bm25s"), show_progress=False)
        _atomic_write_text(directory / "ids.json", json.dumps(self._ids))
        meta = {
            "format": FORMAT,
            "documents": len(self._ids),
            "avg_doc_len": self._avg_doc_len,
            "stopwords": self._stopwords,
            "stemmer": "snowball-english (PyStemmer)",
            "bm25s": bm25s.__version__,
        }
        _atomic_write_text(directory / "meta.json", json.dumps(meta, indent=2))

    @classmethod
    def load(cls, directory: str | Path) -> BM25Index:
        """Load what :meth:`save` wrote.

        Raises
        ------
        FileNotFoundError
            ``directory`` holds no index, naming the command that builds one.
        """
        directory = Path(directory)
        meta_path = directory / "meta.json"
        if not meta_path.exists():
            raise FileNotFoundError(
                f"no BM25 index in {directory}: build one with `streamrank index build`"
            )
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT:
            raise ValueError(f"{directory}: index format {meta.get('format')}, expected {FORMAT}")
        retriever = bm25s.BM25.load(str(directory / "bm25s"), show_progress=False)
        ids = json.loads((directory / "ids.json").read_text(encoding="utf-8"))
        return cls(retriever, ids, float(meta["avg_doc_len"]), meta["stopwords"])

    # ---- updates ------------------------------------------------------------------------

    def upsert(self, docs: Iterable[Document]) -> None:
        """Add new documents or replace existing ones, without rebuilding the main index."""
        docs = list(docs)
        for doc, doc_tokens in zip(docs, tokenize([doc.content for doc in docs]), strict=True):
            self._tombstone(doc.id)
            self._delta.pop(doc.id, None)  # re-inserted below, at the end of arrival order
            self._delta[doc.id] = doc_tokens
        self._postings = None

    def delete(self, doc_ids: Iterable[str]) -> int:
        """Remove documents; returns how many were live. Unknown ids are ignored."""
        deleted = 0
        for doc_id in doc_ids:
            in_main = self._tombstone(doc_id)
            in_delta = self._delta.pop(doc_id, None) is not None
            deleted += in_main or in_delta
            self._postings = None if in_delta else self._postings
        return deleted

    def _tombstone(self, doc_id: str) -> bool:
        position = self._position.get(doc_id)
        if position is None or not self._live[position]:
            return False
        self._live[position] = False
        return True

    # ---- queries ------------------------------------------------------------------------

    def search(self, query: str, k: int = 1000) -> list[Hit]:
        """The top ``k`` live documents for ``query``; empty when no query term matches."""
        # "" is bm25s's placeholder for empty documents, never a query term.
        terms = [term for term in tokenize([query])[0] if term]
        if not terms or k <= 0:
            return []
        scores = np.concatenate([self._main_scores(terms), self._delta_scores(terms)])
        n_main = len(self._ids)
        return [
            Hit(self._ids[pos] if pos < n_main else self._delta_ids[pos - n_main], score)
            for pos, score in top_k(scores, k, min_score=0.0)
        ]

    def _main_scores(self, terms: list[str]) -> np.ndarray:
        vocab = self._main.vocab_dict
        # Duplicated query terms count twice, as bm25s does; the delta does the same.
        term_ids = [vocab[term] for term in terms if term in vocab and vocab[term] < len(self._df)]
        if not term_ids:
            return np.zeros(len(self._ids), dtype=np.float32)
        return self._main.get_scores_from_ids(term_ids) * self._live

    def _delta_scores(self, terms: list[str]) -> np.ndarray:
        if self._postings is None:
            self._rebuild_postings()
        assert self._postings is not None
        scores = np.zeros(len(self._delta_ids), dtype=np.float32)
        for term in terms:
            if term in self._postings:
                positions, weights = self._postings[term]
                scores[positions] += weights
        return scores

    def _rebuild_postings(self) -> None:
        """Score every delta (term, document) pair with the frozen main statistics."""
        vocab, n_main = self._main.vocab_dict, len(self._ids)
        k1, b = float(self._main.k1), float(self._main.b)
        self._delta_ids = list(self._delta)
        n_all = n_main + len(self._delta_ids)
        unseen_df = Counter(
            term
            for doc_tokens in self._delta.values()
            for term in set(doc_tokens)
            if vocab.get(term, len(self._df)) >= len(self._df)
        )
        lists: dict[str, tuple[list[int], list[float]]] = defaultdict(lambda: ([], []))
        for position, doc_tokens in enumerate(self._delta.values()):
            # Lucene BM25 as bm25s computes it: idf * tf / (tf + k1 * (1 - b + b * dl / avgdl))
            norm = k1 * (1 - b + b * len(doc_tokens) / self._avg_doc_len)
            for term, tf in Counter(doc_tokens).items():
                column = vocab.get(term, len(self._df))
                df, n = (
                    (int(self._df[column]), n_main)
                    if column < len(self._df)
                    else (unseen_df[term], n_all)
                )
                idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
                lists[term][0].append(position)
                lists[term][1].append(idf * tf / (tf + norm))
        self._postings = {
            term: (np.asarray(positions, dtype=np.int64), np.asarray(weights, dtype=np.float32))
            for term, (positions, weights) in lists.items()
        }

    # ---- state --------------------------------------------------------------------------

    def __contains__(self, doc_id: object) -> bool:
        position = self._position.get(doc_id) if isinstance(doc_id, str) else None
        return doc_id in self._delta or (position is not None and bool(self._live[position]))

    def __len__(self) -> int:
        """Live documents."""
        return int(self._live.sum()) + len(self._delta)

    @property
    def needs_compaction(self) -> bool:
        """Whether the delta and tombstones are large enough that statistics may have drifted."""
        changes = len(self._delta) + int((~self._live).sum())
        return changes > max(COMPACT_MINIMUM, COMPACT_RATIO * len(self._ids))

    def stats(self) -> dict[str, Any]:
        """Sizes of the main index, the delta and the tombstones."""
        return {
            "main_documents": len(self._ids),
            "live_documents": len(self),
            "delta_documents": len(self._delta),
            "tombstones": int((~self._live).sum()),
            "vocabulary": len(self._df),
            "avg_doc_len": round(self._avg_doc_len, 2),
        }

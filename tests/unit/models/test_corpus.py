"""Reading BEIR collections: good lines kept, bad lines reported by number, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamrank.models.retrieval.corpus import (
    CollectionError,
    Document,
    read_corpus,
    read_qrels,
    read_queries,
)


def write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_malformed_lines_are_reported_with_their_numbers_and_the_rest_kept(tmp_path: Path):
    corpus = write(
        tmp_path / "corpus.jsonl",
        b'{"_id": "d1", "title": "Volga", "text": "River in Russia."}\n'
        b"{not json\n"
        b"\n"  # blank lines are not errors
        b'["a", "list"]\n'
        b'{"title": "no id"}\n'
        b'{"_id": "d2", "title": "", "text": ""}\n'
        b'{"_id": "d1", "title": "again", "text": "duplicate"}\n'
        b'{"_id": "d3", "text": "caf\xe9 latin-1"}\n'
        b'{"_id": 7, "title": "numeric id", "text": "kept as a string"}\n'
        b'{"_id": "d4", "title": null, "text": "no title"}\n',
    )
    docs, report = read_corpus(corpus)
    assert [doc.id for doc in docs] == ["d1", "7", "d4"]
    assert docs[2] == Document("d4", "", "no title")
    assert [(bad.line, bad.reason) for bad in report.bad] == [
        (2, "not valid JSON"),
        (4, "not a JSON object"),
        (5, "missing or invalid _id"),
        (6, "empty title and text"),
        (7, "duplicate _id 'd1'"),
        (8, "not UTF-8"),
    ]
    assert report.kept == 3 and report.skipped == 6
    assert "line 2: not valid JSON" in report.summary()


def test_missing_and_empty_files_raise_a_clear_error(tmp_path: Path):
    with pytest.raises(CollectionError, match="corpus file not found"):
        read_corpus(tmp_path / "nope.jsonl")
    with pytest.raises(CollectionError, match="corpus file is empty"):
        read_corpus(write(tmp_path / "empty.jsonl", ""))
    with pytest.raises(CollectionError, match=r"no usable document.*line 1: not valid JSON"):
        read_corpus(write(tmp_path / "bad.jsonl", "garbage\n"))


def test_progress_callback_sees_every_byte(tmp_path: Path):
    corpus = write(tmp_path / "c.jsonl", '{"_id": "a", "text": "x"}\n{"_id": "b", "text": "y"}\n')
    seen: list[int] = []
    read_corpus(corpus, on_bytes=seen.append)
    assert sum(seen) == corpus.stat().st_size


def test_queries_keep_good_lines(tmp_path: Path):
    queries = write(tmp_path / "q.jsonl", '{"_id": "1", "text": "a"}\n{"_id": "2"}\n')
    loaded = read_queries(queries)
    assert loaded.items == {"1": "a"}
    assert [(bad.line, bad.reason) for bad in loaded.report.bad] == [(2, "missing or empty text")]


def test_qrels_trec_and_beir_layouts(tmp_path: Path):
    trec = write(tmp_path / "trec.txt", "q1 0 d1 2\nq1 0 d2 0\nq2 0 d3 1\nbroken\nq3 0 d4 x\n")
    loaded = read_qrels(trec)
    assert loaded.items == {"q1": {"d1": 2, "d2": 0}, "q2": {"d3": 1}}
    assert [bad.line for bad in loaded.report.bad] == [4, 5]
    beir = write(tmp_path / "beir.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    loaded = read_qrels(beir)
    assert loaded.items == {"q1": {"d1": 1}} and not loaded.report.bad

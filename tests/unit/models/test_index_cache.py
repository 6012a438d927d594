"""Index caches are keyed by the corpus file's content and verified on load.

Two corpora in folders of the same name (``a/beir/`` and ``b/beir/``) once shared one cached
index, and the second was silently evaluated against the first's documents.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streamrank.models.evaluation import pipeline
from streamrank.models.retrieval import first_stage
from streamrank.models.retrieval.corpus import Document, write_corpus
from streamrank.models.retrieval.dense import HashingEncoder
from streamrank.models.retrieval.first_stage import (
    FirstStage,
    IndexMismatchError,
    build_index,
    corpus_sha256,
    default_index_dir,
    recorded_corpus_sha256,
)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setattr(first_stage, "CACHE_DIR", folder)
    return folder


def corpus_in(folder: Path, words: str) -> Path:
    folder.mkdir(parents=True)
    path = folder / "corpus.jsonl"
    write_corpus(path, [Document(f"{words}-{n}", words, f"{words} number {n}") for n in range(3)])
    return path


def test_corpora_in_folders_of_the_same_name_get_different_index_folders(
    tmp_path: Path, cache: Path
) -> None:
    rivers = corpus_in(tmp_path / "a" / "beir", "river")
    mountains = corpus_in(tmp_path / "b" / "beir", "mountain")
    first, second = default_index_dir(rivers), default_index_dir(mountains)
    assert first != second
    assert first.parent == second.parent == cache / "index"
    assert first.name.startswith("beir-") and second.name.startswith("beir-")
    same_bytes = tmp_path / "c" / "beir"
    same_bytes.mkdir(parents=True)
    (same_bytes / "corpus.jsonl").write_bytes(rivers.read_bytes())
    assert default_index_dir(same_bytes / "corpus.jsonl") == first
    assert default_index_dir(rivers, HashingEncoder(dim=8)) != first  # dense: another index


def test_each_corpus_is_evaluated_against_its_own_documents(tmp_path: Path, cache: Path) -> None:
    rivers = corpus_in(tmp_path / "a" / "beir", "river")
    mountains = corpus_in(tmp_path / "b" / "beir", "mountain")
    river_stage = pipeline.load_stage(rivers, None, "bm25", tmp_path / "no-models")
    mountain_stage = pipeline.load_stage(mountains, None, "bm25", tmp_path / "no-models")
    assert river_stage.get("river-0") is not None and river_stage.get("mountain-0") is None
    assert mountain_stage.get("mountain-0") is not None and mountain_stage.get("river-0") is None
    assert mountain_stage.corpus_sha256 == corpus_sha256(mountains)


def test_an_index_records_the_corpus_it_was_built_from(tmp_path: Path) -> None:
    corpus = corpus_in(tmp_path / "beir", "river")
    build_index(corpus, tmp_path / "index")
    assert recorded_corpus_sha256(tmp_path / "index") == corpus_sha256(corpus)
    stage = FirstStage.load(tmp_path / "index")
    stage.upsert([Document("new", "new", "a document added later")])
    stage.compact()
    stage.save(tmp_path / "index")  # a rewritten manifest keeps the record
    assert recorded_corpus_sha256(tmp_path / "index") == corpus_sha256(corpus)


def test_a_given_index_of_another_corpus_is_refused(tmp_path: Path) -> None:
    rivers = corpus_in(tmp_path / "a" / "beir", "river")
    mountains = corpus_in(tmp_path / "b" / "beir", "mountain")
    build_index(rivers, tmp_path / "river-index")
    with pytest.raises(IndexMismatchError, match="built from another corpus"):
        pipeline.load_stage(mountains, tmp_path / "river-index", "bm25", tmp_path)
    assert pipeline.load_stage(rivers, tmp_path / "river-index", "bm25", tmp_path).get("river-1")


def test_a_tampered_cached_index_is_rebuilt(tmp_path: Path, cache: Path) -> None:
    rivers = corpus_in(tmp_path / "a" / "beir", "river")
    mountains = corpus_in(tmp_path / "b" / "beir", "mountain")
    cached = default_index_dir(rivers)
    build_index(mountains, cached)  # another corpus's index where this one's belongs
    manifest = json.loads((cached / "manifest.json").read_text())
    assert manifest["corpus_sha256"] != corpus_sha256(rivers)
    stage = pipeline.load_stage(rivers, None, "bm25", tmp_path)
    assert stage.get("river-0") is not None and stage.get("mountain-0") is None
    assert recorded_corpus_sha256(cached) == corpus_sha256(rivers)


def test_an_index_without_a_record_is_refused_when_given(tmp_path: Path) -> None:
    corpus = corpus_in(tmp_path / "beir", "river")
    build_index(corpus, tmp_path / "index")
    manifest_path = tmp_path / "index" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["corpus_sha256"]  # as an index built before indexes recorded their corpus
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(IndexMismatchError, match="no corpus sha256"):
        pipeline.load_stage(corpus, tmp_path / "index", "bm25", tmp_path)

"""BM25 with incremental updates: delta scores comparable with the main index, tombstones."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamrank.models.retrieval.bm25 import BM25Index, tokenize
from streamrank.models.retrieval.corpus import Document

DOCS = [
    Document("volga", "Volga", "The Volga is the longest river in Europe, flowing through Russia."),
    Document("ob", "Ob", "The Ob is a major river in Siberia, Russia."),
    Document("danube", "Danube", "The Danube is a river in Central Europe."),
    Document("alps", "Alps", "The Alps are the highest mountain range in Europe."),
    Document("everest", "Everest", "Mount Everest is the highest mountain above sea level."),
    Document("tomato", "Tomato", "The tomato is the edible berry of the plant Solanum."),
]


def scores(index: BM25Index, query: str, k: int = 100) -> dict[str, float]:
    return {hit.doc_id: hit.score for hit in index.search(query, k)}


@pytest.fixture
def index() -> BM25Index:
    return BM25Index.build(DOCS)


def test_tokenizer_stems_and_drops_stop_words():
    assert tokenize(["The rivers are flowing"]) == [["river", "flow"]]


def test_search_ranks_and_respects_k(index: BM25Index):
    hits = index.search("river russia", k=2)
    assert [hit.doc_id for hit in hits] == ["ob", "volga"]
    assert hits[0].score >= hits[1].score > 0


def test_no_hits_is_an_empty_list_not_an_error(index: BM25Index):
    assert index.search("zebra quantum", k=10) == []
    assert index.search("the of and", k=10) == []  # only stop words
    assert index.search("", k=10) == []
    assert index.search("river", k=0) == []


def test_k_larger_than_the_corpus_returns_only_matching_documents(index: BM25Index):
    assert {hit.doc_id for hit in index.search("highest", k=1000)} == {"alps", "everest"}


def test_reindexed_document_scores_exactly_as_in_the_main_index(index: BM25Index):
    """The delta uses the main index's frozen statistics, so scores are comparable."""
    before = scores(index, "river river russia europe")  # repeated terms count twice
    index.upsert([DOCS[0]])  # the same Volga, now served from the delta
    after = scores(index, "river river russia europe")
    assert after.keys() == before.keys()
    for doc_id, score in before.items():
        assert after[doc_id] == pytest.approx(score, rel=1e-5)
    assert index.stats()["delta_documents"] == 1 and index.stats()["tombstones"] == 1


def test_changed_document_is_found_by_its_new_text_only(index: BM25Index):
    index.upsert([Document("tomato", "Tomato", "A red fruit grown in Siberia.")])
    assert "tomato" in scores(index, "siberia")
    assert "tomato" not in scores(index, "solanum berry")
    assert len(index) == len(DOCS)


def test_new_document_with_unseen_terms(index: BM25Index):
    index.upsert([Document("lena", "Lena", "The Lena river flows into the Laptev Sea.")])
    assert index.search("laptev", k=5)[0].doc_id == "lena"
    # An unseen term is rare: it should outweigh a common one.
    assert index.search("laptev river", k=5)[0].doc_id == "lena"
    assert "lena" in index and len(index) == len(DOCS) + 1


def test_deletes_are_honoured_in_main_and_delta(index: BM25Index):
    index.upsert([Document("lena", "Lena", "A river in Russia.")])
    assert index.delete(["volga", "lena", "unknown"]) == 2
    assert index.delete(["volga"]) == 0  # already gone
    assert set(scores(index, "river russia")) == {"ob", "danube"}
    assert "volga" not in index and "lena" not in index
    index.upsert([Document("volga", "Volga", "Back again, a river.")])
    assert "volga" in scores(index, "river")


def test_save_and_load_round_trip(index: BM25Index, tmp_path: Path):
    index.save(tmp_path / "bm25")
    loaded = BM25Index.load(tmp_path / "bm25")
    assert scores(loaded, "highest mountain europe") == scores(index, "highest mountain europe")
    loaded.upsert([DOCS[3]])
    assert scores(loaded, "alps")["alps"] == pytest.approx(scores(index, "alps")["alps"], rel=1e-5)


def test_load_from_an_empty_directory_names_the_build_command(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="streamrank index build"):
        BM25Index.load(tmp_path)


def test_compaction_is_suggested_once_changes_pile_up(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("streamrank.models.retrieval.bm25.COMPACT_MINIMUM", 2)
    index = BM25Index.build(DOCS)
    index.upsert([Document("x1", "x", "new")])
    index.delete(["alps"])
    assert not index.needs_compaction
    index.upsert([Document("x2", "x", "newer")])
    assert index.needs_compaction


def test_build_rejects_no_documents_and_reports_progress():
    with pytest.raises(ValueError, match="no documents"):
        BM25Index.build([])
    with pytest.raises(ValueError, match="no indexable term"):
        BM25Index.build([Document("a", "the", "of and")])
    done: list[int] = []
    BM25Index.build(DOCS, on_progress=done.append)
    assert sum(done) == len(DOCS)

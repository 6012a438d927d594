"""queries -> candidates -> rankings through the real broker, with a real BM25 index."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from streamrank.models.retrieval.first_stage import build_index
from streamrank.streams.config import Settings
from streamrank.streams.events import Item, Query
from tests.helpers import consume, produce

pytestmark = pytest.mark.integration

CORPUS = [
    {"_id": "volga", "title": "Volga", "text": "The Volga is the longest river in Europe."},
    {"_id": "ob", "title": "Ob", "text": "The Ob is a major river in western Siberia, Russia."},
    {"_id": "paris", "title": "Paris", "text": "Paris is the capital of France."},
    {"_id": "moscow", "title": "Moscow", "text": "Moscow is the capital of Russia."},
]


@pytest.fixture
def index_dir(tmp_path: Path) -> Path:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("\n".join(json.dumps(doc) for doc in CORPUS) + "\n")
    build_index(corpus, tmp_path / "index")
    return tmp_path / "index"


def test_a_query_comes_out_ranked(settings: Settings, start_worker, index_dir: Path) -> None:
    start_worker({"STREAMRANK_INDEX_DIR": str(index_dir), "STREAMRANK_RETRIEVE_METHOD": "bm25"})
    produce(settings, "queries", [Query(request_id="q1", query="river in Russia").to_bytes()])

    candidates = json.loads(consume(settings, "candidates", 1)[0].value)
    assert candidates["request_id"] == "q1"
    ids = [candidate["doc_id"] for candidate in candidates["candidates"]]
    assert ids[0] == "ob" and "paris" not in ids
    assert all(candidate["text"] for candidate in candidates["candidates"])
    ranking = json.loads(consume(settings, "rankings", 1)[0].value)
    assert ranking["request_id"] == "q1"
    assert {item["doc_id"] for item in ranking["items"]} == set(ids)


def test_items_update_every_workers_index(
    settings: Settings, start_worker, index_dir: Path
) -> None:
    start_worker({"STREAMRANK_INDEX_DIR": str(index_dir), "STREAMRANK_RETRIEVE_METHOD": "bm25"})
    new = Item(doc_id="lena", title="Lena", text="The Lena is a Siberian river, tundra.")
    produce(settings, "items", [new.to_bytes(), Item(doc_id="ob", op="delete").to_bytes()])
    time.sleep(3)  # the index follower applies the updates
    produce(settings, "queries", [Query(request_id="q2", query="siberian river tundra").to_bytes()])
    candidates = json.loads(consume(settings, "candidates", 1)[0].value)
    ids = [candidate["doc_id"] for candidate in candidates["candidates"]]
    assert ids[0] == "lena"
    assert "ob" not in ids


def test_a_query_with_no_hits_gets_an_empty_ranking(
    settings: Settings, start_worker, index_dir: Path
) -> None:
    start_worker({"STREAMRANK_INDEX_DIR": str(index_dir), "STREAMRANK_RETRIEVE_METHOD": "bm25"})
    produce(settings, "queries", [Query(request_id="q3", query="zzzz qqqq").to_bytes()])
    assert json.loads(consume(settings, "candidates", 1)[0].value)["candidates"] == []
    assert json.loads(consume(settings, "rankings", 1)[0].value)["items"] == []

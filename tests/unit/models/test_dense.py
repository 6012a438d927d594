"""Dense and hybrid retrieval, the first-stage directory, updates that survive a reload.

Pure logic runs with :class:`HashingEncoder` (deterministic, no model). The last test uses the
real bi-encoder when its model files have been fetched, and skips with a message otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from streamrank.models.assets.model_files import default_model_dir
from streamrank.models.retrieval.corpus import Document, write_corpus
from streamrank.models.retrieval.dense import DenseIndex, HashingEncoder
from streamrank.models.retrieval.first_stage import FirstStage, Fusion, build_index
from streamrank.models.retrieval.hits import Hit, reciprocal_rank_fusion, top_k
from streamrank.models.scoring.bi_encoder import FOLDER as BI_ENCODER_FOLDER
from streamrank.models.scoring.bi_encoder import bi_encoder_available, load_bi_encoder

MODEL_DIR = default_model_dir()

DOCS = [
    Document("volga", "Volga", "The Volga is the longest river in Europe, flowing through Russia."),
    Document("ob", "Ob", "The Ob is a major river in Siberia, Russia."),
    Document("danube", "Danube", "The Danube is a river in Central Europe."),
    Document("alps", "Alps", "The Alps are the highest mountain range in Europe."),
    Document("everest", "Everest", "Mount Everest is the highest mountain above sea level."),
    Document("tomato", "Tomato", "The tomato is the edible berry of the plant Solanum."),
]


def ids(hits: list[Hit]) -> list[str]:
    return [hit.doc_id for hit in hits]


def test_top_k_orders_by_score_then_position_and_skips_masked():
    scores = np.array([1.0, 3.0, -np.inf, 3.0, 0.0])
    assert top_k(scores, 3) == [(1, 3.0), (3, 3.0), (0, 1.0)]
    assert top_k(scores, 10, min_score=0.0) == [(1, 3.0), (3, 3.0), (0, 1.0)]
    assert top_k(scores, 0) == []


def test_rrf_weights_and_constant():
    bm25 = [Hit("a", 10.0), Hit("b", 9.0), Hit("c", 8.0)]
    dense = [Hit("c", 0.9), Hit("b", 0.8)]
    fused = reciprocal_rank_fusion({"bm25": bm25, "dense": dense}, k=3, constant=1.0)
    # b: 1/3 + 1/3; c: 1/4 + 1/2; a: 1/2
    assert ids(fused) == ["c", "b", "a"]
    assert fused[0].score == pytest.approx(0.75)
    only_dense = reciprocal_rank_fusion(
        {"bm25": bm25, "dense": dense}, k=3, constant=1.0, weights={"bm25": 0.0}
    )
    assert ids(only_dense) == ["c", "b"]


def test_dense_search_updates_and_masking():
    encoder = HashingEncoder()
    index = DenseIndex.build(DOCS, encoder)
    assert index.search("highest mountain", encoder, k=2)[0].doc_id in {"alps", "everest"}
    index.upsert([Document("alps", "Alps", "A red fruit, the tomato berry.")], encoder)
    assert "alps" not in ids(index.search("highest mountain range", encoder, k=2))
    assert index.delete(["tomato", "nope"]) == 1
    assert "tomato" not in ids(index.search("tomato berry", encoder, k=6))
    assert len(index) == len(DOCS) - 1
    assert index.search("   ", encoder) == []
    with pytest.raises(ValueError, match="dims"):
        index.search_vector(np.ones(3))


@pytest.fixture
def stage() -> FirstStage:
    return FirstStage.build(DOCS, HashingEncoder())


def test_methods_agree_on_an_easy_query(stage: FirstStage):
    for method in ("bm25", "dense", "hybrid"):
        assert stage.retrieve("Siberia Ob river", k=3, method=method)[0].doc_id == "ob", method
    with pytest.raises(ValueError, match="unknown method"):
        stage.retrieve("x", method="splade")  # type: ignore[arg-type]


def test_hybrid_reads_both_lists_with_configured_weights(stage: FirstStage):
    stage.fusion = Fusion(constant=60.0, bm25_weight=1.0, dense_weight=0.0)
    assert ids(stage.retrieve("river", k=3, method="hybrid")) == ids(stage.retrieve("river", k=3))


def test_bm25_only_index_refuses_dense_with_a_clear_message():
    stage = FirstStage.build(DOCS)
    with pytest.raises(RuntimeError, match="no dense vectors"):
        stage.retrieve("river", method="dense")


def test_updates_survive_save_and_load_without_re_encoding(stage: FirstStage, tmp_path: Path):
    stage.save(tmp_path)
    assert stage.upsert([Document("lena", "Lena", "The Lena river flows to the Laptev Sea.")]) == 1
    assert stage.upsert([DOCS[1]]) == 0  # identical re-delivery: nothing to do
    assert stage.upsert([Document("ob", "Ob", "Now about the Laptev Sea coast.")]) == 1
    assert stage.delete(["tomato", "missing"]) == 1
    stage.save(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["documents"] == len(DOCS) and manifest["dense"]

    encoder = HashingEncoder()
    loaded = FirstStage.load(tmp_path, encoder)
    assert encoder.calls == 0  # delta vectors came from updates.npz
    for method in ("bm25", "dense", "hybrid"):
        assert ids(loaded.retrieve("laptev sea", 10, method)) == ids(
            stage.retrieve("laptev sea", 10, method)
        ), method
    assert loaded.get("tomato") is None and loaded.get("ob") == stage.get("ob")
    assert loaded.stats()["pending_updates"] == 2 and loaded.stats()["pending_deletes"] == 1
    # the main files still hold the documents as they were indexed
    main = (tmp_path / "docs.jsonl").read_text()
    assert "Solanum" in main and "Laptev" not in main


def test_compaction_folds_updates_into_the_main_indexes(stage: FirstStage, tmp_path: Path):
    stage.upsert([Document("lena", "Lena", "The Lena river flows to the Laptev Sea.")])
    stage.delete(["tomato"])
    encoder_calls = stage.encoder.calls  # type: ignore[union-attr]
    stage.compact()
    assert stage.encoder.calls == encoder_calls  # type: ignore[union-attr]  # vectors reused
    assert stage.stats()["pending_updates"] == 0 and stage.stats()["bm25"]["tombstones"] == 0
    assert len(stage) == len(DOCS)
    assert stage.retrieve("laptev", 1)[0].doc_id == "lena"
    stage.save(tmp_path)
    assert "Laptev" in (tmp_path / "docs.jsonl").read_text()


def test_build_index_summary(tmp_path: Path):
    corpus = tmp_path / "corpus.jsonl"
    write_corpus(corpus, DOCS)
    with corpus.open("a") as handle:
        handle.write("{broken\n")
    summary = build_index(corpus, tmp_path / "index", HashingEncoder(dim=32))
    assert summary.documents == len(DOCS) and summary.skipped_lines == 1
    assert summary.bad_lines == [{"line": len(DOCS) + 1, "reason": "not valid JSON"}]
    assert summary.dense and summary.dense_model == "hashing-32"
    assert summary.size_bytes["total"] > 0 and summary.peak_rss_mib > 0
    assert FirstStage.load(tmp_path / "index").retrieve("everest", 1)[0].doc_id == "everest"


def test_real_bi_encoder_if_fetched():
    if not bi_encoder_available(MODEL_DIR):
        pytest.skip(
            f"bi-encoder model not fetched ({MODEL_DIR / BI_ENCODER_FOLDER}): "
            "run `streamrank models fetch`"
        )
    encoder = load_bi_encoder(MODEL_DIR)
    vectors = encoder.encode([doc.content for doc in DOCS[:2]])
    assert vectors.dtype == np.float32 and vectors.shape[0] == 2
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)
    stage = FirstStage.build(DOCS, encoder)
    assert stage.retrieve("what is the tallest peak on earth", 1, "dense")[0].doc_id == "everest"

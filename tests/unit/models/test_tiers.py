"""The vector tiers read stored vectors and never encode a document in a request; the vector
stores they read (layered LRU, a first-stage index's own vectors). Toy encoders, no models."""

from __future__ import annotations

import numpy as np
import pytest

from streamrank.models.retrieval.corpus import Document
from streamrank.models.retrieval.dense import HashingEncoder
from streamrank.models.retrieval.first_stage import FirstStage
from streamrank.models.retrieval.index_vectors import IndexVectors
from streamrank.models.scoring.budget import CostModel
from streamrank.models.scoring.cascade import Cascade
from streamrank.models.scoring.score_cache import InMemoryCache, LayeredVectors, vector_key
from streamrank.models.scoring.tiers import DenseTier, FunctionTier
from streamrank.models.types import TextCandidate


class ToyBiEncoder(HashingEncoder):
    """A bi-encoder stand-in that counts the documents and queries it encodes."""

    def __init__(self) -> None:
        super().__init__(dim=32)
        self.documents = 0
        self.queries = 0
        self.batches: list[int] = []

    @property
    def version(self) -> str:
        return f"{self.name}-L512"

    def encode(self, texts):
        self.documents += len(texts)
        self.batches.append(len(texts))
        return super().encode(texts)

    def encode_queries(self, texts):
        self.queries += len(texts)
        return super().encode(texts)


TEXTS = ["rivers of russia", "the volga river", "alpine mountains", "river deltas", "bananas"]


def docs(texts: list[str] = TEXTS) -> list[TextCandidate]:
    return [TextCandidate(f"d{i}", t, float(10 - i)) for i, t in enumerate(texts)]


def dense_tier(cache=None) -> tuple[DenseTier, ToyBiEncoder]:
    encoder = ToyBiEncoder()
    tier = DenseTier(encoder, cache, cost=CostModel(1e-6))  # type: ignore[arg-type]
    return tier, encoder


def test_a_request_encodes_the_query_and_no_document() -> None:
    tier, encoder = dense_tier()
    result = tier.score("river", docs(), budget_s=None)
    assert encoder.documents == 0 and encoder.queries == 1
    assert np.isnan(result.scores).all()
    assert (result.missing, result.inferred, result.cached) == (5, 0, 0)


def test_missing_vectors_are_counted_until_taken() -> None:
    tier, _ = dense_tier()
    tier.score("river", docs(), None)
    tier.score("river", docs()[:2], None)
    assert tier.take_missing() == 7
    assert tier.take_missing() == 0


def test_stored_vectors_are_scored_without_encoding_them_again() -> None:
    tier, encoder = dense_tier()
    candidates = docs()
    assert tier.ensure_vectors(candidates[:3]) == 3
    encoded = encoder.documents
    result = tier.score("river", candidates, None)
    assert encoder.documents == encoded  # nothing more encoded in the request
    assert (result.cached, result.missing) == (3, 2)
    expected = (
        HashingEncoder(dim=32).encode(TEXTS[:3]) @ HashingEncoder(dim=32).encode(["river"])[0]
    )
    np.testing.assert_allclose(result.scores[:3], expected, rtol=1e-6)
    assert np.isnan(result.scores[3:]).all()
    assert tier.take_missing() == 2


def test_ensure_vectors_encodes_only_what_is_missing_in_batches() -> None:
    tier, encoder = dense_tier()
    tier.ENCODE_BATCH = 2
    candidates = docs()
    progress: list[int] = []
    assert tier.ensure_vectors(candidates[:1]) == 1
    assert tier.ensure_vectors(candidates + candidates[:2], on_progress=progress.append) == 4
    assert encoder.batches == [1, 2, 2] and progress == [2, 2]
    assert tier.ensure_vectors(candidates) == 0


def test_a_changed_text_is_a_missing_vector_not_a_stale_one() -> None:
    tier, _ = dense_tier()
    tier.ensure_vectors(docs())
    changed = [TextCandidate("d0", "an entirely new text", 1.0)]
    result = tier.score("river", changed, None)
    assert result.missing == 1 and np.isnan(result.scores[0])


def test_missing_vectors_do_not_degrade_the_ranking() -> None:
    """An ingestion gap is not overload: the unscored keep their order after the scored."""
    tier, _ = dense_tier()
    candidates = docs()
    tier.ensure_vectors([candidates[2], candidates[3]])
    longest = FunctionTier("ce", lambda query, texts: np.array([len(t) for t in texts]))
    result = Cascade("dense>ce:1", {"dense": tier, "ce": longest}).rank("river", candidates)
    assert not result.degraded, result.degraded_reason
    assert set(result.doc_ids[:2]) == {"d2", "d3"}  # the scored first
    assert result.doc_ids[2:] == ["d0", "d1", "d4"]  # the rest in first-stage order
    assert [item.flags for item in result.items[2:]] == [("not_scored",)] * 3


def test_layered_vectors_fill_the_front_from_the_back_and_skip_read_only() -> None:
    class ReadOnly(InMemoryCache):
        read_only = True

    front, middle, back = InMemoryCache(), ReadOnly(), InMemoryCache()
    middle.set_many({"m": np.ones(2, dtype=np.float32)})
    back.set_many({"b": np.zeros(2, dtype=np.float32)})
    store = LayeredVectors([front, middle, back])
    found = store.get_many(["m", "b", "x"])
    assert [v is not None for v in found] == [True, True, False]
    assert len(front) == 2 and len(middle) == 1  # the read-only layer got nothing from Redis
    store.set_many({"n": np.ones(2, dtype=np.float32)})
    assert len(front) == 3 and len(back) == 2 and len(middle) == 1
    assert back.hits == 1  # the second read of "b" stays in front
    store.get_many(["b"])
    assert back.hits == 1


def test_in_memory_cache_is_bounded_by_bytes() -> None:
    cache = InMemoryCache(max_items=None, max_bytes=4 * 100)
    for i in range(5):
        cache.set_many({f"k{i}": np.zeros(100, dtype=np.float32)})  # 400 bytes each
        assert cache.nbytes <= 400
    assert cache.get_many(["k3", "k4"])[0] is None and len(cache) == 1
    cache.set_many({"k4": np.zeros(50, dtype=np.float32)})  # replacing counts the new size
    assert cache.nbytes == 200


@pytest.fixture
def stage() -> FirstStage:
    documents = [Document(f"d{i}", "", text) for i, text in enumerate(TEXTS)]
    return FirstStage.build(documents, encoder=ToyBiEncoder())


def test_index_vectors_answer_only_the_same_encoder_and_text(stage: FirstStage) -> None:
    store = IndexVectors(stage)
    version = ToyBiEncoder().version
    assert store.version == version  # recorded at build
    doc = stage.get("d1")
    assert doc is not None
    found = store.get_many(
        [
            vector_key(version, "d1", doc.content),
            vector_key(version, "d1", "another text"),
            vector_key("another-encoder-L512", "d1", doc.content),
            vector_key(version, "unknown", doc.content),
        ]
    )
    assert [v is not None for v in found] == [True, False, False, False]
    np.testing.assert_allclose(found[0], HashingEncoder(dim=32).encode([doc.content])[0])


def test_index_vectors_follow_updates_and_deletes(stage: FirstStage) -> None:
    store = IndexVectors(stage)
    version = store.version
    old = stage.get("d0")
    assert old is not None
    stage.upsert([Document("d0", "", "a changed text about rivers")])
    stage.delete(["d2"])
    new = stage.get("d0")
    assert new is not None
    found = store.get_many(
        [
            vector_key(version, "d0", old.content),
            vector_key(version, "d0", new.content),
            vector_key(version, "d2", TEXTS[2]),
        ]
    )
    assert [v is not None for v in found] == [False, True, False]


def test_the_dense_tier_reads_an_index_it_shares_an_encoder_with(stage: FirstStage) -> None:
    encoder = ToyBiEncoder()
    store = LayeredVectors([InMemoryCache(), IndexVectors(stage)])
    tier = DenseTier(encoder, store, cost=CostModel(1e-6))  # type: ignore[arg-type]
    candidates = [TextCandidate(doc.id, doc.content, 1.0) for doc in map(stage.get, ["d0", "d1"])]
    result = tier.score("river", candidates, None)
    assert result.cached == 2 and encoder.documents == 0

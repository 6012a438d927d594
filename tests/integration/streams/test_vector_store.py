"""The worker's vector store against the real Redis: vectors stored ahead of time are read by
another worker without encoding; missing ones are counted and reach ``/metrics``."""

from __future__ import annotations

import numpy as np
import pytest
import redis

from streamrank.models.scoring.budget import CostModel
from streamrank.models.scoring.cascade import Cascade
from streamrank.models.scoring.score_cache import vector_key
from streamrank.models.scoring.tiers import DenseTier
from streamrank.models.types import TextCandidate
from streamrank.streams.config import Settings
from streamrank.streams.serving import Reranker, vector_store_for
from streamrank.streams.state.connections import key, redis_client
from streamrank.streams.state.redis_cache import RedisVectorCache
from streamrank.streams.state.service_metrics import ServiceMetrics
from streamrank.streams.web import dashboard_data, prometheus_text
from tests.unit.models.test_tiers import ToyBiEncoder

pytestmark = pytest.mark.integration

DOCS = [TextCandidate(f"d{i}", f"document {i} about rivers", 1.0) for i in range(6)]


def worker_tier(settings: Settings) -> tuple[DenseTier, ToyBiEncoder, redis.Redis]:
    """A dense tier on a fresh worker's store (its own client: a cold in-process LRU)."""
    client = redis_client(settings)
    encoder = ToyBiEncoder()
    store = vector_store_for(settings, client)
    tier = DenseTier(encoder, store, cost=CostModel(1e-6))  # type: ignore[arg-type]
    return tier, encoder, client


def test_one_store_per_worker_client(settings: Settings) -> None:
    client = redis_client(settings)
    assert vector_store_for(settings, client) is vector_store_for(settings, client)
    other = redis_client(settings)
    assert vector_store_for(settings, other) is not vector_store_for(settings, client)


def test_vectors_encoded_at_ingestion_are_read_by_another_worker(settings: Settings) -> None:
    ingesting, _, client = worker_tier(settings)
    assert ingesting.ensure_vectors(DOCS[:4]) == 4
    stored = RedisVectorCache(client, key(settings, "vec:"), ttl_s=60)
    keys = [vector_key(ingesting.version, c.doc_id, c.text or "") for c in DOCS[:4]]
    assert all(v is not None for v in stored.get_many(keys))  # in Redis, under content keys
    assert client.ttl(stored.redis_key(keys[0])) > 0  # with the configured lifetime

    serving, encoder, _ = worker_tier(settings)
    result = serving.score("rivers", DOCS, None)
    assert encoder.documents == 0  # nothing encoded on the request path
    assert (result.cached, result.missing) == (4, 2)
    assert not np.isnan(result.scores[:4]).any() and np.isnan(result.scores[4:]).all()


def test_missing_vectors_reach_the_metrics_page(settings: Settings) -> None:
    tier, _, client = worker_tier(settings)
    tier.ensure_vectors(DOCS[:1])
    reranker = Reranker(Cascade("dense", {"dense": tier}), None, settings)  # type: ignore[arg-type]
    reranker.cascade.rank("rivers", DOCS)
    reranker.cascade.rank("rivers", DOCS[:3])
    metrics = ServiceMetrics(client, settings)
    metrics.record_ranking(12.0, False, reranker.take_vectors_missing())
    metrics.record_ranking(12.0, False, reranker.take_vectors_missing())  # nothing new
    assert metrics.snapshot()["vectors_missing"] == {"dense": 7}
    text = prometheus_text(dashboard_data(settings, client))
    assert 'streamrank_vectors_missing_total{tier="dense"} 7' in text


def test_index_build_stores_its_vectors_where_the_worker_reads_them(
    settings: Settings, tmp_path
) -> None:
    from streamrank.models.retrieval.corpus import Document
    from streamrank.models.retrieval.first_stage import FirstStage
    from streamrank.streams.cli.index import store_vectors_in_redis

    documents = [Document(f"w{i}", f"title {i}", f"text {i} about rivers") for i in range(5)]
    FirstStage.build(documents, encoder=ToyBiEncoder()).save(tmp_path / "index")
    assert store_vectors_in_redis(tmp_path / "index", settings, batch=2) == 5
    tier, encoder, _ = worker_tier(settings)
    candidates = [TextCandidate(doc.id, doc.content, 1.0) for doc in documents]
    result = tier.score("rivers", candidates, None)
    assert (result.cached, result.missing, encoder.documents) == (5, 0, 0)

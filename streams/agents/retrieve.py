"""First-stage retrieval inside the stream: ``queries`` -> ``candidates``.

Runs only when ``STREAMRANK_INDEX_DIR`` names an index built with ``streamrank index build``.
Every worker holds the index in memory (it is derived state: the snapshot on disk plus the
``items`` topic), so each worker follows ``items`` with its own group-less consumer from the
start of the topic: new, changed and deleted documents reach every worker's index without a
rebuild, and re-applying an update is harmless (unchanged documents are skipped).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import faust
from aiokafka import AIOKafkaConsumer
from streamrank.models.retrieval.corpus import Document
from streamrank.models.retrieval.first_stage import FirstStage, Fusion
from streamrank.streams.agents.rerank import decoded, run_blocking
from streamrank.streams.app import app, settings, topic
from streamrank.streams.events import Candidate, Candidates, ContractError, Item, Query, decode

log = logging.getLogger(__name__)

queries_topic = topic("queries")
candidates_topic = topic("candidates")


def load_first_stage(index_dir: Path) -> FirstStage:
    encoder = None
    if (index_dir / "dense").exists():
        from streamrank.streams.cli.data import load_bi_encoder

        encoder = load_bi_encoder(settings.model_dir)
    fusion = Fusion(
        constant=settings.rrf_constant,
        bm25_weight=settings.bm25_weight,
        dense_weight=settings.dense_weight,
    )
    first_stage = FirstStage.load(index_dir, encoder=encoder)
    first_stage.fusion = fusion
    return first_stage


first_stage: FirstStage | None = (
    load_first_stage(settings.index_dir) if settings.index_dir is not None else None
)


def retrieval_method(index: FirstStage) -> str:
    if settings.retrieve_method != "bm25" and not index.has_dense:
        return "bm25"  # an index without vectors can only answer lexically
    return settings.retrieve_method


def retrieve(query: Query) -> Candidates:
    """The top K1 documents for a query, as the candidates message of the same request."""
    assert first_stage is not None
    started = time.perf_counter()
    hits = first_stage.retrieve(query.query, settings.retrieve_k, retrieval_method(first_stage))
    candidates = []
    for hit in hits:
        doc = first_stage.get(hit.doc_id)
        text = doc.content if doc is not None else None
        candidates.append(Candidate(doc_id=hit.doc_id, text=text, first_stage_score=hit.score))
    return Candidates(
        request_id=query.request_id,
        query=query.query,
        candidates=candidates,
        k=query.k,
        user_id=query.user_id,
        session_id=query.session_id,
        context=query.context | {"retrieve_ms": (time.perf_counter() - started) * 1000},
        timestamp=query.timestamp,
    )


def apply_item(item: Item) -> None:
    assert first_stage is not None
    if item.op == "delete":
        first_stage.delete([item.doc_id])
    else:
        first_stage.upsert([Document(item.doc_id, item.title or "", item.text or "")])


if first_stage is not None:

    @app.agent(queries_topic)
    async def retrieve_agent(stream: faust.StreamT[bytes]) -> None:
        async for query in decoded(stream, "queries", agent="retrieve"):
            assert isinstance(query, Query)
            request = await run_blocking(retrieve, query)
            delivery = await candidates_topic.send(
                key=query.request_id.encode(), value=request.to_bytes()
            )
            await delivery

    @app.task
    async def follow_items() -> None:
        """Apply every ``items`` update to this worker's index, from the topic's start."""
        # No group: every worker reads every update, from the start of the (compacted) topic.
        consumer = AIOKafkaConsumer(
            settings.topic("items"),
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **settings.aiokafka_client_options(),
        )
        await consumer.start()
        try:
            async for message in consumer:
                try:
                    item = decode("items", message.value, settings.limits())
                except ContractError:
                    continue  # the items agent dead-letters it; the index just skips it
                assert isinstance(item, Item)
                await run_blocking(apply_item, item)
        finally:
            await consumer.stop()

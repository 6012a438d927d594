"""First-stage retrieval inside the stream: ``queries`` -> ``candidates``.

Runs only when ``STREAMRANK_INDEX_DIR`` names an index built with ``streamrank index build``.
Every worker holds the index in memory (it is derived state: the snapshot on disk plus the
``items`` topic), so each worker follows ``items`` with its own group-less consumer from the
start of the topic: new, changed and deleted documents reach every worker's index without a
rebuild, and re-applying an update is harmless (unchanged documents are skipped).

The index's document vectors also serve the worker's dense tier (:func:`share_index_vectors`):
a candidate this agent retrieved has its vector in memory already, so the re-ranker reads it
there rather than from Redis.

:func:`register` loads the index and adds the agent and its task to a worker's app (see
:func:`streamrank.streams.worker.build`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import faust
from aiokafka import AIOKafkaConsumer

from streamrank.models.retrieval.corpus import Document
from streamrank.models.retrieval.first_stage import FirstStage, Fusion
from streamrank.models.retrieval.index_vectors import IndexVectors
from streamrank.streams.config import Settings
from streamrank.streams.events import Candidate, Candidates, ContractError, Item, Query, decode
from streamrank.streams.kafka.deadletter import backoff_s
from streamrank.streams.serving import add_index_vectors, vector_store_for

if TYPE_CHECKING:
    from streamrank.streams.worker import WorkerParts

log = logging.getLogger(__name__)


def register(parts: WorkerParts) -> RetrieveAgent | None:
    """With ``index_dir`` set, load the index and add the ``retrieve`` agent and the task that
    follows ``items`` to ``parts.app``; the agent, or None without an index."""
    settings = parts.settings
    if settings.index_dir is None:
        return None
    first_stage = load_first_stage(settings, settings.index_dir)
    agent = RetrieveAgent(parts, first_stage)
    share_index_vectors(parts, first_stage)
    # The name Faust gave this agent when it was declared at module level.
    parts.app.agent(parts.topic("queries"), name=f"{__name__}.retrieve_agent")(agent.retrieve)
    parts.app.task(agent.follow_items)
    return agent


def load_first_stage(settings: Settings, index_dir: Path) -> FirstStage:
    encoder = None
    if (index_dir / "dense").exists():
        from streamrank.models.scoring.bi_encoder import load_bi_encoder

        encoder = load_bi_encoder(settings.model_dir)
    fusion = Fusion(
        constant=settings.rrf_constant,
        bm25_weight=settings.bm25_weight,
        dense_weight=settings.dense_weight,
    )
    first_stage = FirstStage.load(index_dir, encoder=encoder)
    first_stage.fusion = fusion
    return first_stage


def share_index_vectors(parts: WorkerParts, first_stage: FirstStage) -> IndexVectors | None:
    """Let the worker's vector tiers read the index's own document vectors (in process).

    They are put in the worker's vector store between its LRU and Redis
    (:func:`~streamrank.streams.serving.vector_store_for`); they answer only for the encoder
    version the index recorded and the text it indexed, so a tier of another encoder, or a
    candidate whose text differs, reads elsewhere. Returns the layer, or None for an index
    without vectors.
    """
    if first_stage.dense is None:
        return None
    vectors = IndexVectors(first_stage)
    encoder_version = getattr(first_stage.encoder, "version", None)
    if not vectors.version or (encoder_version and encoder_version != vectors.version):
        log.warning(
            "the index in %s records encoder %r, the worker loads %r: its vectors are not "
            "served to the vector tiers; rebuild it with `streamrank index build`",
            parts.settings.index_dir,
            vectors.version or "(none recorded)",
            encoder_version,
        )
        return None
    add_index_vectors(vector_store_for(parts.settings, parts.feature_store.client), vectors)
    return vectors


class RetrieveAgent:
    """The ``retrieve`` agent and the ``items`` follower of one worker, on its index."""

    def __init__(self, parts: WorkerParts, first_stage: FirstStage) -> None:
        self.parts = parts
        self.settings = parts.settings
        self.first_stage = first_stage
        self.candidates_topic = parts.topic("candidates")

    async def retrieve(self, stream: faust.StreamT[bytes]) -> None:
        await self.parts.handle_each(stream, "queries", "retrieve", self.retrieve_one)

    async def retrieve_one(self, query: Query) -> None:
        request = await self.parts.run_blocking(self.candidates_for, query)
        delivery = await self.candidates_topic.send(
            key=query.request_id.encode(), value=request.to_bytes()
        )
        await delivery

    async def follow_items(self) -> None:
        """Apply every ``items`` update to this worker's index, from the topic's start; forever.

        A failure (the broker away, a consumer error) never ends the task, hence never the
        worker: it is logged and the follower starts again from the topic's start after a
        backoff (doubling up to ``retry_backoff_max_s``). Reading the topic again is harmless:
        re-applying an update to the index changes nothing.
        """
        attempt = 0
        while True:
            try:
                await self.follow_items_once()
                attempt = 0
            except asyncio.CancelledError:
                raise
            except Exception as error:
                wait_s = backoff_s(attempt, self.settings)
                log.warning("items follower failed (%s); again in %.1f s", error, wait_s)
                await asyncio.sleep(wait_s)
                attempt += 1

    async def follow_items_once(self) -> None:
        """Read ``items`` from its start with a group-less consumer until it fails or ends."""
        settings = self.settings
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
                    item = decode("items", message.value, self.parts.limits)
                except ContractError:
                    continue  # the items agent dead-letters it; the index just skips it
                assert isinstance(item, Item)
                await self.parts.run_blocking(self.apply_item, item)
        finally:
            await consumer.stop()

    def retrieval_method(self) -> str:
        if self.settings.retrieve_method != "bm25" and not self.first_stage.has_dense:
            return "bm25"  # an index without vectors can only answer lexically
        return self.settings.retrieve_method

    def candidates_for(self, query: Query) -> Candidates:
        """The top K1 documents for a query, as the candidates message of the same request."""
        first_stage = self.first_stage
        started = time.perf_counter()
        hits = first_stage.retrieve(query.query, self.settings.retrieve_k, self.retrieval_method())
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
            # the re-rank stage's latency budget counts from here, not from the query
            timestamp=time.time(),
        )

    def apply_item(self, item: Item) -> None:
        if item.op == "delete":
            self.first_stage.delete([item.doc_id])
        else:
            self.first_stage.upsert([Document(item.doc_id, item.title or "", item.text or "")])

"""Shadow mirroring: a shadow version ranks every live request, and nobody sees its answers.

``streamrank shadow worker VERSION`` runs this module's agents in a Faust app of their own
(application id ``<app_id>-shadow-<VERSION>``, hence a consumer group of its own), so the
shadow reads the same ``candidates`` as the primary without taking any from it and without
slowing it: it runs in another process at the lowest CPU priority (``SCHED_IDLE``, set by
``streamrank shadow worker`` before any thread starts), and a slow shadow only builds
consumer lag. For each request it

1. waits (up to ``shadow_join_window_s``, without blocking other requests) for the primary's
   impression in Redis, which the rerank agent records with the served list and its latency,
   so that the shadow's inference starts after the primary's (and reuses its cached
   cross-encoder scores where both run the same model);
2. ranks the candidates with the version's pipeline (:func:`streamrank.streams.serving.cascade_for`);
3. publishes a :class:`~streamrank.streams.events.Comparison` to ``comparisons``: Kendall's tau, RBO
   (p = 0.9), overlap@10 and the latency difference, and adds the same numbers to the
   version's running statistics in Redis (:class:`ShadowStats`, read by ``shadow report``).

A second agent reads ``interactions`` in the same group: for every click it compares where
the primary showed the clicked document with where the shadow would have put it (the
click-based preference). Every handler is idempotent by request id or event id, so a replay
after a crash counts nothing twice.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import faust
from streamrank.shadow.agreement import kendall_tau, overlap_at_k, rank_biased_overlap
from streamrank.shadow.evidence import ShadowStats
from streamrank.streams.app import app, settings, topic
from streamrank.streams.events import (
    Candidates,
    Comparison,
    ContractError,
    Interaction,
    RankedItem,
    decode,
)
from streamrank.streams.serving import Reranker, cascade_for
from streamrank.streams.state.connections import async_redis_client, redis_client, registry_for
from streamrank.streams.state.feature_store import FeatureStore

log = logging.getLogger(__name__)

COMPARED_DEPTH = 10
"""Agreement is measured over the top of the lists, the part users see."""

candidates_topic = topic("candidates")
interactions_topic = topic("interactions")
comparisons_topic = topic("comparisons")

version = settings.shadow_version or ""
if not version:
    raise RuntimeError(
        "STREAMRANK_SHADOW_VERSION is not set: start with `streamrank shadow worker`"
    )
sync_redis = redis_client(settings)
redis = async_redis_client(settings)
limits = settings.limits()
shadow_pipeline = registry_for(settings, sync_redis).get(version).pipeline
feature_store = FeatureStore(sync_redis, settings)
reranker = Reranker(cascade_for(settings, sync_redis, shadow_pipeline), feature_store, settings)
stats = ShadowStats(sync_redis, settings, version)
executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="shadow")


def rank_shadow(request: Candidates) -> tuple[list[RankedItem], float]:
    """The shadow's ranking (never shown to anyone) and how long it took, in ms."""
    started = time.perf_counter()
    ranking, _ = reranker.rank(request)
    return ranking.items, (time.perf_counter() - started) * 1000


async def primary_impression(request_id: str) -> dict[str, Any] | None:
    """The primary's impression, polled for until it arrives or the join window passes."""
    deadline = time.monotonic() + settings.shadow_join_window_s
    while True:
        impression = await asyncio.to_thread(feature_store.impression, request_id)
        if impression is not None or time.monotonic() >= deadline:
            return impression
        await asyncio.sleep(0.05)


def compare(
    request_id: str, impression: dict[str, Any], shadow_items: Sequence[RankedItem], ms: float
) -> Comparison:
    primary_docs = [item["doc_id"] for item in impression["items"]][:COMPARED_DEPTH]
    shadow_docs = [item.doc_id for item in shadow_items][:COMPARED_DEPTH]
    primary_ms = impression.get("latency_ms")
    return Comparison(
        request_id=request_id,
        primary_version=str(impression.get("model_version", "")),
        shadow_version=version,
        kendall_tau=kendall_tau(primary_docs, shadow_docs),
        rbo=rank_biased_overlap(primary_docs, shadow_docs, p=0.9),
        overlap_at_10=overlap_at_k(primary_docs, shadow_docs, k=COMPARED_DEPTH),
        latency_diff_ms=None if primary_ms is None else ms - float(primary_ms),
        shadow_items=list(shadow_items[:COMPARED_DEPTH]),
    )


async def mirror_one(request: Candidates) -> None:
    if not await asyncio.to_thread(stats.claim_request, request.request_id):
        return  # a replay: this request was compared already
    # The primary goes first: the shadow's inference never competes with a request still
    # being served, and it finds the primary's scores for shared (model, pair) in the cache.
    impression = await primary_impression(request.request_id)
    if impression is None:
        await asyncio.to_thread(stats.count_unmatched)
        return
    loop = asyncio.get_running_loop()
    items, ms = await loop.run_in_executor(executor, rank_shadow, request)
    await asyncio.to_thread(
        stats.remember_ranking, request.request_id, [item.doc_id for item in items]
    )
    comparison = compare(request.request_id, impression, items, ms)
    # Counted before it is published: whoever reads a comparison finds it in the report too.
    await asyncio.to_thread(stats.record_comparison, comparison, ms, impression.get("latency_ms"))
    await comparisons_topic.send(key=request.request_id.encode(), value=comparison.to_bytes())


@app.agent(candidates_topic, concurrency=settings.shadow_concurrency)
async def mirror(stream: faust.StreamT[bytes]) -> None:
    async for raw in stream:
        try:
            request = decode("candidates", raw, limits)
        except ContractError:
            continue  # the primary dead-letters bad input; a shadow must not do it twice
        assert isinstance(request, Candidates)
        await mirror_one(request)


def click_preference(interaction: Interaction) -> None:
    """Credit one click to the ranking that placed the clicked document higher."""
    impression = feature_store.impression(interaction.request_id)
    shadow_docs = stats.ranking(interaction.request_id)
    if impression is None or shadow_docs is None:
        return  # not mirrored (the shadow started later) or expired
    primary_docs = [item["doc_id"] for item in impression["items"]]
    stats.record_click(interaction.event_id, interaction.doc_id, primary_docs, shadow_docs)


@app.agent(interactions_topic)
async def clicks(stream: faust.StreamT[bytes]) -> None:
    async for raw in stream:
        try:
            interaction = decode("interactions", raw, limits)
        except ContractError:
            continue
        assert isinstance(interaction, Interaction)
        if interaction.type == "click":
            await asyncio.get_running_loop().run_in_executor(
                executor, click_preference, interaction
            )


def describe() -> str:
    return json.dumps({"shadow_version": version, "pipeline": shadow_pipeline})

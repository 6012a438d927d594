"""Shadow mirroring: a shadow version ranks every live request, and nobody sees its answers.

``streamrank shadow worker VERSION`` runs this module's agents in a Faust app of their own
(:func:`build_shadow`: application id ``<app_id>-shadow-<VERSION>``, hence a consumer group
of its own), so the shadow reads the same ``candidates`` as the primary without taking any
from it and without slowing it: it runs in another process at the lowest CPU priority
(``SCHED_IDLE``, set by ``streamrank shadow worker`` before any thread starts), and a slow
shadow only builds consumer lag. For each request it

1. waits (up to ``shadow_join_window_s``, without blocking other requests) for the primary's
   impression in Redis, which the rerank agent records with the served list and its latency,
   so that the shadow's inference starts after the primary's (and reuses its cached
   cross-encoder scores where both run the same model);
2. ranks the candidates with the version's pipeline
   (:func:`streamrank.streams.serving.cascade_for`) and its final ranker, if it has one
   (:func:`streamrank.streams.final_ranking.final_stage_for`);
3. publishes a :class:`~streamrank.streams.events.Comparison` to ``comparisons``: Kendall's
   tau, RBO (p = 0.9), overlap@10 and the latency difference, and adds the same numbers to the
   version's running statistics in Redis
   (:class:`~streamrank.shadow.evidence.ShadowStats`, read by ``shadow report``).

A second agent reads ``interactions`` in the same group: for every click it compares where
the primary showed the clicked document with where the shadow would have put it (the
click-based preference). Every handler is idempotent by request id or event id, so a replay
after a crash counts nothing twice, and runs under the same poison policy as the primary's
(:func:`~streamrank.streams.kafka.deadletter.process_or_dead_letter`): Redis or the broker
being away is waited out, a message the shadow keeps failing on is dead-lettered, and no
message stalls the shadow's partitions.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import faust
import redis

from streamrank.shadow.agreement import kendall_tau, overlap_at_k, rank_biased_overlap
from streamrank.streams.app import create_app, topic
from streamrank.streams.config import Settings
from streamrank.streams.events import Candidates, Comparison, DeadLetter, Interaction, RankedItem
from streamrank.streams.final_ranking import final_stage_for
from streamrank.streams.kafka.deadletter import handle_stream, send_to_dead_letters
from streamrank.streams.serving import Reranker, cascade_for
from streamrank.streams.state.connections import (
    async_redis_client,
    redis_client,
    registry_for,
    shadow_stats_for,
)
from streamrank.streams.state.feature_store import FeatureStore

log = logging.getLogger(__name__)

COMPARED_DEPTH = 10
"""Agreement is measured over the top of the lists, the part users see."""


def build_shadow(settings: Settings, version: str | None = None) -> faust.App:
    """The shadow worker's Faust app for ``version`` (default ``settings.shadow_version``),
    with the ``mirror`` and ``clicks`` agents registered.

    Loads the version's pipeline from the registry (raises
    :class:`~streamrank.models.assets.model_files.ModelFilesError` when its model files are
    missing) and runs under application id ``<app_id>-shadow-<version>``.
    """
    version = version or settings.shadow_version
    if not version:
        raise ValueError(
            "no shadow version given (STREAMRANK_SHADOW_VERSION is not set either): "
            "start with `streamrank shadow worker VERSION`"
        )
    settings = shadow_settings(settings, version)
    app = create_app(settings)
    register(app, ShadowMirror(app, settings, version, redis_client(settings)))
    return app


def shadow_settings(settings: Settings, version: str) -> Settings:
    """``settings`` for the shadow of ``version``: an application id (so a consumer group)
    of its own."""
    return settings.model_copy(
        update={"app_id": f"{settings.app_id}-shadow-{version}", "shadow_version": version}
    )


def register(app: faust.App, mirror: ShadowMirror) -> None:
    """Add the ``mirror`` and ``clicks`` agents of ``mirror`` to ``app``."""
    settings = mirror.settings
    # The names Faust gave these agents when they were declared at module level.
    app.agent(
        topic(app, settings, "candidates"),
        name=f"{__name__}.mirror",
        concurrency=settings.shadow_concurrency,
    )(mirror.mirror)
    app.agent(topic(app, settings, "interactions"), name=f"{__name__}.clicks")(mirror.clicks)


class ShadowMirror:
    """One shadow version's ranker, its statistics and the handlers of its agents."""

    def __init__(
        self, app: faust.App, settings: Settings, version: str, client: redis.Redis
    ) -> None:
        self.settings = settings
        self.version = version
        registry = registry_for(settings, client)
        registered = registry.get(version)
        self.pipeline = registered.pipeline
        self.feature_store = FeatureStore(client, settings)
        cascade = cascade_for(settings, client, self.pipeline)
        final = final_stage_for(settings, registry, registered, client)
        self.reranker = Reranker(cascade, self.feature_store, settings, final=final)
        self.stats = shadow_stats_for(settings, client, version)
        self.executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="shadow")
        self.comparisons_topic = topic(app, settings, "comparisons")
        self.deadletter_topic = topic(app, settings, "deadletter")
        self.async_redis = async_redis_client(settings)

    # -- the agents ---------------------------------------------------------------------------

    async def mirror(self, stream: faust.StreamT[bytes]) -> None:
        await self.handle_each(stream, "candidates", "mirror", self.mirror_one)

    async def clicks(self, stream: faust.StreamT[bytes]) -> None:
        await self.handle_each(stream, "interactions", "clicks", self.click)

    async def handle_each(
        self,
        stream: faust.StreamT[bytes],
        kind: str,
        agent: str,
        handler: Callable[[Any], Awaitable[None]],
    ) -> None:
        """Decode each message and await ``handler(event)``; a message never stalls the stream.

        A message that does not decode is skipped: the primary dead-letters bad input, and a
        shadow must not do it a second time. One whose handler keeps failing is dead-lettered
        under this shadow's name after ``poison_tries`` (the primary may have served it well:
        the letter says the shadow could not), while Redis or the broker being away is waited
        out with backoff, as on the primary.
        """
        await handle_stream(
            stream,
            kind,
            f"shadow-{self.version}.{agent}",
            handler,
            self.settings,
            self.dead_letter,
            letter_undecodable=False,
        )

    async def dead_letter(self, letter: DeadLetter) -> None:
        await send_to_dead_letters(letter, self.deadletter_topic, self.async_redis, self.settings)
        log.warning("shadow %s dead letter from %s: %s", self.version, letter.topic, letter.error)

    async def click(self, interaction: Interaction) -> None:
        if interaction.type == "click":
            await asyncio.get_running_loop().run_in_executor(
                self.executor, self.click_preference, interaction
            )

    # -- mirroring ----------------------------------------------------------------------------

    async def mirror_one(self, request: Candidates) -> None:
        stats = self.stats
        if not await asyncio.to_thread(stats.claim_request, request.request_id):
            return  # a replay: this request was compared already
        # The primary goes first: the shadow's inference never competes with a request still
        # being served, and it finds the primary's scores for shared (model, pair) in the cache.
        impression = await self.primary_impression(request.request_id)
        if impression is None:
            await asyncio.to_thread(stats.count_unmatched)
            return
        loop = asyncio.get_running_loop()
        items, ms = await loop.run_in_executor(self.executor, self.rank_shadow, request)
        await asyncio.to_thread(
            stats.remember_ranking, request.request_id, [item.doc_id for item in items]
        )
        comparison = self.compare(request.request_id, impression, items, ms)
        # Counted before it is published: whoever reads a comparison finds it in the report too.
        await asyncio.to_thread(
            stats.record_comparison, comparison, ms, impression.get("latency_ms")
        )
        await self.comparisons_topic.send(
            key=request.request_id.encode(), value=comparison.to_bytes()
        )

    def rank_shadow(self, request: Candidates) -> tuple[list[RankedItem], float]:
        """The shadow's ranking (never shown to anyone) and how long it took, in ms."""
        started = time.perf_counter()
        ranking, _ = self.reranker.rank(request)
        return ranking.items, (time.perf_counter() - started) * 1000

    async def primary_impression(self, request_id: str) -> dict[str, Any] | None:
        """The primary's impression, polled for until it arrives or the join window passes."""
        deadline = time.monotonic() + self.settings.shadow_join_window_s
        while True:
            impression = await asyncio.to_thread(self.feature_store.impression, request_id)
            if impression is not None or time.monotonic() >= deadline:
                return impression
            await asyncio.sleep(0.05)

    def compare(
        self,
        request_id: str,
        impression: dict[str, Any],
        shadow_items: Sequence[RankedItem],
        ms: float,
    ) -> Comparison:
        primary_docs = [item["doc_id"] for item in impression["items"]][:COMPARED_DEPTH]
        shadow_docs = [item.doc_id for item in shadow_items][:COMPARED_DEPTH]
        primary_ms = impression.get("latency_ms")
        return Comparison(
            request_id=request_id,
            primary_version=str(impression.get("model_version", "")),
            shadow_version=self.version,
            kendall_tau=kendall_tau(primary_docs, shadow_docs),
            rbo=rank_biased_overlap(primary_docs, shadow_docs, p=0.9),
            overlap_at_10=overlap_at_k(primary_docs, shadow_docs, k=COMPARED_DEPTH),
            latency_diff_ms=None if primary_ms is None else ms - float(primary_ms),
            shadow_items=list(shadow_items[:COMPARED_DEPTH]),
        )

    # -- clicks -------------------------------------------------------------------------------

    def click_preference(self, interaction: Interaction) -> None:
        """Credit one click to the ranking that placed the clicked document higher."""
        impression = self.feature_store.impression(interaction.request_id)
        shadow_docs = self.stats.ranking(interaction.request_id)
        if impression is None or shadow_docs is None:
            return  # not mirrored (the shadow started later) or expired
        primary_docs = [item["doc_id"] for item in impression["items"]]
        self.stats.record_click(interaction.event_id, interaction.doc_id, primary_docs, shadow_docs)

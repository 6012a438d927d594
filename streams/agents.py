"""The agents a worker runs.

``rerank``: ``candidates`` -> ``rankings``. For now it serves the first-stage order unchanged
(the pass-through ranker); the cross-encoder cascade takes its place in ``models/``.

Every handler is idempotent: a request whose ranking was already published (a replay after a
crash, a duplicate from the producer) is skipped, so replays double nothing.
"""

from __future__ import annotations

import logging
import time

import faust

from streams.app import app, settings, topic
from streams.deadletter import dead_letter_for, send_to_dead_letters
from streams.events import Candidates, ContractError, RankedItem, Ranking, decode
from streams.state import async_redis_client, key

log = logging.getLogger(__name__)

candidates_topic = topic("candidates")
rankings_topic = topic("rankings")
deadletter_topic = topic("deadletter")
redis = async_redis_client(settings)
limits = settings.limits()

PASS_THROUGH_VERSION = "pass-through"


def pass_through(request: Candidates) -> Ranking:
    """Serve the first-stage order as it came."""
    started = time.perf_counter()
    items = [
        RankedItem(doc_id=candidate.doc_id, score=candidate.first_stage_score, position=index)
        for index, candidate in enumerate(request.candidates, start=1)
    ]
    return Ranking(
        request_id=request.request_id,
        model_version=PASS_THROUGH_VERSION,
        items=items,
        timings_ms={"total": (time.perf_counter() - started) * 1000},
        user_id=request.user_id,
        session_id=request.session_id,
    )


async def rerank_one(raw: bytes, message: faust.types.tuples.Message) -> None:
    try:
        request = decode("candidates", raw, limits)
    except ContractError as error:
        letter = dead_letter_for(raw, message, error, agent="rerank")
        await send_to_dead_letters(letter, deadletter_topic, redis, settings)
        log.warning("dead letter %s@%s: %s", message.partition, message.offset, error)
        return
    assert isinstance(request, Candidates)
    done_key = key(settings, "done", "rerank", request.request_id)
    if await redis.exists(done_key):
        return
    ranking = pass_through(request)
    delivery = await rankings_topic.send(key=request.request_id.encode(), value=ranking.to_bytes())
    await delivery
    # Marked only after the broker has the ranking: a crash in between replays the request,
    # which publishes the same ranking again under the same key (at-least-once, never lost).
    await redis.set(done_key, b"1", ex=settings.dedupe_ttl_s)


@app.agent(candidates_topic)
async def rerank(stream: faust.StreamT[bytes]) -> None:
    async for event in stream.events():
        await rerank_one(event.value, event.message)

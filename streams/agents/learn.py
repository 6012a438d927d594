"""The learn agent: ``interactions`` -> sessions in Redis -> the online ranker, once each.

- The ``learn`` task reads interactions in batches (up to ``learn_batch_size``) with a
  consumer of its own (:class:`streamrank.streams.agents.learn_consumer.LearnConsumer`, group
  ``<app_id>-learn``) and applies each batch with one Redis script
  (:meth:`streamrank.streams.state.user_sessions.SessionStore.accumulate`): every event
  joins its request's impression and is stored once per event id; one without an impression
  waits as an orphan. Malformed messages and interactions that arrive after their session
  was learned (``late``) go to the dead letters. The batch's offsets are committed only
  after it was applied. A batch is retried with backoff while Redis is unreachable; one that
  fails ``poison_tries`` times for another reason is applied message by message, and the
  message that keeps failing goes to the dead letters (``handler-error``), so none stalls
  the path.
- A task (every ``learn_tick_s``) closes the sessions of this worker's partitions that saw
  no new interaction for ``session_close_s`` (behind a
  :class:`streamrank.streams.state.user_sessions.Barriers` barrier), learns each once in an
  executor thread, retries orphans and dead-letters those older than ``orphan_window_s`` with
  reason ``orphan``, and checkpoints the learner's model to the registry every
  ``checkpoint_every_events`` interactions or ``checkpoint_every_s``.
- On start, the newest checkpoint that verifies is loaded.

See docs/learning.md for the whole path and what a crash does. :func:`register` adds the two
tasks to a worker's app (see :func:`streamrank.streams.worker.build`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import redis
from aiokafka import ConsumerRecord
from kafka import KafkaConsumer, TopicPartition

from streamrank.shadow.evidence import ShadowStats
from streamrank.streams.agents.learn_consumer import LearnConsumer
from streamrank.streams.config import Settings
from streamrank.streams.events import (
    ContractError,
    DeadLetter,
    Limits,
    decode_interaction,
    describe_any,
)
from streamrank.streams.experiments import credit
from streamrank.streams.kafka.deadletter import process_or_dead_letter, send_to_dead_letters
from streamrank.streams.online import OnlineServing
from streamrank.streams.state.connections import registry_for, shadow_stats_for
from streamrank.streams.state.user_sessions import (
    Barriers,
    Checkpoints,
    Claimed,
    Incoming,
    Orphan,
    SessionStore,
    clicked_docs,
    dead_letter,
    late_letters,
    learn_sessions,
    orphan_as_incoming,
)

if TYPE_CHECKING:
    from streamrank.streams.worker import WorkerParts

log = logging.getLogger(__name__)

CLOSE_LIMIT = 500
"""Sessions claimed at once; a tick claims again while a partition has more due."""


def register(parts: WorkerParts) -> LearnPath | None:
    """Add the ``learn`` and ``close_sessions`` tasks to ``parts.app`` when online learning is
    on (after loading the newest checkpoint that verifies); the learn path, or None."""
    if parts.online is None:
        return None
    path = LearnPath(parts, parts.online)
    path.load_checkpoint()
    parts.app.task(path.learn)
    parts.app.task(path.close_sessions)
    return path


def checkpoints_for(
    settings: Settings, sessions: SessionStore, client: redis.Redis
) -> Checkpoints | None:
    """Checkpoints in the registry, or None when no registry key is configured."""
    if not settings.registry_key:
        log.warning("STREAMRANK_REGISTRY_KEY is not set: the learner is not checkpointed")
        return None
    return Checkpoints(sessions, registry_for(settings, client))


class CheckpointClock:
    """When the next checkpoint is due: after enough interactions or enough time."""

    def __init__(self, every_events: int, every_s: float) -> None:
        self.every_events = every_events
        self.every_s = every_s
        self.events = 0
        self.last = time.monotonic()
        self.learned_at_last = -1

    def due(self, learned: int) -> bool:
        if learned == self.learned_at_last:
            return False
        return self.events >= self.every_events or time.monotonic() - self.last >= self.every_s

    def reset(self, learned: int) -> None:
        self.events, self.last, self.learned_at_last = 0, time.monotonic(), learned


class EndOffsets:
    """End offsets of ``interactions`` partitions, asked of the broker (one short blocking call).

    A group-less kafka-python consumer of its own: Faust's ``highwaters()`` goes through its
    consumer thread and took over a second under load, and the offsets in fetch responses
    can be older than the barrier's time.
    """

    def __init__(self, settings: Settings, topic_name: str) -> None:
        self.settings = settings
        self.topic_name = topic_name
        self._consumer: KafkaConsumer | None = None

    def __call__(self, partitions: Sequence[int]) -> dict[int, int]:
        if self._consumer is None:
            self._consumer = KafkaConsumer(
                bootstrap_servers=self.settings.kafka_bootstrap,
                client_id=f"{self.settings.app_id}-learn-offsets",
                enable_auto_commit=False,
                **self.settings.kafka_client_options(),
            )
        tps = [TopicPartition(self.topic_name, p) for p in partitions]
        return {tp.partition: offset for tp, offset in self._consumer.end_offsets(tps).items()}


# -- decoding ---------------------------------------------------------------------------------


def split(
    records: Sequence[ConsumerRecord], limits: Limits
) -> tuple[list[Incoming], dict[int, int], list[DeadLetter]]:
    """Decoded interactions, the highest offset per partition and dead letters for the rest."""
    good: list[Incoming] = []
    offsets: dict[int, int] = {}
    letters: list[DeadLetter] = []
    for record in records:
        offsets[record.partition] = max(offsets.get(record.partition, -1), record.offset)
        raw = record.value or b""  # a null value (tombstone) is malformed too
        try:
            interaction = decode_interaction(raw, limits)
        except ContractError as error:
            letters.append(
                dead_letter(
                    raw, record.topic, record.partition, record.offset, error.reason, str(error)
                )
            )
            continue
        good.append(Incoming(interaction, raw, record.topic, record.partition, record.offset))
    return good, offsets, letters


def original_of(orphan: Orphan, incoming: Incoming) -> Incoming:
    """A resolved orphan with its original interaction (its user and time, which
    :func:`orphan_as_incoming` does not keep), for the feature feed."""
    try:
        interaction = decode_interaction(orphan.raw, Limits())
    except ContractError:
        return incoming
    return replace(incoming, interaction=interaction)


def failure_letter(item: Incoming, error: Exception, tries: int) -> DeadLetter:
    """The letter for an interaction that failed ``tries`` times (reason ``handler-error``)."""
    return dead_letter(
        item.raw,
        item.topic,
        item.partition,
        item.offset,
        "handler-error",
        f"{describe_any(error)} (after {tries} tries)",
    )


async def log_failure(error: Exception, tries: int) -> None:
    log.error("learn: gave up after %d tries: %s", tries, error)


class LearnPath:
    """The learn path of one worker: its consumer, sessions, barriers and checkpoints."""

    def __init__(self, parts: WorkerParts, online: OnlineServing) -> None:
        settings = parts.settings
        self.parts = parts
        self.settings = settings
        self.online = online
        self.sessions = SessionStore(parts.sync_redis, settings)
        self.barriers = Barriers()
        self.checkpoints = checkpoints_for(settings, self.sessions, parts.sync_redis)
        self.clock = CheckpointClock(settings.checkpoint_every_events, settings.checkpoint_every_s)
        self.consumer = LearnConsumer(settings)
        self.end_offsets = EndOffsets(settings, settings.topic("interactions"))
        self.loaded: dict[str, Any] | None = None

    def load_checkpoint(self) -> None:
        """Load the newest checkpoint that verifies, if any."""
        if self.checkpoints is None:
            return
        try:
            self.loaded = self.checkpoints.load_latest(self.online)
            if self.loaded is not None:
                self.clock.learned_at_last = self.online.sessions_learned
        except Exception:  # a worker without its old model still serves and learns
            log.exception("could not load the learner checkpoint")

    # -- the tasks ----------------------------------------------------------------------------

    async def learn(self) -> None:
        """Apply ``interactions`` batch by batch, committing each batch once it is applied."""
        await self.consumer.start()
        try:
            while not self.parts.app.should_stop:
                records = await self.consumer.batch()
                if records:
                    await self.apply_until_done(records)
                    await self.consumer.commit(records)
        finally:
            await self.consumer.stop()

    async def close_sessions(self) -> None:
        """Every ``learn_tick_s``: close due sessions, retry orphans, checkpoint when due."""
        if self.loaded is not None:
            log.info("loaded learner checkpoint %s", self.loaded["digest"])
        while not self.parts.app.should_stop:
            try:
                await self.tick()
            except Exception:  # Redis or the broker away for a moment: the next tick retries
                log.exception("learn tick failed")
            await asyncio.sleep(self.settings.learn_tick_s)

    # -- the batches --------------------------------------------------------------------------

    async def apply_until_done(self, records: Sequence[ConsumerRecord]) -> None:
        """Join a batch in Redis (one script); dead-letter malformed, late and poison
        interactions. No message can stall the path.

        While Redis (or the broker) is unreachable the batch is retried with backoff: it is not
        skipped, its offsets are committed only once it is applied, and applying it again
        after a partial failure changes nothing that was applied. A batch that fails
        ``poison_tries`` times for another reason is applied message by message
        (:meth:`apply_each`), so the poison is dead-lettered while the good ones are learned.
        Dead letters are sent before the batch is applied and committed: a crash in between
        sends a letter twice, never loses one.
        """
        batch, offsets, malformed = split(records, self.parts.limits)
        await self.send_letters_until_done(malformed)

        async def apply_each(error: Exception, tries: int) -> None:
            await self.apply_each(batch, offsets)

        await process_or_dead_letter(
            lambda: self.apply(batch, offsets),
            self.settings,
            f"learn: a batch of {len(records)} interactions",
            apply_each,
        )

    async def apply(self, batch: Sequence[Incoming], offsets: dict[int, int]) -> None:
        """Accumulate decoded interactions (raising the applied offsets); letters for late ones."""
        statuses = await self.parts.run_blocking(self.accumulate, batch, offsets)
        self.clock.events += statuses.count("new")
        await self.send_letters(late_letters(batch, statuses))

    def accumulate(self, batch: Sequence[Incoming], offsets: dict[int, int] | None) -> list[str]:
        """Accumulate a batch in the session store, then feed its new interactions to the
        feature store (:meth:`feed_new`); the statuses. Runs in an executor thread."""
        statuses = self.sessions.accumulate(batch, offsets)
        self.feed_new(batch, statuses)
        return statuses

    def feed_new(self, batch: Sequence[Incoming], statuses: Sequence[str]) -> None:
        """Count the interactions the session store took as ``new`` in the feature store.

        Only those: a duplicate or a replay was fed when it was new, so no counter counts an
        event twice. The feed never raises (a failure loses these features, logged)."""
        feed = getattr(self.parts, "feature_feed", None)  # parts without one: no feed
        if feed is not None:
            new = [item.interaction for item, s in zip(batch, statuses, strict=True) if s == "new"]
            feed.interactions(new)

    async def apply_each(self, batch: Sequence[Incoming], offsets: dict[int, int]) -> None:
        """Apply a batch one interaction at a time; one that keeps failing goes to the dead
        letters (reason ``handler-error``). The batch's offsets (poison included) are raised
        last, so the close barrier moves past the poison."""
        settings = self.settings
        for item in batch:

            async def dead_letter(error: Exception, tries: int, item: Incoming = item) -> None:
                await self.send_letters_until_done([failure_letter(item, error, tries)])

            await process_or_dead_letter(
                lambda item=item: self.apply([item], {item.partition: item.offset}),
                settings,
                f"learn: interaction {item.topic}[{item.partition}]@{item.offset}",
                dead_letter,
            )
        await process_or_dead_letter(
            lambda: self.apply([], offsets), settings, "learn: applied offsets", log_failure
        )

    async def send_letters_until_done(self, letters: Sequence[DeadLetter]) -> None:
        """:meth:`send_letters`, waiting out an unreachable broker or Redis."""
        if letters:
            await process_or_dead_letter(
                lambda: self.send_letters(letters),
                self.settings,
                "learn: dead letters",
                log_failure,
            )

    async def send_letters(self, letters: Sequence[DeadLetter]) -> None:
        parts = self.parts
        for letter in letters:
            await send_to_dead_letters(letter, parts.deadletter_topic, parts.redis, self.settings)
            log.warning("dead letter (%s) from %s: %s", letter.reason, letter.topic, letter.error)

    # -- the tick's steps ---------------------------------------------------------------------

    async def tick(self) -> None:
        owned = self.consumer.owned()
        self.barriers.keep_only(owned)
        if owned:
            await self.close_due(owned)
            await self.retry_orphans(owned)
        if self.checkpoints is not None and self.clock.due(self.online.sessions_learned):
            await self.parts.run_blocking(self.save_checkpoint)

    async def close_due(self, owned: list[int]) -> None:
        """Learn every session of ``owned`` partitions whose close time passed behind a
        barrier."""
        run_blocking = self.parts.run_blocking
        now = time.time()  # before the end offsets: they cover every message sent until now
        try:
            highwaters = await run_blocking(self.end_offsets, owned)
        except Exception as error:  # the broker is unreachable for now: try at the next tick
            log.warning("could not read the interactions end offsets: %s", error)
            return
        applied = await run_blocking(self.sessions.applied_offsets)
        for partition in owned:
            highwater = highwaters.get(partition)
            if highwater is None:
                continue
            before = self.barriers.close_before(
                partition, now, highwater, applied.get(partition, -1)
            )
            if before is not None:
                await run_blocking(self.close_partition, partition, before)

    def close_partition(self, partition: int, before: float) -> int:
        """Claim, learn and finish due sessions of one partition; how many were closed."""
        closed = 0
        while True:
            claimed = self.sessions.claim(partition, before, CLOSE_LIMIT)
            if not claimed:
                return closed
            counts = learn_sessions(self.online, claimed)
            self.report_sessions(claimed)
            self.sessions.finish(partition, claimed, counts)
            closed += len(claimed)

    def report_sessions(self, claimed: Sequence[Claimed]) -> None:
        """Closed sessions as monitoring (CTR per minute) and as experiment evidence.

        Both are idempotent per request id: a session claimed again after a crash before
        :meth:`SessionStore.finish` is not counted twice. The CTR counts take one round trip
        for all of ``claimed``.
        """
        served = [(s, clicked_docs(s)) for s in claimed if s.record is not None]
        self.parts.metrics.record_sessions([(s.request_id, bool(docs)) for s, docs in served])
        for session, docs in served:
            assert session.record is not None
            credit(session.record, docs, self.shadow_stats)

    def shadow_stats(self, version: str) -> ShadowStats:
        return shadow_stats_for(self.settings, self.parts.sync_redis, version)

    async def retry_orphans(self, owned: list[int]) -> None:
        """Join orphans whose impression came; dead-letter those past ``orphan_window_s``."""
        late, expired = await self.parts.run_blocking(self.resolve_orphans, owned, time.time())
        await self.send_letters(late)
        window_s = self.settings.orphan_window_s
        await self.send_letters([orphan.dead_letter(window_s) for orphan in expired])
        if expired:
            await self.parts.run_blocking(self.forget_expired, expired)

    def resolve_orphans(
        self, owned: list[int], now: float
    ) -> tuple[list[DeadLetter], list[Orphan]]:
        """Accumulate orphans whose impression came; late letters and the orphans now expired."""
        sessions = self.sessions
        late: list[DeadLetter] = []
        expired: list[Orphan] = []
        for partition in owned:
            orphans = sessions.orphans(partition)
            if not orphans:
                continue
            found = sessions.with_impressions(orphans)
            resolved = [o for o, ok in zip(orphans, found, strict=True) if ok]
            expired += [
                o
                for o, ok in zip(orphans, found, strict=True)
                if not ok and now - o.first_seen >= self.settings.orphan_window_s
            ]
            if resolved:
                batch = [orphan_as_incoming(o) for o in resolved]
                statuses = sessions.accumulate(batch)
                late += late_letters(batch, statuses)
                originals = [original_of(o, i) for o, i in zip(resolved, batch, strict=True)]
                self.feed_new(originals, statuses)
                sessions.forget_orphans(partition, resolved, "orphans_resolved")
        return late, expired

    def forget_expired(self, expired: Sequence[Orphan]) -> None:
        for partition in {orphan.partition for orphan in expired}:
            mine = [orphan for orphan in expired if orphan.partition == partition]
            self.sessions.forget_orphans(partition, mine, "orphans_dead")

    def save_checkpoint(self) -> None:
        assert self.checkpoints is not None
        learned = self.online.sessions_learned
        record = self.checkpoints.save(self.online)
        self.clock.reset(learned)
        log.info("learner checkpoint %s (%d sessions learned)", record["digest"], learned)

"""The click simulator's streaming mode: simulated users against the real broker and workers.

:class:`StreamingSystem` implements the simulator's
:class:`~streamrank.models.evaluation.simulator.RankingSystem` verbs over Kafka, exactly as a
live client would: a session publishes a ``candidates`` request and reads its ``rankings``
answer (the worker explores, records the impression), then publishes the user's
``interactions`` (:func:`to_interactions`); the learn agent joins them and learns when the
session closes. A round's requests go out together (users of different queries arrive
concurrently), and before each round and each checkpoint the system waits until the learner
has closed every session sent so far (:meth:`StreamingSystem.settle`). That is the offline
simulator's round (:func:`streamrank.models.evaluation.simulator.serve_round`), so both modes
run the same experiment and the curve measures learning, not how fast the simulator can
send: without the wait, a query's next user was served before its previous session was
learned, by how many rounds depending on the worker's speed, and the curve measured that lag
(docs/notes/2026-11-26-simulator-rounds.md). Checkpoint rankings are requested with
``context = {"explore": false}``: what the system would serve with no exploration.

Request ids carry a per-run nonce: the worker answers a request id once (replays are
dropped), so a second run with the same seed must not reuse the first run's ids.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from streamrank.models.evaluation.simulator import SimQuery
from streamrank.streams.config import Settings
from streamrank.streams.events import Candidate, Candidates, Interaction, Ranking
from streamrank.streams.kafka.clients import producer_options
from streamrank.streams.state.connections import redis_client
from streamrank.streams.state.user_sessions import SessionStore

CLOSED_COUNTERS = ("sessions_learned", "sessions_replayed", "sessions_empty", "sessions_expired")


class WorkerTimeout(RuntimeError):
    """No worker answered in time (is `streamrank worker` running?)."""


class StreamingSystem:
    """Simulated traffic through Kafka: serve, feedback and exploit as a client would.

    Parameters
    ----------
    settings
        Where the broker, topics and Redis are.
    texts
        Query id -> (query text, passage texts in candidate order).
    timeout_s
        How long to wait for rankings or for the learner before giving up.
    """

    def __init__(
        self,
        settings: Settings,
        texts: Mapping[str, tuple[str, list[str]]],
        timeout_s: float = 120.0,
    ) -> None:
        self.settings = settings
        self.texts = texts
        self.timeout_s = timeout_s
        self.nonce = uuid.uuid4().hex[:8]
        options = settings.kafka_client_options()
        self.producer = KafkaProducer(**producer_options(settings, linger_ms=5))
        self.consumer = KafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False, **options
        )
        topic = settings.topic("rankings")
        partitions = [TopicPartition(topic, p) for p in self.consumer.partitions_for_topic(topic)]
        self.consumer.assign(partitions)
        self.consumer.seek_to_end(*partitions)
        for partition in partitions:  # resolve the end offsets now, before anything is sent
            self.consumer.position(partition)
        self.sessions = SessionStore(redis_client(settings), settings)
        self.closed_at_start = _closed_total(self.sessions)
        self.sent_sessions = 0

    # -- the simulator's verbs ------------------------------------------------------------

    def serve_all(self, sessions: Sequence[tuple[SimQuery, str]]) -> list[list[str]]:
        """A round's rankings in one batch, once the learner has learned every earlier round."""
        self.settle()
        ids = [self._id(session_id) for _, session_id in sessions]
        rankings = self._rank(
            {rid: self._request(q, rid, True) for rid, (q, _) in zip(ids, sessions, strict=True)}
        )
        return [rankings[rid] for rid in ids]

    def serve(self, query: SimQuery, session_id: str) -> list[str]:
        return self.serve_all([(query, session_id)])[0]

    def feedback(
        self, query: SimQuery, session_id: str, shown: list[str], clicked: list[int]
    ) -> None:
        request_id = self._id(session_id)
        for event in to_interactions(request_id, shown, clicked):
            self.producer.send(
                self.settings.topic("interactions"),
                key=request_id.encode(),
                value=event.to_bytes(),
            )
        self.sent_sessions += 1

    def exploit_all(self, queries: Sequence[SimQuery]) -> dict[str, list[str]]:
        """Every query's ranking with no exploration, after the learner caught up."""
        self.settle()
        ids = {q.qid: f"{self.nonce}-exploit-{uuid.uuid4().hex[:8]}-{q.qid}" for q in queries}
        rankings = self._rank({ids[q.qid]: self._request(q, ids[q.qid], False) for q in queries})
        return {qid: rankings[request_id] for qid, request_id in ids.items()}

    def exploit(self, query: SimQuery) -> list[str]:
        return self.exploit_all([query])[query.qid]

    # -- plumbing -------------------------------------------------------------------------

    def settle(self) -> None:
        """Wait until the learner has closed every session this run sent."""
        self.producer.flush()
        deadline = time.monotonic() + self.timeout_s + self.settings.session_close_s
        while self.sessions_closed() < self.sent_sessions:
            if time.monotonic() > deadline:
                raise WorkerTimeout(
                    f"the learner closed {self.sessions_closed()} of {self.sent_sessions} "
                    "sessions in time: is a worker with online learning running?"
                )
            time.sleep(0.1)

    def sessions_closed(self) -> int:
        """How many sessions the learner has closed since this run began."""
        return _closed_total(self.sessions) - self.closed_at_start

    def _id(self, session_id: str) -> str:
        return f"{self.nonce}-{session_id}"

    def _request(self, query: SimQuery, request_id: str, explore: bool) -> Candidates:
        text, passages = self.texts[query.qid]
        candidates = [
            Candidate(doc_id=c.doc_id, text=passage, first_stage_score=c.first_stage or 0.0)
            for c, passage in zip(query.candidates, passages, strict=True)
        ]
        return Candidates(
            request_id=request_id,
            query=text,
            candidates=candidates,
            k=10,
            context={"explore": explore, "simulated": True},
        )

    def _rank(self, requests: Mapping[str, Candidates]) -> dict[str, list[str]]:
        for request_id, request in requests.items():
            self.producer.send(
                self.settings.topic("candidates"), key=request_id.encode(), value=request.to_bytes()
            )
        self.producer.flush()
        wanted, found = set(requests), {}
        deadline = time.monotonic() + self.timeout_s
        while wanted - set(found):
            if time.monotonic() > deadline:
                raise WorkerTimeout(
                    f"{len(wanted - set(found))} of {len(wanted)} rankings did not come in "
                    f"{self.timeout_s:.0f} s: start a worker with `streamrank worker`"
                )
            for batch in self.consumer.poll(timeout_ms=100).values():
                for record in batch:
                    ranking = Ranking.model_validate_json(record.value)
                    if ranking.request_id in wanted:
                        found[ranking.request_id] = [item.doc_id for item in ranking.items]
        return found

    def close(self) -> None:
        self.producer.close()
        self.consumer.close()


def to_interactions(
    request_id: str, shown: Sequence[str], clicked: Sequence[int], user_id: str | None = None
) -> list[Interaction]:
    """A session as ``interactions`` events: one impression per shown result, one per click.

    Event ids are derived from the request id and rank, so republishing a session after a
    crash produces the same ids and the learner applies it once.
    """
    events = [
        Interaction(
            event_id=f"{request_id}:imp:{rank + 1}",
            request_id=request_id,
            doc_id=doc,
            type="impression",
            position=rank + 1,
            user_id=user_id,
        )
        for rank, doc in enumerate(shown)
    ]
    events += [
        Interaction(
            event_id=f"{request_id}:click:{rank + 1}",
            request_id=request_id,
            doc_id=shown[rank],
            type="click",
            position=rank + 1,
            user_id=user_id,
        )
        for rank in clicked
    ]
    return events


def _closed_total(sessions: SessionStore) -> int:
    """Sessions the learner has closed so far: learned, replayed, empty or expired."""
    counts = sessions.counts()
    return sum(counts.get(name, 0) for name in CLOSED_COUNTERS)


def streaming_system_factory(settings: Settings, candidates_path: str) -> StreamingSystem:
    from streamrank.models.evaluation.simulator import passages

    return StreamingSystem(settings, passages(candidates_path))

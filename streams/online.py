"""The online ranker inside a worker: the served order of the top of a list, and learning.

:class:`OnlineServing` wraps one :class:`streamrank.models.learning.online_ranker.OnlineRanker`
whose click statistics live in Redis
(:class:`streamrank.streams.state.learner_store.RedisLearnerStore`), so every worker ranks with the
clicks every other worker has learned from. The ranker's model state (River prior, satisfaction
table, position-bias estimates) is per process and is persisted only as signed checkpoints in the
model registry (:mod:`streamrank.streams.agents.learn`), never as unsigned state in Redis.

The rerank agent's threads call :meth:`OnlineServing.order`; the learn agent's thread calls
:meth:`OnlineServing.learn`. Both go through one lock: River's model and the position-bias
window are not safe to read while another thread updates them.

Exploration (:class:`streamrank.models.learning.exploration.SafeExplorer`) is seeded by the request
id, so a replayed request is served the same list as long as the learner has not moved since.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from streamrank.models.learning.exploration import SafeExplorer
from streamrank.models.learning.online_ranker import (
    Impression,
    OnlineRanker,
    RankerConfig,
    ScoredCandidate,
)
from streamrank.streams.config import Settings
from streamrank.streams.state.connections import key
from streamrank.streams.state.learner_store import BatchingStore, RedisLearnerStore
from streamrank.streams.state.replicas import ReplicaWait

NEVER = 2**62
"""``sync_every`` for the worker's ranker: its state goes to signed checkpoints, not Redis."""


@dataclass(frozen=True)
class OnlineOrder:
    """The served order of one candidate list.

    Attributes
    ----------
    order
        Indices into the candidates given, in served order.
    explored
        Indices served at another rank than the exploit order would have put them.
    randomized
        Whether the top ``k`` is a randomized intervention (position-bias estimation).
    features
        The ranker's prior-model features of every candidate, by index (what the learner
        needs back when the clicks come).
    """

    order: list[int]
    explored: frozenset[int]
    randomized: bool
    features: list[dict[str, float]]


def learner_store_for(
    settings: Settings, client: redis.Redis, reads: redis.Redis | None = None
) -> RedisLearnerStore:
    """The shared click statistics, under the deployment's key prefix (``reads``: the client
    the serving threads read them with, when it is not ``client``)."""
    return RedisLearnerStore(
        client,
        prefix=key(settings, "ltr:"),
        ttl_s=settings.learner_ttl_s,
        reads=reads,
        replicas=ReplicaWait.from_settings(settings),
    )


def online_ranker_for(
    settings: Settings, client: redis.Redis, reads: redis.Redis | None = None
) -> OnlineRanker:
    """A ranker on the shared statistics whose model state is never written to Redis.

    ``client`` runs the learn path's scripts and batched reads; ``reads`` (the request path's
    client, with its short timeout and circuit breaker) serves the statistics the serving
    threads read, so an outage skips the online ranker at once instead of stalling requests.
    """
    store = BatchingStore(learner_store_for(settings, client, reads))
    return OnlineRanker(store, RankerConfig(sync_every=NEVER))


def request_seed(request_id: str) -> int:
    """A stable seed per request, so a replay explores the same way."""
    return int.from_bytes(hashlib.sha1(request_id.encode()).digest()[:8], "big")


class OnlineServing:
    """One online ranker shared by the serving and learning threads of a worker.

    Parameters
    ----------
    ranker
        The online ranker (its store should be shared by all workers).
    max_loss
        Exploration bound of :class:`~streamrank.models.learning.exploration.SafeExplorer`; 0 serves
        the exploit order (and never a randomized intervention).
    """

    def __init__(self, ranker: OnlineRanker, max_loss: float) -> None:
        self.ranker = ranker
        self.max_loss = max_loss
        self.lock = threading.Lock()

    def order(
        self,
        request_id: str,
        query: str,
        candidates: Sequence[ScoredCandidate],
        k: int,
        user: Mapping[str, float] | None = None,
        explore: bool = True,
    ) -> OnlineOrder:
        """The order to serve ``candidates`` in for one request (``explore=False``: exploit)."""
        max_loss = self.max_loss if explore else 0.0
        explorer = SafeExplorer(k=k, max_loss=max_loss, seed=request_seed(request_id))
        with self.lock:
            scored = self.ranker.score_one(query, candidates, user)
            interventions = max_loss > 0 and self.ranker.position_bias.wants_interventions
        served = explorer.rank_one(scored, interventions=interventions)
        exploit = scored.exploit_order()
        order = [int(i) for i in served.order]
        top = min(k, len(order))
        explored = frozenset(order[r] for r in range(top) if order[r] != int(exploit[r]))
        return OnlineOrder(order, explored, bool(served.randomized), scored.features)

    def learn(self, impressions: Sequence[Impression]) -> list[bool]:
        """Learn each impression once; False for one whose event id was learned before.

        With a :class:`~streamrank.streams.state.learner_store.BatchingStore`, the whole list costs
        two Redis round trips; the statistics are written when this returns.
        """
        store = self.ranker.store
        if not isinstance(store, BatchingStore):
            return self._learn_each(impressions)
        with store.batch([(i.event_id, i.query, i.docs) for i in impressions]):
            return self._learn_each(impressions)

    def _learn_each(self, impressions: Sequence[Impression]) -> list[bool]:
        learned = []
        for impression in impressions:
            with self.lock:
                learned.append(self.ranker.learn_one(impression))
        return learned

    @property
    def sessions_learned(self) -> int:
        """Sessions this process's model has learned from (checkpoints included)."""
        return int(self.ranker.learned)

    def state_dict(self) -> dict[str, Any]:
        with self.lock:
            return self.ranker.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with self.lock:
            self.ranker.load_state_dict(state)


def served_ranks(order: Sequence[int], pinned: Sequence[int]) -> list[int]:
    """The served list when ``pinned`` indices keep their own slots and the rest follow ``order``.

    Examples
    --------
    >>> served_ranks([2, 0, 1, 3], pinned=[0])
    [0, 2, 1, 3]
    """
    fixed = set(pinned)
    movable = iter(i for i in order if i not in fixed)
    return [i if i in fixed else next(movable) for i in range(len(order))]

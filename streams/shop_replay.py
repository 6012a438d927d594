"""The shop evaluation's streaming figure: the training period replayed through a live worker.

:func:`~streamrank.models.evaluation.shop_eval.evaluate_shop` featurises every search from an
in-memory feature state. This module asks whether the live system gets the same answer: a real
worker (its own topics and Redis keys, removed afterwards) is given the catalog on ``items``,
then the training period in time order, search by search, as the shop's front end would send it:

- a user's ratings on one day are one browsing session: ``candidates`` requests showing the
  rated movies (query :data:`BROWSE`), then an ``impression`` and a ``click`` interaction per
  rating and a ``purchase`` from 4 stars, exactly the events the offline state learns;
- each held-out search is a ``candidates`` request with the offline first stage's candidates
  and scores, at its own time.

The worker computes features at each request's own time (``STREAMRANK_FEATURE_TIME=event``),
feeds its feature state from the ``items`` agent and the learn path, and serves a registry
version whose final ranker is the offline personalised LambdaMART model. A search is sent
only once the worker's feature feed has counted every interaction up to its time and none
after (:func:`steps`), so it sees the training events the offline replay lets it see.
The online ranker runs too (the learn path that feeds the features is its), ordering each
list's top from the final ranker's scores without exploration.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from streamrank.models.assets.movielens import MovieLens, Rating
from streamrank.models.evaluation.shop import Shop
from streamrank.models.evaluation.shop_eval import K, Search, figures, item_fields
from streamrank.models.features.config import FeatureSet
from streamrank.models.features.events import DAY_S
from streamrank.models.features.keys import item_key, item_vector_key
from streamrank.models.learning.lambdamart import FinalRanker
from streamrank.models.learning.ranker_versions import register_final_ranker
from streamrank.streams.config import Settings
from streamrank.streams.events import Candidate, Candidates, Interaction, Item, Ranking
from streamrank.streams.kafka.clients import producer_options
from streamrank.streams.kafka.topics import admin_client, create_topics
from streamrank.streams.state.connections import redis_client, registry_for
from streamrank.streams.state.feature_feed import FeatureFeed
from streamrank.streams.state.feature_state import RedisFeatureState

BROWSE = "(browse)"
"""The query of a replayed browsing session (no search: the offline events have none)."""
PIPELINE = "dense"
"""What the worker runs before the final ranker: the bi-encoder's similarity, which the
offline first stage also gives each candidate."""


@dataclass(frozen=True)
class Browse:
    """The ratings of one user's day (its session) that fall between two searches."""

    request_id: str
    session_id: str
    ratings: list[Rating]


@dataclass(frozen=True)
class Step:
    """One step of the replay: the browsing up to a moment, then the searches made at it."""

    browsing: list[Browse]
    searches: list[Search]


def steps(shop: Shop, tests: Sequence[Search]) -> list[Step]:
    """The training period cut at each search's time, in time order.

    Each step holds the ratings after the previous search time and up to this one (an event
    at exactly a search's time counts for it, as offline), as one request per user and day,
    then the searches of that time. Ratings after the last search are not replayed: nothing
    later can change a figure.
    """
    ratings = sorted(shop.train, key=lambda r: (r.timestamp, r.user_id, r.doc_id))
    by_time: dict[float, list[Search]] = defaultdict(list)
    for search in tests:
        by_time[float(search.request.now)].append(search)
    out, start = [], 0
    for number, (now, searches) in enumerate(sorted(by_time.items())):
        end = start
        while end < len(ratings) and ratings[end].timestamp <= now:
            end += 1
        sessions: dict[str, list[Rating]] = {}
        for rating in ratings[start:end]:
            day = int(rating.timestamp // DAY_S)
            sessions.setdefault(f"{rating.user_id}-{day}", []).append(rating)
        browsing = [Browse(f"browse-{s}-{number}", s, r) for s, r in sessions.items()]
        out.append(Step(browsing, searches))
        start = end
    return out


def browse_request(browse: Browse) -> Candidates:
    first = browse.ratings[0]
    return Candidates(
        request_id=browse.request_id,
        query=BROWSE,
        candidates=[Candidate(doc_id=r.doc_id) for r in browse.ratings],
        k=len(browse.ratings),
        user_id=first.user_id,
        session_id=browse.session_id,
        timestamp=float(first.timestamp),
        context={"explore": False},
    )


def browse_interactions(browse: Browse) -> Iterator[Interaction]:
    for position, rating in enumerate(browse.ratings, 1):
        kinds = ["impression", "click"] + (["purchase"] if rating.rating >= 4 else [])
        for kind in kinds:
            yield Interaction(
                event_id=f"{browse.session_id}-{rating.doc_id}-{kind}",
                request_id=browse.request_id,
                doc_id=rating.doc_id,
                type=kind,
                user_id=rating.user_id,
                position=position,
                timestamp=float(rating.timestamp),
            )


def search_request(search: Search) -> Candidates:
    query = search.query
    return Candidates(
        request_id=f"search-{query.query_id}",
        query=query.text,
        candidates=[
            Candidate(doc_id=d, first_stage_score=float(s))
            for d, s in zip(search.doc_ids, search.first_stage, strict=True)
        ],
        k=K,
        user_id=query.user_id,
        session_id=f"search-{query.query_id}",
        timestamp=float(search.request.now),
        context={"explore": False},
    )


class LiveShop:
    """A worker on its own topics and keys, and the clients that talk to it."""

    def __init__(self, settings: Settings, log_dir: Path, feature_log: bool = False) -> None:
        run = uuid.uuid4().hex[:8]
        self.feature_log = feature_log
        self.settings = settings.model_copy(
            update={
                "topic_prefix": f"shop-eval-{run}.",
                "app_id": f"streamrank-shop-eval-{run}",
                "registry_key": secrets.token_hex(16),
                "operator_token": secrets.token_hex(16),
            }
        )
        self.log_path = log_dir / f"shop-eval-worker-{run}.log"
        self.client = redis_client(self.settings)
        self.producer: KafkaProducer | None = None
        self.consumer: KafkaConsumer | None = None
        self.worker: subprocess.Popen | None = None
        self.rankings: dict[str, Ranking] = {}
        # read-only here: its count of what the worker's feed has learnt (one per replay step)
        self.feed = FeatureFeed(self.settings, self.client)

    def env(self) -> dict[str, str]:
        s = self.settings
        return {
            "STREAMRANK_KAFKA_BOOTSTRAP": s.kafka_bootstrap,
            "STREAMRANK_REDIS_URL": s.redis_url,
            "STREAMRANK_TOPIC_PREFIX": s.topic_prefix,
            "STREAMRANK_APP_ID": s.app_id,
            "STREAMRANK_REGISTRY_KEY": s.registry_key,
            "STREAMRANK_OPERATOR_TOKEN": s.operator_token,
            "STREAMRANK_PIPELINE": PIPELINE,
            "STREAMRANK_FEATURE_TIME": "event",
            "STREAMRANK_FEATURE_LOG": str(self.feature_log).lower(),
            "STREAMRANK_ONLINE_LEARNING": "true",
            "STREAMRANK_EXPLORATION_MAX_LOSS": "0",
            "STREAMRANK_SESSION_CLOSE_S": "1.0",
            "STREAMRANK_LATENCY_BUDGET_MS": "60000",
            "STREAMRANK_CONTROL_POLL_S": "1.0",
            "STREAMRANK_JOURNAL_ENABLED": "false",
        }

    def start(self) -> None:
        import os

        create_topics(self.settings)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.worker = subprocess.Popen(
            [sys.executable, "-m", "streamrank.streams.cli", "worker", "-l", "info"],
            stdout=self.log_path.open("wb"),
            stderr=subprocess.STDOUT,
            env=dict(os.environ) | self.env(),
        )
        bootstrap = self.settings.kafka_bootstrap
        options = self.settings.kafka_client_options()
        self.producer = KafkaProducer(**producer_options(self.settings, linger_ms=5))
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, **options)
        topic = self.settings.topic("rankings")
        partitions = [
            TopicPartition(topic, p) for p in self.consumer.partitions_for_topic(topic) or []
        ]
        self.consumer.assign(partitions)
        self.consumer.seek_to_beginning(*partitions)
        deadline = time.monotonic() + 180
        while "Worker]: Ready" not in self.log_path.read_text(errors="replace"):
            if self.worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the shop worker did not start; see {self.log_path}")
            time.sleep(0.2)

    def send(self, kind: str, events: Sequence[Any], key: Callable[[Any], str]) -> None:
        assert self.producer is not None
        topic = self.settings.topic(kind)
        for event in events:
            self.producer.send(topic, key=key(event).encode(), value=event.to_bytes())
        self.producer.flush()

    def wait_rankings(self, request_ids: Sequence[str], timeout_s: float = 300) -> None:
        """Read ``rankings`` until every one of ``request_ids`` came."""
        assert self.consumer is not None
        missing = set(request_ids) - set(self.rankings)
        deadline = time.monotonic() + timeout_s
        while missing:
            if time.monotonic() > deadline or (self.worker and self.worker.poll() is not None):
                raise RuntimeError(
                    f"{len(missing)} ranking(s) did not come; see the worker's log {self.log_path}"
                )
            for batch in self.consumer.poll(timeout_ms=200).values():
                for record in batch:
                    ranking = Ranking.model_validate_json(record.value)
                    self.rankings[ranking.request_id] = ranking
                    missing.discard(ranking.request_id)

    def wait_fed(self, interactions: int, timeout_s: float = 300) -> None:
        """Wait until the worker's feature feed has counted ``interactions`` interactions."""
        deadline = time.monotonic() + timeout_s
        while self.feed.fed() < interactions:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not learn the replay; see {self.log_path}")
            time.sleep(0.05)

    def wait_items(
        self, doc_ids: Sequence[str], features: FeatureSet, timeout_s: float = 600
    ) -> None:
        """Wait until the worker has fed every item's fields and vector to the feature state
        (an interaction learnt before its item is fed misses the item's category)."""
        state = RedisFeatureState.for_settings(self.settings, self.client, features)
        fields = [item_key(d) for d in doc_ids]
        vectors = [item_vector_key(d) for d in doc_ids]
        deadline = time.monotonic() + timeout_s
        while True:
            stored = state.get_hashes(fields)
            encoded = state.get_vectors(vectors)
            if all(stored) and all(v is not None for v in encoded):
                return
            if time.monotonic() > deadline or (self.worker and self.worker.poll() is not None):
                missing = sum(not h for h in stored)
                raise RuntimeError(
                    f"{missing} item(s) were not fed in {timeout_s:.0f}s; see {self.log_path}"
                )
            time.sleep(0.5)

    def serve(self, ranker: FinalRanker, features: FeatureSet) -> str:
        """Register and activate a version with ``ranker`` as its final ranker; wait until the
        worker serves it. Returns the version."""
        registry = registry_for(self.settings, self.client)
        version = register_final_ranker(registry, ranker, features, pipeline=PIPELINE)
        operator = registry.with_operator_key(self.settings.operator_token.encode())
        operator.activate(version.version, reason="shop evaluation")
        deadline = time.monotonic() + 60
        while True:
            probe = Candidates(
                request_id=f"probe-{uuid.uuid4().hex[:8]}",
                query=BROWSE,
                candidates=[Candidate(doc_id="probe")],
            )
            self.send("candidates", [probe], lambda e: e.request_id)
            self.wait_rankings([probe.request_id])
            if self.rankings[probe.request_id].model_version.startswith(f"{version.version}:"):
                return version.version
            if time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not serve {version.version}")
            time.sleep(0.5)

    def stop(self) -> None:
        if self.worker is not None and self.worker.poll() is None:
            self.worker.terminate()
            self.worker.wait(timeout=30)
        for client in (self.producer, self.consumer):
            if client is not None:
                client.close()
        admin = admin_client(self.settings)
        try:
            admin.delete_topics(
                [t for t in admin.list_topics() if t.startswith(self.settings.topic_prefix)]
            )
        finally:
            admin.close()
        for name in self.client.scan_iter(match=f"{self.settings.topic_prefix}*", count=1000):
            self.client.unlink(name)


def catalog_item(movie: Any, product: Any, start: float) -> Item:
    """A movie as an ``items`` message with the fields the offline state gives it. The text
    goes without a title: the worker encodes title and text joined, and the offline vectors
    are of the text alone (which holds the title)."""
    fields = item_fields(movie, product)
    return Item(
        doc_id=movie.doc_id,
        text=movie.text,
        price=float(fields["price"]),
        stock=int(fields["stock"]),
        promoted=bool(fields["promoted"]),
        category=str(fields["category"]),
        categories=str(fields["categories"]).split("|"),
        brand=None if "brand" not in fields else str(fields["brand"]),
        created_at=None if "created" not in fields else float(fields["created"]),
        timestamp=start,
    )


def replay_shop(
    settings: Settings,
    data: MovieLens,
    shop: Shop,
    tests: Sequence[Search],
    ranker: FinalRanker,
    features: FeatureSet,
    log_dir: Path,
    progress: Callable[[str, int, int], None] = lambda what, done, total: None,
    after: Callable[[LiveShop], Any] | None = None,
    feature_log: bool = False,
) -> tuple[dict[str, Any], Any]:
    """The streaming figures of ``tests`` (nDCG@10, purchases@10, as ``figures`` gives them),
    ranked by a live worker serving ``ranker`` after the replay of each search's past, and
    what ``after`` returned (called with the live shop before it stops; None: not called)."""
    live = LiveShop(settings, log_dir, feature_log)
    started = time.perf_counter()
    try:
        live.start()
        start = min(r.timestamp for r in shop.train) - 1.0
        items = [catalog_item(m, shop.catalog[m.doc_id], start) for m in data.items]
        live.send("items", items, lambda e: e.doc_id)
        live.wait_items([item.doc_id for item in items], features)
        live.serve(ranker, features)
        replayed = learnt = 0
        schedule = steps(shop, tests)
        for number, step in enumerate(schedule, 1):
            if step.browsing:
                requests = [browse_request(b) for b in step.browsing]
                live.send("candidates", requests, lambda e: e.request_id)
                live.wait_rankings([r.request_id for r in requests])
                interactions = [e for b in step.browsing for e in browse_interactions(b)]
                live.send("interactions", interactions, lambda e: e.request_id)
                learnt += len(interactions)
                live.wait_fed(learnt)
                replayed += len(requests)
            searches = [search_request(s) for s in step.searches]
            live.send("candidates", searches, lambda e: e.request_id)
            live.wait_rankings([r.request_id for r in searches])
            progress("replaying", number, len(schedule))
        rankings = [
            [item.doc_id for item in live.rankings[f"search-{s.query.query_id}"].items]
            for s in tests
        ]
        result = figures(rankings, list(tests)) | {
            "searches": len(tests),
            "sessions_replayed": replayed,
            "interactions_replayed": learnt,
            "seconds": round(time.perf_counter() - started, 1),
        }
        return result, (after(live) if after is not None else None)
    finally:
        live.stop()

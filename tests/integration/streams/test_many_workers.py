"""Many workers in one consumer group: three on six partitions, one killed, one joining.

Requests flow the whole time and the session of every ranked request is published as it
comes; a third of the way in one worker is killed with SIGKILL (no goodbye to the group), half
way a fourth worker starts, and joins the group while requests still come. Every request must
be ranked exactly once and every interaction learned exactly once, whichever worker held its
partition before, during and after the two rebalances.

The tier runs this against whatever services it is given: the single broker and Redis, or the
three-broker cluster and Redis Cluster. Pauses are measured by ``bench/cluster_faults.py``, not
asserted here.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator

import numpy as np
import pytest

from streamrank.streams.config import Settings
from streamrank.streams.events import Interaction, Ranking
from streamrank.streams.state.connections import redis_client
from streamrank.streams.streaming_simulator import to_interactions
from tests.helpers import consume, isolated_settings, wait_for
from tests.integration.streams.test_learn import (
    LEARN_ENV,
    QUERIES,
    candidates,
    due_sessions,
    learner_totals,
    produce_keyed,
    publish_sessions,
    session_store,
)

pytestmark = pytest.mark.integration

REQUESTS = 300
PER_SECOND = 6.0


@pytest.fixture
def settings(endpoints) -> Iterator[Settings]:
    """The conftest's isolated settings with six partitions, so four workers all get some."""
    with isolated_settings(endpoints.kafka_bootstrap, endpoints.redis_url, partitions=6) as made:
        yield made


def send_requests(settings: Settings, stop: threading.Event) -> None:
    for n in range(REQUESTS):
        if stop.is_set():
            return
        request = candidates(f"m{n}", QUERIES[n % len(QUERIES)])
        produce_keyed(settings, "candidates", [(request.request_id, request.to_bytes())])
        time.sleep(1 / PER_SECOND)


def rankings(settings: Settings) -> tuple[Counter, dict[str, Ranking]]:
    """How often each request was ranked, over the whole rankings topic; and the rankings."""
    records = consume(settings, "rankings", 0, timeout_s=1, exact=False)
    found = [Ranking.model_validate_json(record.value) for record in records]
    return Counter(ranking.request_id for ranking in found), {r.request_id: r for r in found}


def sessions_of(found: dict[str, Ranking], rng: np.random.Generator) -> list[list[Interaction]]:
    """One session per ranking: impressions of its top 10 and one or two clicks among them."""
    sessions = []
    for request_id in sorted(found):
        shown = [item.doc_id for item in found[request_id].items[:10]]
        clicked = sorted(rng.choice(len(shown), size=int(rng.integers(1, 3)), replace=False))
        sessions.append(to_interactions(request_id, shown, [int(c) for c in clicked]))
    return sessions


def test_every_request_is_ranked_once_and_every_interaction_learned_once(
    settings: Settings, start_worker
) -> None:
    workers = [start_worker(LEARN_ENV, ready=False) for _ in range(3)]
    for worker in workers:
        worker.wait_ready(180)
    stop = threading.Event()
    traffic = threading.Thread(target=send_requests, args=(settings, stop))
    traffic.start()
    rng = np.random.default_rng(3)
    published: list[list[Interaction]] = []
    handled: set[str] = set()
    joined = None
    deadline = time.monotonic() + REQUESTS / PER_SECOND + 300
    try:
        # publish each ranked request's session as it comes, so interactions flow through
        # both rebalances as requests do
        while len(handled) < REQUESTS and time.monotonic() < deadline:
            _, found = rankings(settings)
            batch = sessions_of({r: found[r] for r in found.keys() - handled}, rng)
            publish_sessions(settings, batch)
            published.extend(batch)
            handled |= found.keys()
            if len(handled) >= REQUESTS // 3 and workers[0].process.poll() is None:
                workers[0].process.kill()  # SIGKILL: no goodbye to the group
                workers[0].process.wait()
            if len(handled) >= REQUESTS // 2 and joined is None:
                joined = start_worker(LEARN_ENV, ready=False)
    finally:
        stop.set()
        traffic.join()
    assert joined is not None, f"only {len(handled)} of {REQUESTS} requests were ranked"
    joined.wait_ready(180)

    counts, _ = rankings(settings)
    assert set(counts) == {f"m{n}" for n in range(REQUESTS)}
    assert {request_id: n for request_id, n in counts.items() if n > 1} == {}

    client = redis_client(settings)
    sessions = session_store(settings)
    unique = sum(len(events) for events in published)

    def everything_learned() -> bool:
        counted = sessions.counts().get("interactions")
        return counted == unique and due_sessions(client, settings) == 0

    wait_for(everything_learned, 240, "every session to be learned")
    expected_impressions = sum(e.type == "impression" for s in published for e in s)
    expected_clicks = sum(e.type == "click" for s in published for e in s)
    assert learner_totals(settings, client) == (expected_impressions, expected_clicks)
    assert all(worker.process.poll() is None for worker in [*workers[1:], joined])
    # the newcomer took part in a rebalance and was given partitions (aiokafka logs each
    # assignment; which topics it gets first is the assignor's choice)
    chunks = joined.log().split("newly assigned partitions")[1:]
    assignments = [chunk.split(" for group ")[0] for chunk in chunks]
    assert any(settings.topic_prefix in assignment for assignment in assignments), assignments

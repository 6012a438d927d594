"""A Redis outage under a live worker: requests keep being ranked, the worker keeps running.

The test runs its own Redis (a free port, a private run directory, AOF on, as
``deploy/redis.sh`` starts it) so that it can stop and start it; the shared Redis is never
touched. Before the outage a few requests are ranked and clicked, and learned; during it more
requests come, and each is ranked once, flagged degraded, its impression kept by the worker;
after Redis is back (from its append-only file) rankings are normal again, what was learned
before is still there, and clicks on the outage's rankings are learned.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from streamrank.streams.config import Settings
from streamrank.streams.events import Candidate, Candidates, Interaction, Ranking
from streamrank.streams.online import learner_store_for
from streamrank.streams.state.user_sessions import SessionStore
from tests.helpers import REPO, consume, free_port, produce, wait_for

pytestmark = pytest.mark.integration

DOCS = {
    "volga": "The Volga is the longest river in Europe; it flows through central Russia.",
    "moscow": "Moscow is the capital and largest city of Russia.",
    "paris": "Paris is the capital of France, on the Seine.",
    "seine": "The Seine is a river in northern France.",
}


class PrivateRedis:
    """A Redis of this test's own, started and stopped by ``deploy/redis.sh``."""

    def __init__(self, run_dir: Path) -> None:
        self.port = free_port()
        self.env = os.environ | {
            "STREAMRANK_REDIS_PORT": str(self.port),
            "STREAMRANK_RUN_DIR": str(run_dir),
        }
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def run(self, command: str) -> None:
        subprocess.run(
            ["bash", str(REPO / "deploy" / "redis.sh"), command],
            env=self.env,
            check=True,
            capture_output=True,
            timeout=60,
        )


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path / "run")
    server.run("start")
    yield server
    server.run("stop")


def request(request_id: str) -> Candidates:
    return Candidates(
        request_id=request_id,
        query="river in russia",
        candidates=[
            Candidate(doc_id=doc, text=text, first_stage_score=10.0 - i)
            for i, (doc, text) in enumerate(DOCS.items())
        ],
    )


def click(request_id: str, doc_id: str) -> Interaction:
    return Interaction(
        event_id=f"{request_id}-click", request_id=request_id, doc_id=doc_id, type="click"
    )


def rankings(settings: Settings, wanted: set[str], timeout_s: float = 120) -> list[Ranking]:
    """Every ranking on the topic (duplicates included) once all of ``wanted`` came."""
    deadline = time.monotonic() + timeout_s
    while True:
        records = consume(settings, "rankings", 0, timeout_s=2, exact=False)
        found = [Ranking.model_validate_json(record.value) for record in records]
        if wanted <= {ranking.request_id for ranking in found}:
            return found
        if time.monotonic() > deadline:
            missing = wanted - {ranking.request_id for ranking in found}
            raise AssertionError(f"no ranking for {sorted(missing)} in {timeout_s}s")


def send(settings: Settings, request_ids: list[str]) -> None:
    produce(settings, "candidates", [request(rid).to_bytes() for rid in request_ids])


def test_requests_are_ranked_degraded_during_an_outage_and_normally_after(
    settings: Settings, start_worker, private_redis: PrivateRedis
) -> None:
    # the private Redis is a single node, whatever the suite runs against
    private = settings.model_copy(update={"redis_url": private_redis.url, "redis_cluster": False})
    client = redis.Redis.from_url(private_redis.url)
    worker = start_worker(
        {
            "STREAMRANK_REDIS_URL": private_redis.url,
            "STREAMRANK_REDIS_CLUSTER": "false",
            "STREAMRANK_LATENCY_BUDGET_MS": "60000",  # a cold first request on a busy machine
            "STREAMRANK_SESSION_CLOSE_S": "1",
        }
    )
    sessions = SessionStore(client, private)

    before = ["before-0", "before-1", "before-2"]
    send(settings, before)
    assert not any(r.degraded for r in rankings(settings, set(before)))
    produce(settings, "interactions", [click(rid, "volga").to_bytes() for rid in before])
    wait_for(lambda: sessions.counts().get("sessions_learned", 0) >= 3, 90, "learning")
    learned = learner_store_for(private, client).doc_stats(list(DOCS))
    assert sum(s.clicks for s in learned) == 3
    time.sleep(1.5)  # appendfsync everysec: what was learned is on disk

    private_redis.run("stop")
    during = [f"during-{i}" for i in range(6)]
    send(settings, during)
    served = {r.request_id: r for r in rankings(settings, set(during))}
    assert all(served[rid].degraded for rid in during)
    assert all("Redis" in (served[rid].degraded_reason or "") for rid in during)
    assert all("impression kept until Redis answers" in served[r].degraded_reason for r in during)
    assert all(len(served[rid].items) == len(DOCS) for rid in during)
    assert worker.process.poll() is None, worker.log()[-3000:]

    private_redis.run("start")
    # the breaker lets a probe through within redis_breaker_open_s; then nothing is degraded
    probes: list[str] = []

    def normal_again() -> bool:
        probes.append(f"probe-{len(probes)}")
        send(settings, [probes[-1]])
        found = {r.request_id: r for r in rankings(settings, {probes[-1]})}
        return not found[probes[-1]].degraded

    wait_for(normal_again, 60, "a ranking that is not degraded")
    after = ["after-0", "after-1", "after-2"]
    send(settings, after)
    everything = rankings(settings, set(after))
    assert not any(r.degraded for r in everything if r.request_id in after)

    per_request = Counter(r.request_id for r in everything)
    assert {rid: per_request[rid] for rid in before + during + after} == dict.fromkeys(
        before + during + after, 1
    )
    assert worker.process.poll() is None, worker.log()[-3000:]
    # learned before the outage, kept by the append-only file across the restart
    kept = learner_store_for(private, client).doc_stats(list(DOCS))
    assert [s.clicks for s in kept] == [s.clicks for s in learned]
    # the outage's impressions waited in the worker and were written once Redis answered, so
    # clicks on the rankings served during it are learned too
    produce(settings, "interactions", [click(rid, "volga").to_bytes() for rid in during])
    wait_for(
        lambda: sessions.counts().get("sessions_learned", 0) >= len(before + during),
        90,
        "learning the clicks on the outage's rankings",
    )
    clicks = sum(s.clicks for s in learner_store_for(private, client).doc_stats(list(DOCS)))
    assert clicks == len(before + during)
    assert sessions.counts().get("orphans_dead", 0) == 0

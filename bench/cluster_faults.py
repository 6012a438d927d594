"""Faults of a cluster under load: many workers, a dead leader broker, a dead Redis master.

Everything runs on a PRIVATE three-broker Kafka cluster (``deploy/kafka.sh start --cluster``,
replication 3, ``min.insync.replicas`` 2) and a PRIVATE Redis Cluster (``deploy/redis.sh start
--cluster``, three masters and three replicas), on free ports in a temporary run directory, with
real ``streamrank worker`` processes: nodes are killed here, which must never happen to the
services other work relies on. The traffic, the session publisher and the ranking watcher are
those of ``bench/faults.py``. Prints one JSON object; progress goes to stderr.

Scenarios (``--only`` picks some, comma-separated):

``workers``
    Three workers on a six-partition ``candidates`` topic; ``--requests`` requests at
    ``--rate`` per second and the sessions of the ranked ones as interactions (up to
    ``--interactions``). A third of the way in, one worker is killed with SIGKILL; two thirds
    in, a fourth worker joins. Lost and duplicated rankings, interactions applied twice or
    never, and the rebalance pauses: for the requests sent in the ``--window`` seconds after
    each event (the kill; the new worker's start), the time from sending a request to its
    ranking being produced, against the same before the first event.
``leader``
    One worker, requests at 5 per second; the broker that leads partition 0 of
    ``candidates`` is killed with SIGKILL (and started again at the end): rankings lost, the
    longest gap between rankings, seconds from the kill to the first ranking of a request sent
    after it.
``master``
    One worker, requests at 5 per second with their sessions; the Redis master of the first
    slot range is killed with SIGKILL and its replica takes over (cluster-node-timeout 2 s):
    requests of the failover ranked, degraded or dropped, seconds until a ranking is no longer
    degraded, and interactions learned once, twice or never once the sessions settle.

Example (a quick run, a few minutes)::

    .venv/bin/python bench/cluster_faults.py --requests 600 --interactions 2000

The full run is ``python bench/cluster_faults.py`` (3,000 requests, 10,000 interactions).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.faults import (  # noqa: E402
    LEARN_ENV,
    RankingWatcher,
    Seen,
    SessionPublisher,
    Worker,
    console,
    first_after,
    learned,
    longest_gap,
    paced,
    producer,
    ranking_figures,
    request,
    wait_learned,
)
from streamrank.streams.config import Settings  # noqa: E402
from streamrank.streams.kafka.topics import admin_client, create_topics  # noqa: E402
from tests.helpers import free_ports  # noqa: E402

SCENARIOS = ("workers", "leader", "master")
BROKERS = 3
REDIS_NODES = 6


@dataclass
class ClusterServices:
    """A private Kafka cluster and Redis Cluster, started with the deploy scripts in ``run_dir``."""

    run_dir: Path
    kafka_port: int
    controller_port: int
    redis_port: int

    @classmethod
    def on_free_ports(cls, run_dir: Path) -> ClusterServices:
        # one block, so that the three ranges cannot overlap: Redis, brokers, controllers
        first = free_ports(REDIS_NODES + 2 * BROKERS)
        return cls(run_dir, first + REDIS_NODES, first + REDIS_NODES + BROKERS, first)

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{self.kafka_port + n}" for n in range(BROKERS))

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def redis_nodes(self) -> str:
        """The cluster's other nodes, to start a client from while the URL's node is down."""
        return ",".join(f"127.0.0.1:{self.redis_port + n}" for n in range(1, REDIS_NODES))

    def script(self, name: str, *arguments: str) -> float:
        """Run ``deploy/<name>.sh <arguments>``; the time.time() it returned at."""
        env = os.environ | {
            "STREAMRANK_KAFKA_CLUSTER_PORT": str(self.kafka_port),
            "STREAMRANK_KAFKA_CLUSTER_CONTROLLER_PORT": str(self.controller_port),
            "STREAMRANK_REDIS_CLUSTER_PORT": str(self.redis_port),
            "STREAMRANK_RUN_DIR": str(self.run_dir),
        }
        result = subprocess.run(
            ["bash", str(ROOT / "deploy" / f"{name}.sh"), *arguments],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if result.returncode != 0:
            raise RuntimeError(f"deploy/{name}.sh {' '.join(arguments)} failed:\n{result.stderr}")
        return time.time()

    def broker_of_port(self, port: int) -> int:
        """The node number (1-3) of the broker listening on ``port``."""
        return port - self.kafka_port + 1


@contextlib.contextmanager
def private_cluster(keep: bool) -> Iterator[ClusterServices]:
    run_dir = Path(tempfile.mkdtemp(prefix="streamrank-cluster-faults-"))
    services = ClusterServices.on_free_ports(run_dir)
    console.log(
        f"starting a private Kafka cluster on {services.bootstrap} and a Redis Cluster on "
        f"127.0.0.1:{services.redis_port}-{services.redis_port + REDIS_NODES - 1}"
    )
    try:
        services.script("kafka", "start", "--cluster")
        services.script("redis", "start", "--cluster")
        yield services
    finally:
        for name in ("kafka", "redis"):
            with contextlib.suppress(Exception):
                services.script(name, "stop", "--cluster")
        if keep:
            console.log(f"kept {run_dir}")
        else:
            shutil.rmtree(run_dir, ignore_errors=True)


def scenario_settings(services: ClusterServices, partitions: int) -> Settings:
    """Settings on the private cluster with a fresh prefix and app id; topics created."""
    run = uuid.uuid4().hex[:8]
    settings = Settings(
        kafka_bootstrap=services.bootstrap,
        redis_url=services.redis_url,
        redis_cluster=True,
        redis_cluster_nodes=services.redis_nodes,
        topic_prefix=f"cluster-{run}.",
        app_id=f"streamrank-cluster-{run}",
        partitions=partitions,
    )
    create_topics(settings)
    return settings


def start_worker(settings: Settings, services: ClusterServices, name: str, env: dict) -> Worker:
    return Worker(settings, services.run_dir / f"{settings.app_id}-{name}.log", env)


class Traffic:
    """``count`` requests at ``rate`` per second in a thread, noting when each was sent."""

    def __init__(self, settings: Settings, prefix: str, count: int, rate: float) -> None:
        self.settings = settings
        self.ids = [f"{prefix}{n}" for n in range(count)]
        self.sent_at: dict[str, float] = {}
        self.out = producer(settings)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=paced, args=(count, rate, self.send, self.stop))

    def send(self, n: int) -> None:
        request_id = self.ids[n]
        self.sent_at[request_id] = time.time()
        self.out.send(
            self.settings.topic("candidates"),
            key=request_id.encode(),
            value=request(request_id, n).to_bytes(),
        )

    def start(self) -> Traffic:
        self.thread.start()
        return self

    def finish(self) -> None:
        self.thread.join()
        self.out.flush()
        self.out.close()


def warm_up(settings: Settings, watcher: RankingWatcher) -> None:
    """Rank a few requests on every partition first: model loading is not a rebalance pause."""
    traffic = Traffic(settings, "warm", 4 * settings.partitions, rate=50).start()
    traffic.finish()
    watcher.wait(set(traffic.ids), 180)


def delays(traffic: Traffic, seen: list[Seen], start: float, end: float) -> list[float]:
    """Seconds from sending to the ranking being produced, for requests sent in [start, end)."""
    produced = {s.request_id: s.created for s in seen}
    return [
        produced[r] - sent
        for r, sent in traffic.sent_at.items()
        if start <= sent < end and r in produced
    ]


def summary(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"requests": 0, "p50_s": None, "p95_s": None, "max_s": None}
    p50, p95 = np.percentile(values, [50, 95])
    return {
        "requests": len(values),
        "p50_s": round(float(p50), 3),
        "p95_s": round(float(p95), 3),
        "max_s": round(max(values), 3),
    }


def learning_figures(settings: Settings, sessions: SessionPublisher) -> dict[str, Any]:
    impressions, clicks, counts = learned(settings)
    return {
        "interactions_published": sessions.sent,
        "interactions_ingested": counts.get("interactions", 0),
        "impressions_expected": sessions.impressions,
        "impressions_learned": impressions,
        "clicks_expected": sessions.clicks,
        "clicks_learned": clicks,
        "double_applied": max(0, int(impressions - sessions.impressions))
        + max(0, int(clicks - sessions.clicks)),
        "never_applied": max(0, int(sessions.impressions - impressions))
        + max(0, int(sessions.clicks - clicks)),
    }


def wait_ranked_fraction(watcher: RankingWatcher, traffic: Traffic, fraction: float) -> None:
    wanted = set(traffic.ids)
    while len(watcher.ranked(wanted)) < fraction * len(wanted) and traffic.thread.is_alive():
        time.sleep(0.1)


# --- scenario: three workers, one killed, one joining ----------------------------------------


def run_workers(services: ClusterServices, args: argparse.Namespace) -> dict[str, Any]:
    settings = scenario_settings(services, partitions=6)
    traffic = Traffic(settings, "w", args.requests, args.rate)
    sessions = SessionPublisher(settings, set(traffic.ids), args.interactions)
    watcher = RankingWatcher(settings, on_ranking=sessions)
    started = [start_worker(settings, services, str(n), LEARN_ENV) for n in range(3)]
    try:
        for worker in started:
            worker.wait_ready(180)
        warm_up(settings, watcher)
        console.log(f"workers: {args.requests} requests at {args.rate}/s on 3 workers")
        traffic.start()
        wait_ranked_fraction(watcher, traffic, 1 / 3)
        killed_at = started[0].kill()
        console.log("workers: worker 0 killed with SIGKILL")
        wait_ranked_fraction(watcher, traffic, 2 / 3)
        joined_at = time.time()
        started.append(start_worker(settings, services, "3", LEARN_ENV))
        started[-1].wait_ready(180)
        ready_at = time.time()
        console.log(f"workers: worker 3 ready after {ready_at - joined_at:.1f} s")
        traffic.finish()
        watcher.wait(set(traffic.ids), 300)
        sessions.close()
        wait_learned(settings, sessions, 300)
        alive = [worker.process.poll() is None for worker in started[1:]]
    finally:
        for worker in started:
            worker.stop()
        watcher.close()
    seen = watcher.snapshot()
    window = args.window
    return {
        "partitions": settings.partitions,
        "rate_per_s": args.rate,
        **ranking_figures(watcher, set(traffic.ids)),
        **learning_figures(settings, sessions),
        "delay_before_kill": summary(delays(traffic, seen, 0, killed_at)),
        "delay_after_kill": summary(delays(traffic, seen, killed_at, killed_at + window)),
        "delay_after_join": summary(delays(traffic, seen, joined_at, ready_at + window)),
        "seconds_join_to_ready": round(ready_at - joined_at, 1),
        "longest_ranking_gap_after_kill_s": longest_gap(
            [s for s in seen if s.received < joined_at], killed_at
        ),
        "longest_ranking_gap_after_join_s": longest_gap(seen, joined_at),
        "survivors_alive": alive,
        "window_s": window,
    }


# --- scenario: the leader broker of a busy partition killed ----------------------------------


def leader_of(settings: Settings, kind: str, partition: int) -> int:
    """The broker id (the node number) that leads ``partition`` of a streamrank topic."""
    admin = admin_client(settings)
    try:
        (described,) = admin.describe_topics([settings.topic(kind)])
    finally:
        admin.close()
    # kafka-python 3 returns the metadata response's own names (partition_index, leader_id)
    return next(
        p["leader_id"] for p in described["partitions"] if p["partition_index"] == partition
    )


def run_leader(services: ClusterServices, args: argparse.Namespace) -> dict[str, Any]:
    settings = scenario_settings(services, partitions=6)
    rate, before_s, after_s = 5.0, 10.0, 40.0
    traffic = Traffic(settings, "l", int(rate * (before_s + after_s)), rate)
    watcher = RankingWatcher(settings)
    worker = start_worker(settings, services, "leader", LEARN_ENV)
    try:
        worker.wait_ready(180)
        warm_up(settings, watcher)
        traffic.start()
        time.sleep(before_s)
        node = leader_of(settings, "candidates", 0)
        killed_at = services.script("kafka", "kill-node", str(node))
        console.log(f"leader: broker {node} (leader of candidates/0) killed with SIGKILL")
        traffic.finish()
        watcher.wait(set(traffic.ids), 180)
        alive = worker.process.poll() is None
        new_leader = leader_of(settings, "candidates", 0)
        services.script("kafka", "start-node", str(node))
    finally:
        worker.stop()
        watcher.close()
    seen = watcher.snapshot()
    sent_after = {r for r, t in traffic.sent_at.items() if t >= killed_at}
    after = [s for s in seen if s.request_id in sent_after]
    return {
        "rate_per_s": rate,
        "killed_broker": node,
        "new_leader": new_leader,
        **ranking_figures(watcher, set(traffic.ids)),
        "seconds_kill_to_first_ranking_of_a_later_request": first_after(after, killed_at),
        "longest_ranking_gap_after_kill_s": longest_gap(seen, killed_at),
        "delay_after_kill": summary(delays(traffic, seen, killed_at, killed_at + args.window)),
        "delay_before_kill": summary(delays(traffic, seen, 0, killed_at)),
        "worker_alive": alive,
    }


# --- scenario: a Redis master killed ------------------------------------------------------


def run_master(services: ClusterServices, args: argparse.Namespace) -> dict[str, Any]:
    settings = scenario_settings(services, partitions=6)
    rate, before_s, after_s = 5.0, 15.0, 30.0
    traffic = Traffic(settings, "m", int(rate * (before_s + after_s)), rate)
    sessions = SessionPublisher(settings, set(traffic.ids), budget=10**9)
    watcher = RankingWatcher(settings, on_ranking=sessions)
    worker = start_worker(settings, services, "master", LEARN_ENV)
    try:
        worker.wait_ready(180)
        warm_up(settings, watcher)
        traffic.start()
        time.sleep(before_s)
        killed_at = services.script("redis", "kill-node", str(services.redis_port))
        console.log(f"master: Redis master :{services.redis_port} killed with SIGKILL")
        traffic.finish()
        watcher.wait(set(traffic.ids), 180)
        sessions.close()
        wait_learned(settings, sessions, 180)
        alive = worker.process.poll() is None
        services.script("redis", "start-node", str(services.redis_port))
    finally:
        worker.stop()
        watcher.close()
    seen = watcher.snapshot()
    window = [s for s in seen if traffic.sent_at.get(s.request_id, 0) >= killed_at]
    healthy = [s for s in window if not s.degraded]
    degraded = {s.request_id for s in window if s.degraded}
    return {
        "rate_per_s": rate,
        **ranking_figures(watcher, set(traffic.ids)),
        "requests_after_kill": sum(t >= killed_at for t in traffic.sent_at.values()),
        "ranked_degraded_after_kill": len(degraded),
        "seconds_kill_to_first_healthy_ranking": first_after(healthy, killed_at, created=True),
        "longest_ranking_gap_after_kill_s": longest_gap(seen, killed_at),
        **learning_figures(settings, sessions),
        "worker_alive": alive,
    }


# --- main ---------------------------------------------------------------------------------

RUNNERS = {"workers": run_workers, "leader": run_leader, "master": run_master}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenarios")
    parser.add_argument("--requests", type=int, default=3000, help="of the workers scenario")
    parser.add_argument("--interactions", type=int, default=10_000, help="of the workers one")
    parser.add_argument("--rate", type=float, default=20.0, help="requests/s, workers scenario")
    parser.add_argument("--window", type=float, default=20.0, help="seconds after an event")
    parser.add_argument("--keep", action="store_true", help="keep the run dir (logs)")
    args = parser.parse_args(argv)
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(args.only) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s) {sorted(unknown)}; choose from {', '.join(SCENARIOS)}")
    if args.requests < 3 or args.interactions < 1 or args.rate <= 0 or args.window <= 0:
        parser.error("--requests >= 3, --interactions >= 1, --rate and --window > 0")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    figures: dict[str, Any] = {"scenarios": args.only}
    with private_cluster(args.keep) as services:
        for name in args.only:
            console.rule(name)
            started = time.monotonic()
            try:
                figures[name] = RUNNERS[name](services, args)
            except Exception as error:  # one scenario failing must not hide the others
                figures[name] = {"error": f"{type(error).__name__}: {error}"[:2000]}
            figures[name]["scenario_seconds"] = round(time.monotonic() - started, 1)
            console.log(json.dumps(figures[name]))
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()

"""What the feature matrix of 1,000 candidates costs from Redis, against the same from memory.

The synthetic stream of ``bench/features.py`` (items with fields and ``--dim``-float vectors,
users, interactions over ``--days`` days across ``--queries`` queries) is learnt by the default
feature config into a ``MemoryState`` and into a ``RedisFeatureState`` under a unique key prefix
(deleted at the end). Then, in one run:

- ``memory``: the baseline, ``FeatureVector.matrix`` from the ``MemoryState``;
- ``redis``: the same request's matrix from Redis (median, p95, p99 wall-clock ms over
  ``--repeats`` requests, process CPU median), and its round trips: the served path, every
  read the feature set is known to need prefetched as one batch, window sums made in Redis;
- ``redis_by_parts``: the path before prefetching, measured in the same run: each part read
  on first use through the plain ``FeatureState`` calls (raw day buckets decoded here);
- ``reads``: each batch read alone for the candidates (counters, item hashes, vectors,
  the prefetch's window sums and item columns);
- ``identical``: whether the matrices are equal bit for bit (NaN where NaN), per path;
- ``memory_report``: entries and ``MEMORY USAGE`` bytes per item and per user in Redis, next to
  ``MemoryState``'s figures; and how fast each state learnt the events.

Redis is ``--redis-url`` (default ``STREAMRANK_REDIS_URL`` or redis://127.0.0.1:6379/0), a
Redis Cluster when ``STREAMRANK_REDIS_CLUSTER=true`` (the client of
:func:`~streamrank.streams.state.connections.redis_client`; a batch read is then split by hash
tag bucket, and ``round_trips`` counts one packet per master a pipeline reaches). A Redis on
the same host hides the network a deployment adds to every round trip.

Example: python bench/feature_fetch.py --repeats 100 --json
(cluster: STREAMRANK_REDIS_URL=redis://127.0.0.1:7000/0 STREAMRANK_REDIS_CLUSTER=true ...)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import redis
import redis.connection

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.features import (  # noqa: E402
    KINDS,
    add_synthetic_arguments,
    request_for,
    synthetic_events,
)
from streamrank.models.features.defaults import default_features  # noqa: E402
from streamrank.models.features.events import (  # noqa: E402
    Event,
    day_of,
)
from streamrank.models.features.learn import FeatureLearner  # noqa: E402
from streamrank.models.features.lookup import ReadPlan  # noqa: E402
from streamrank.models.features.state import (  # noqa: E402
    BatchRead,
    CounterRead,
    FeatureState,
    MemoryState,
)
from streamrank.models.features.vector import FeatureVector  # noqa: E402
from streamrank.streams.config import Settings  # noqa: E402
from streamrank.streams.state.connections import redis_client  # noqa: E402
from streamrank.streams.state.feature_state import RedisFeatureState  # noqa: E402


class PlainState:
    """Only the plain ``FeatureState`` calls of a state: no batch read, as before prefetching."""

    def __init__(self, state: FeatureState) -> None:
        self.read_counts = state.read_counts
        self.get_hashes = state.get_hashes
        self.get_vectors = state.get_vectors


def learn(state: FeatureState, events: list[Event]) -> float:
    """Learn ``events`` into ``state``; events per second."""
    learner = FeatureLearner(default_features(), state)
    started = time.perf_counter()
    for event in events:
        learner.learn_one(event)
    if isinstance(state, RedisFeatureState):
        state.flush()
    return len(events) / (time.perf_counter() - started)


def timed(call: Callable[[], object], repeats: int) -> dict[str, float]:
    """Median, p95 and p99 wall-clock ms of ``call`` and its CPU median (after a warm-up)."""
    call()
    wall, cpu = [], []
    for _ in range(repeats):
        started, started_cpu = time.perf_counter(), time.process_time()
        call()
        wall.append(1000 * (time.perf_counter() - started))
        cpu.append(1000 * (time.process_time() - started_cpu))
    return {
        "median_ms": round(float(np.median(wall)), 3),
        "p95_ms": round(float(np.percentile(wall, 95)), 3),
        "p99_ms": round(float(np.percentile(wall, 99)), 3),
        "cpu_median_ms": round(float(np.median(cpu)), 3),
    }


def round_trips(call: Callable[[], object]) -> int:
    """Packets sent to Redis while ``call`` runs: a pipeline or a plain command is one."""
    original = redis.connection.Connection.send_packed_command
    sent = [0]

    def counting(self: redis.connection.Connection, *args: object, **kwargs: object) -> None:
        sent[0] += 1
        original(self, *args, **kwargs)  # type: ignore[arg-type]

    redis.connection.Connection.send_packed_command = counting  # type: ignore[method-assign]
    try:
        call()
    finally:
        redis.connection.Connection.send_packed_command = original  # type: ignore[method-assign]
    return sent[0]


def bench_client(url: str) -> redis.Redis:
    """The deployment's client for ``url``: a cluster client when ``STREAMRANK_REDIS_CLUSTER``."""
    return redis_client(Settings(redis_url=url))


def delete_prefix(client: redis.Redis, prefix: str) -> int:
    deleted = 0
    batch: list[bytes] = []
    for name in client.scan_iter(match=prefix + "*", count=1000):
        batch.append(name)
        if len(batch) == 1000:
            deleted += client.unlink(*batch)
            batch = []
    if batch:
        deleted += client.unlink(*batch)
    return deleted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_synthetic_arguments(parser, repeats=100)
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("STREAMRANK_REDIS_URL", "redis://127.0.0.1:6379/0"),
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object (default)")
    args = parser.parse_args()

    features = default_features()
    events = synthetic_events(args)
    request = request_for(args)
    client = bench_client(args.redis_url)
    prefix = f"bench-feature-fetch-{uuid.uuid4().hex[:10]}:"
    memory = MemoryState(days=features.max_window_days)
    state = RedisFeatureState(
        client, prefix=prefix, days=features.max_window_days, buffer_writes=True
    )
    try:
        learnt_memory = learn(memory, events)
        learnt_redis = learn(state, events)
        offline, online = FeatureVector(features, memory), FeatureVector(features, state)
        by_parts = FeatureVector(features, PlainState(state), prefetch=False)  # type: ignore[arg-type]
        expected = offline.matrix(request)
        doc_ids, today = list(request.doc_ids), day_of(request.now)
        plan = ReadPlan.for_features(features)
        counters = {"item": CounterRead([f"item:counts|{d}" for d in doc_ids], KINDS, [7, 30])}
        columns = BatchRead(
            columns=[f"item|{d}" for d in doc_ids],
            numbers=plan.item_numbers,
            strings=plan.item_strings,
        )
        load_before = os.getloadavg()
        reads = {
            "read_counts": lambda: state.read_counts(
                [f"item:counts|{d}" for d in doc_ids], KINDS, today, features.max_window_days
            ),
            "get_hashes": lambda: state.get_hashes([f"item|{d}" for d in doc_ids]),
            "get_vectors": lambda: state.get_vectors([f"item:vector|{d}" for d in doc_ids]),
            "batch_window_sums": lambda: state.read_batch(BatchRead(today, counters=counters)),
            "batch_item_columns": lambda: state.read_batch(columns),
        }
        result = {
            "redis_cluster": state.clustered,
            "candidates": args.candidates,
            "columns": len(features.columns),
            "identical": {
                "redis": bool(np.array_equal(expected, online.matrix(request), equal_nan=True)),
                "redis_by_parts": bool(
                    np.array_equal(expected, by_parts.matrix(request), equal_nan=True)
                ),
            },
            "memory": timed(lambda: offline.matrix(request), args.repeats),
            "redis": timed(lambda: online.matrix(request), args.repeats)
            | {"round_trips": round_trips(lambda: online.matrix(request))},
            "redis_by_parts": timed(lambda: by_parts.matrix(request), args.repeats)
            | {"round_trips": round_trips(lambda: by_parts.matrix(request))},
            "reads": {
                name: timed(read, args.repeats) | {"round_trips": round_trips(read)}
                for name, read in reads.items()
            },
            "events_learnt_per_s": {"memory": round(learnt_memory), "redis": round(learnt_redis)},
            "memory_report": {
                "redis": _per_owner(state.memory_report().as_dict()),
                "memory_state": _per_owner(memory.memory_report().as_dict()),
            },
            "load_average": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
            "setup": {
                name: getattr(args, name)
                for name in ("items", "users", "queries", "interactions", "days", "dim", "repeats")
            },
        }
    finally:
        deleted = delete_prefix(client, prefix)
    result["keys_deleted"] = deleted
    print(json.dumps(result, indent=2))


def _per_owner(report: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    return {owner: report[owner] for owner in ("item", "user") if owner in report}


if __name__ == "__main__":
    main()

"""What assembling the feature matrix of 1,000 candidates costs, from an in-memory state.

The state is built by replaying synthetic events through the default feature config
(:func:`~streamrank.models.features.defaults.default_features`): ``--items`` items with fields
and ``--dim``-float vectors, ``--interactions`` interactions spread over ``--days`` days across
``--queries`` queries and ``--users`` users. Then, in one run, each figure is the median and
p95 of ``--repeats`` assemblies of ``--candidates`` candidates (a known user, a known query,
request-time scores given):

- ``all_default``: the baseline, the same request against an empty state (every feature
  missing, so every value is its default);
- ``assembled``: the matrix from the learnt state;
- ``by_kind``: each feature kind alone (its share of ``assembled``).

It also reports the state's memory per item and per user, how fast events were learnt, and
``os.getloadavg()`` at the start and end (timings from a busy machine read high).
This measures the library half only; a Redis-backed state adds its round trips.

Example: python bench/features.py --candidates 1000 --repeats 50 --json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streamrank.models.features.config import FeatureSet  # noqa: E402
from streamrank.models.features.defaults import DEFAULT_FEATURES, default_features  # noqa: E402
from streamrank.models.features.events import (  # noqa: E402
    DAY_S,
    Event,
    FeatureRequest,
    InteractionEvent,
    ItemEvent,
    UserEvent,
)
from streamrank.models.features.learn import FeatureLearner  # noqa: E402
from streamrank.models.features.state import MemoryState  # noqa: E402
from streamrank.models.features.vector import FeatureVector  # noqa: E402

START = 20_000 * DAY_S
KINDS = ("impression", "click", "add_to_cart", "purchase")


def timed(call: Callable[[], object], repeats: int) -> dict[str, float]:
    """Median and p95 milliseconds of ``call``, wall-clock and process CPU (one warm-up first).

    On a shared machine the wall clock includes waiting for a core; the CPU time is what the
    assembly itself costs.
    """
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
        "cpu_median_ms": round(float(np.median(cpu)), 3),
        "cpu_p95_ms": round(float(np.percentile(cpu, 95)), 3),
    }


def synthetic_events(args: argparse.Namespace) -> list[Event]:
    """Synthetic items, users and interactions (Zipf-popular items), in time order."""
    rng = np.random.default_rng(args.seed)
    events: list[Event] = []
    for i in range(args.items):
        fields = {
            "price": float(rng.lognormal(3, 1)),
            "category": f"cat{i % 40}",
            "brand": f"brand{i % 200}",
            "stock": int(rng.integers(0, 20)),
            "promoted": bool(i % 17 == 0),
        }
        vector = rng.standard_normal(args.dim).astype(np.float32)
        events.append(
            ItemEvent(f"d{i}", START - float(rng.integers(0, 400)) * DAY_S, fields, vector)
        )
    events += [UserEvent(f"u{u}", START, {"segment": f"s{u % 5}"}) for u in range(args.users)]
    times = np.sort(START + rng.random(args.interactions) * args.days * DAY_S)
    docs = rng.zipf(1.3, args.interactions) % args.items
    kinds = rng.choice(4, args.interactions, p=[0.85, 0.1, 0.03, 0.02])
    users = rng.integers(0, args.users, args.interactions)
    queries = rng.integers(0, args.queries, args.interactions)
    events += [
        InteractionEvent(
            KINDS[k],
            f"d{d}",
            float(t),
            user_id=f"u{u}",
            query=f"query {q}",
            session_id=f"s{u}-{int(t // 3600)}",
        )
        for t, d, k, u, q in zip(times, docs, kinds, users, queries, strict=True)
    ]
    events.sort(key=lambda event: event.timestamp)
    return events


def build_state(features: FeatureSet, args: argparse.Namespace) -> tuple[MemoryState, float]:
    """A state fed with :func:`synthetic_events`; and events learnt per second."""
    state = MemoryState(days=features.max_window_days)
    learner = FeatureLearner(features, state)
    events = synthetic_events(args)
    started = time.perf_counter()
    for event in events:
        learner.learn_one(event)
    rate = len(events) / (time.perf_counter() - started)
    return state, rate


def request_for(args: argparse.Namespace) -> FeatureRequest:
    rng = np.random.default_rng(args.seed + 1)
    doc_ids = [f"d{i}" for i in rng.choice(args.items, args.candidates, replace=False)]
    scores = np.sort(rng.random(args.candidates))[::-1]
    ce = np.full(args.candidates, np.nan)
    ce[:50] = rng.random(50)  # the cross-encoder scored a prefix only
    values = {"first_stage_score": scores, "dense": rng.random(args.candidates), "ce": ce}
    now = START + args.days * DAY_S
    return FeatureRequest(doc_ids, now=now, query="query 1", user_id="u1", values=values)


def by_kind(state: MemoryState, request: FeatureRequest, repeats: int) -> dict[str, dict]:
    """Each kind's features alone, against the same state."""
    figures = {}
    kinds = sorted({entry["kind"] for entry in DEFAULT_FEATURES["features"]})
    for kind in kinds:
        entries = [e for e in DEFAULT_FEATURES["features"] if e["kind"] == kind]
        if kind == "cosine":  # a cosine needs its embedding declared
            entries = [
                e for e in DEFAULT_FEATURES["features"] if e["kind"] == "embedding_mean"
            ] + entries
        vector = FeatureVector(FeatureSet.from_dict({"features": entries}), state)
        figures[kind] = timed(lambda v=vector: v.matrix(request), repeats)
    return figures


def add_synthetic_arguments(parser: argparse.ArgumentParser, repeats: int) -> None:
    """The options of :func:`synthetic_events` and :func:`request_for`, and ``--repeats``."""
    parser.add_argument("--candidates", type=int, default=1000)
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--interactions", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=45)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--seed", type=int, default=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_synthetic_arguments(parser, repeats=50)
    parser.add_argument("--json", action="store_true", help="print one JSON object (default)")
    args = parser.parse_args()

    features = default_features()
    request = request_for(args)
    baseline = FeatureVector(features, MemoryState(days=features.max_window_days))
    state, learn_rate = build_state(features, args)
    vector = FeatureVector(features, state)
    matrix = vector.matrix(request)
    memory = state.memory_report().as_dict()
    load_before = os.getloadavg()
    result = {
        "candidates": args.candidates,
        "columns": len(features.columns),
        "all_default": timed(lambda: baseline.matrix(request), args.repeats),
        "assembled": timed(lambda: vector.matrix(request), args.repeats),
        "by_kind": by_kind(state, request, args.repeats),
        "missing_share": round(float(np.isnan(matrix).mean()), 4),
        "events_learnt_per_s": round(learn_rate),
        "memory": {owner: memory[owner] for owner in ("item", "user") if owner in memory},
        "load_average": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "setup": {
            name: getattr(args, name)
            for name in ("items", "users", "queries", "interactions", "days", "dim", "repeats")
        },
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

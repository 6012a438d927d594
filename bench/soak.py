"""A soak: one worker under steady traffic with clicks; its memory and Redis's, over time.

A real worker (its own topics and key prefix on the shared services, see
:mod:`bench.memory`) gets ``--rate`` TREC DL 2019 requests per second for ``--minutes``; a
``--click-rate`` share of the rankings gets a click, which the learn path learns. Every
``--sample-s`` seconds the worker's resident set size (``/proc/<pid>/status``), Redis's
``used_memory`` (``INFO memory``, the whole server: other clients of a shared Redis move it
too) and the number of keys under the run's prefix are sampled.

Printed: each curve's start, end and maximum and its least-squares slope over the second half
of the run (per minute; a plateau is a slope near 0), and how many requests were ranked and
degraded. ``--png`` draws both curves. Keys under the prefix plateau once the run is longer
than the TTL of the per-request keys (``impression_ttl_s`` for impressions and sessions; the
7-day done- and seen-markers keep rising at a small, stated rate; see docs/operations.md).

Needs the services (``streamrank services up``), the models and ``../shared/data``; the
run's topics and keys are deleted at the end.

Example: python bench/soak.py --minutes 10 --rate 5 --json --png soak.png
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.memory import LiveWorker, degraded_reasons, requests_forever, run_settings  # noqa: E402
from streamrank.streams.config import Settings  # noqa: E402

MIB = 1024 * 1024


def slope_per_minute(times_s: list[float], values: list[float]) -> float:
    """Least-squares slope of ``values`` over time, per minute (0 for fewer than 2 points)."""
    n = len(times_s)
    if n < 2:
        return 0.0
    mean_t, mean_v = sum(times_s) / n, sum(values) / n
    spread = sum((t - mean_t) ** 2 for t in times_s)
    if spread == 0:
        return 0.0
    covariance = sum((t - mean_t) * (v - mean_v) for t, v in zip(times_s, values, strict=True))
    return 60 * covariance / spread


def summarize(times_s: list[float], values: list[float], scale: float = 1.0) -> dict[str, float]:
    """Start, end, max and the slope over the second half, in units of ``scale``."""
    half = [i for i, t in enumerate(times_s) if t >= times_s[-1] / 2]
    return {
        "start": round(values[0] / scale, 2),
        "end": round(values[-1] / scale, 2),
        "max": round(max(values) / scale, 2),
        "slope_per_min_last_half": round(
            slope_per_minute([times_s[i] for i in half], [values[i] for i in half]) / scale, 3
        ),
    }


def count_keys(client: redis.Redis, prefix: str) -> int:
    return sum(1 for _ in client.scan_iter(match=f"{prefix}*", count=5000))


def plot(samples: dict[str, list[float]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [t / 60 for t in samples["t_s"]]
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    top.plot(minutes, [v / MIB for v in samples["worker_rss"]], color="tab:blue")
    top.set_ylabel("worker RSS (MiB)")
    top.set_title(title)
    bottom.plot(minutes, [v / MIB for v in samples["redis_used"]], color="tab:red")
    bottom.set_ylabel("Redis used_memory (MiB)", color="tab:red")
    keys_axis = bottom.twinx()
    keys_axis.plot(minutes, samples["prefix_keys"], color="tab:gray", linestyle="--")
    keys_axis.set_ylabel("keys under the run's prefix", color="tab:gray")
    bottom.set_xlabel("minutes")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def ttl_env(marker_ttl_s: int | None) -> dict[str, str]:
    """The worker's TTL settings for ``--marker-ttl-s``: every key family that outlives a
    session (done- and seen-markers, the learner's applied markers and statistics) expires
    after that many seconds, so that a run of minutes reaches the plateau a deployment
    reaches after its own TTLs (rate x TTL x bytes per key)."""
    if marker_ttl_s is None:
        return {}
    return {
        "STREAMRANK_DEDUPE_TTL_S": str(marker_ttl_s),
        "STREAMRANK_LEARNER_TTL_S": str(marker_ttl_s),
    }


def soak(args: argparse.Namespace) -> dict[str, Any]:
    env = Settings()
    settings = run_settings(env.redis_url, env.kafka_bootstrap, session_close_s=5.0)
    client = redis.Redis.from_url(settings.redis_url)
    worker = LiveWorker(settings, args.log, ttl_env(args.marker_ttl_s))
    samples: dict[str, list[float]] = {
        "t_s": [],
        "worker_rss": [],
        "redis_used": [],
        "prefix_keys": [],
    }
    sent = 0
    try:
        worker.wait_ready()
        worker.start_clicking(args.click_rate)
        stream = requests_forever(args.candidates)
        started = time.monotonic()
        next_sample = started
        while (now := time.monotonic()) - started < args.minutes * 60:
            if now >= next_sample:
                samples["t_s"].append(now - started)
                samples["worker_rss"].append(worker.rss_bytes())
                samples["redis_used"].append(client.info("memory")["used_memory"])
                samples["prefix_keys"].append(count_keys(client, settings.topic_prefix))
                next_sample += args.sample_s
            # paced by the clock, so slow sampling does not lower the rate
            while sent < (time.monotonic() - started) * args.rate:
                worker.send(next(stream))
                sent += 1
            time.sleep(min(0.05, 1 / args.rate))
        worker.wait_ranked(sent, timeout_s=60)
    finally:
        worker.close(client)
    if args.png:
        plot(samples, args.png, f"soak: {args.rate:g} requests/s, {args.minutes:g} min")
    times = samples["t_s"]
    return {
        "minutes": args.minutes,
        "marker_ttl_s": args.marker_ttl_s,
        "rate": args.rate,
        "sent": sent,
        "ranked": len(worker.ranked),
        "degraded": sum(r.degraded for r in worker.ranked.values()),
        "degraded_reasons": degraded_reasons(worker.ranked.values()),
        "clicked": len(worker.clicked),
        "samples": len(times),
        "worker_rss_mib": summarize(times, samples["worker_rss"], MIB),
        "redis_used_memory_mib": summarize(times, samples["redis_used"], MIB),
        "prefix_keys": summarize(times, samples["prefix_keys"]),
        "png": str(args.png) if args.png else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=5.0, help="requests per second")
    parser.add_argument("--candidates", type=int, default=20)
    parser.add_argument("--click-rate", type=float, default=0.5)
    parser.add_argument("--sample-s", type=float, default=5.0)
    parser.add_argument("--png", type=Path, default=None, help="draw both curves here")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--log", type=Path, default=Path("/tmp/streamrank-bench-soak.log"))
    parser.add_argument(
        "--marker-ttl-s",
        type=int,
        default=None,
        help="expire the long-lived markers and statistics after this many seconds (default: "
        "the deployment's 7 and 30 days), to see their plateau within the run",
    )
    args = parser.parse_args()
    if args.minutes <= 0 or args.rate <= 0 or args.sample_s <= 0:
        parser.error("--minutes, --rate and --sample-s must be positive")
    result = soak(args)
    print(json.dumps(result, indent=None if args.json else 2))


if __name__ == "__main__":
    main()

"""What a hanging Redis costs the request path, with and without the circuit breaker.

A local socket accepts connections and never answers (a stalled Redis, an unreachable host:
the case a timeout exists for; a stopped Redis on localhost refuses at once and costs little
either way). ``--requests`` requests, ``--interval-s`` apart, each make the request path's
``--calls`` Redis calls (done-marker, stored texts, score and vector caches, online
statistics, user features, impression, metrics) through
:func:`streamrank.streams.state.breaker.request_clients`, failing soft as the request path
does. Printed: the median and slowest Redis time per request with the configured breaker,
and with one that never opens. No service is needed.

Example: python bench/redis_breaker.py --json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import sys
import threading
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streamrank.streams.config import Settings  # noqa: E402
from streamrank.streams.state.breaker import Breaker, request_clients  # noqa: E402


def silent_server() -> int:
    """A port whose server accepts every connection and never answers; returns the port."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(100)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            held.append(server.accept()[0])

    threading.Thread(target=accept, daemon=True).start()
    return server.getsockname()[1]


def per_request_ms(settings: Settings, breaker: Breaker, args: argparse.Namespace) -> dict:
    client, _, _ = request_clients(settings, breaker)
    times = []
    for _ in range(args.requests):
        started = time.perf_counter()
        for _ in range(args.calls):
            with contextlib.suppress(redis.RedisError):
                client.get("k")
        times.append(1000 * (time.perf_counter() - started))
        time.sleep(args.interval_s)
    times.sort()
    return {"median_ms": round(times[len(times) // 2], 1), "max_ms": round(times[-1], 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--calls", type=int, default=8, help="Redis calls per request")
    parser.add_argument("--interval-s", type=float, default=0.05)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    settings = Settings(redis_url=f"redis://127.0.0.1:{silent_server()}/0")
    configured = Breaker(settings.redis_breaker_failures, settings.redis_breaker_open_s)
    never_opens = Breaker(10**9, settings.redis_breaker_open_s)
    result = {
        "redis_timeout_s": settings.redis_timeout_s,
        "breaker": [settings.redis_breaker_failures, settings.redis_breaker_open_s],
        "requests": args.requests,
        "calls_per_request": args.calls,
        "with_breaker": per_request_ms(settings, configured, args),
        "without_breaker": per_request_ms(settings, never_opens, args),
    }
    print(json.dumps(result, indent=None if args.json else 2))


if __name__ == "__main__":
    main()

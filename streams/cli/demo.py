"""``streamrank demo``: the whole system on the Wikipedia demo corpus (see streams/demo.py)."""

from __future__ import annotations

import sys

import click

from streamrank.streams.cli.helpers import console, no_broker
from streamrank.streams.config import get_settings


@click.command()
@click.option("--queries", default=200, show_default=True, help="how many queries to stream")
@click.option("--timeout", default=600.0, show_default=True, help="seconds to wait for rankings")
@click.option("--learn-queries", default=30, show_default=True, help="queries users click on")
@click.option("--learn-sessions", default=30, show_default=True, help="sessions per query")
def demo(queries: int, timeout: float, learn_queries: int, learn_sessions: int) -> None:
    """Run the demo: Wikipedia queries through a worker (retrieve, re-rank), shown live,
    then simulated users whose clicks the online ranker learns from (the learning curve).

    Fetches the models and the demo corpus and builds its index the first time. Needs the
    services (`streamrank services up`). Example: streamrank demo --queries 300
    """
    from streamrank.streams.demo import run_demo
    from streamrank.streams.kafka.topics import UNREACHABLE

    settings = get_settings()
    try:
        received = run_demo(
            settings,
            console,
            queries=queries,
            timeout_s=timeout,
            learn_queries=learn_queries,
            learn_sessions=learn_sessions,
        )
    except UNREACHABLE:
        no_broker(settings)
    console.print(f"{received} ranking(s) received")
    if received == 0:
        sys.exit(1)

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
@click.option("--wiki/--no-wiki", default=True, show_default=True, help="the Wikipedia phase")
@click.option("--shop/--no-shop", default=True, show_default=True, help="the shop phase")
def demo(
    queries: int, timeout: float, learn_queries: int, learn_sessions: int, wiki: bool, shop: bool
) -> None:
    """Run the demo: Wikipedia queries through a worker (retrieve, re-rank), shown live,
    then simulated users whose clicks the online ranker learns from (the learning curve);
    then the shop: MovieLens users' histories replayed through a worker that serves a
    personalised LambdaMART ranker, one user's search, another user's, and a business rule.

    Fetches the models, the demo corpus and MovieLens the first time. Needs the services
    (`streamrank services up`). Example: streamrank demo --queries 300 --no-shop
    """
    from streamrank.streams.demo import run_demo
    from streamrank.streams.kafka.topics import UNREACHABLE
    from streamrank.streams.shop_demo import run_shop_phase

    settings = get_settings()
    try:
        if wiki:
            received = run_demo(
                settings,
                console,
                queries=queries,
                timeout_s=timeout,
                learn_queries=learn_queries,
                learn_sessions=learn_sessions,
            )
            console.print(f"{received} ranking(s) received")
            if received == 0:
                sys.exit(1)
        if shop:
            run_shop_phase(settings, console)
    except UNREACHABLE:
        no_broker(settings)

"""``streamrank topics``: streamrank's Kafka topics."""

from __future__ import annotations

import click
from rich.table import Table

from streamrank.streams.cli.helpers import console, no_broker
from streamrank.streams.config import get_settings


@click.group()
def topics() -> None:
    """Manage streamrank's Kafka topics."""


@topics.command("create")
@click.option(
    "--partitions", type=int, help="partitions per topic (default: STREAMRANK_PARTITIONS)"
)
def topics_create(partitions: int | None) -> None:
    """Create every streamrank topic that is missing (existing ones are left alone).

    Example: streamrank topics create --partitions 8
    """
    from streamrank.streams.kafka.topics import UNREACHABLE, create_topics

    settings = get_settings()
    if partitions is not None:
        settings = settings.model_copy(update={"partitions": partitions})
    try:
        results = create_topics(settings)
    except UNREACHABLE:
        no_broker(settings)
    table = Table("topic", "partitions", "status")
    for result in results:
        table.add_row(
            result.name, str(result.partitions), "created" if result.created else "exists"
        )
    console.print(table)

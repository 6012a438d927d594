"""``streamrank topics``: streamrank's Kafka topics."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click
from rich.table import Table

from streamrank.streams.cli.helpers import console, fail, no_broker
from streamrank.streams.config import get_settings

if TYPE_CHECKING:
    from streamrank.streams.kafka.topics import TopicResult


@click.group()
def topics() -> None:
    """Manage streamrank's Kafka topics."""


@topics.command("create")
@click.option(
    "--partitions", type=int, help="partitions per topic (default: STREAMRANK_PARTITIONS)"
)
@click.option(
    "--fix",
    is_flag=True,
    help="alter existing topics whose settings (message size, compaction) differ",
)
def topics_create(partitions: int | None, fix: bool) -> None:
    """Create every streamrank topic that is missing, with its settings; check existing ones.

    An existing topic whose settings differ is listed; --fix alters them. Partitions of an
    existing topic are never changed.

    Example: streamrank topics create --partitions 8
    """
    from streamrank.streams.kafka.replication import ReplicationError
    from streamrank.streams.kafka.topics import UNREACHABLE, create_topics

    settings = get_settings()
    if partitions is not None:
        settings = settings.model_copy(update={"partitions": partitions})
    try:
        results = create_topics(settings, fix=fix)
    except UNREACHABLE:
        no_broker(settings)
    except ReplicationError as error:
        fail(str(error), "unset STREAMRANK_REPLICATION_FACTOR (auto) or lower it")
    table = Table("topic", "partitions", "status")
    for result in results:
        table.add_row(result.name, str(result.partitions), topic_status(result))
    console.print(table)
    if any(result.mismatches and not result.fixed for result in results):
        console.print("some topics' settings differ: `streamrank topics create --fix` sets them")


def topic_status(result: TopicResult) -> str:
    """One cell: created, exists, or exists with the settings that differ (and whether fixed)."""
    if result.created:
        return "created"
    if not result.mismatches:
        return "exists"
    differences = "; ".join(str(mismatch) for mismatch in result.mismatches)
    return f"exists, {'fixed' if result.fixed else 'differs'}: {differences}"

"""``streamrank state``: the durable copy of Redis's registry and checkpoints, in Kafka.

``restore`` writes back what Redis lacks from the compacted ``state`` topic
(:mod:`streamrank.streams.state.restore`); ``status`` compares the two; ``backfill`` copies
to the journal what Redis alone holds (records written while the journal was off). Workers and the
registry commands restore on their own when they find the registry empty, so these are for
an operator who wants to see, or to mend a Redis that lost only part of its data.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click
from rich.table import Table

from streamrank.streams.cli.helpers import console, errors, fail

if TYPE_CHECKING:
    from streamrank.streams.state.restore import RestoreSummary


@click.group("state")
def state_group() -> None:
    """The registry's and checkpoints' journal on Kafka, and restoring Redis from it."""


@state_group.command("restore")
@click.option("--dry-run", is_flag=True, help="only count what would be restored")
@click.option(
    "--token",
    envvar="STREAMRANK_TOKEN",
    help="operator token that signed the pointer record and the audit log "
    "[default: STREAMRANK_TOKEN, else the deployment's key]",
)
def restore(dry_run: bool, token: str | None) -> None:
    """Write back every journaled record Redis lacks; records Redis has are left alone.

    Each record is verified (signature, hash) before it is written; one that does not
    verify is left out and listed, and the exit status is 1.

    Example: streamrank state restore --dry-run
    """
    from streamrank.streams.state.journal import JournalError
    from streamrank.streams.state.restore import restore_state

    settings, client = connect()
    if not dry_run:
        upgrade_layout(settings, client)
    operator_key = token.encode() if token else None
    try:
        summary = restore_state(settings, client, dry_run=dry_run, operator_key=operator_key)
    except JournalError as error:
        fail(str(error).split("; ")[0], "; ".join(str(error).split("; ")[1:]))
    console.print(summary_table(summary))
    for problem in summary.problems:
        errors.print(f"[yellow]failed:[/] {problem}")
    verb = "would restore" if dry_run else "restored"
    console.print(f"{verb} {summary.restored} record(s); {summary.failed} failed to verify")
    if summary.failed:
        raise SystemExit(1)


@state_group.command("status")
def status() -> None:
    """Records per kind in the journal and in Redis; says when Redis lacks some."""
    from streamrank.streams.state.journal import JournalError
    from streamrank.streams.state.restore import journal_and_redis_counts

    settings, client = connect()
    try:
        counts = journal_and_redis_counts(settings, client)
    except JournalError as error:
        fail(str(error).split("; ")[0], "; ".join(str(error).split("; ")[1:]))
    table = Table("kind", "journal", "Redis", title=f"state of {settings.topic('state')}")
    for kind, (in_journal, in_redis) in counts.items():
        style = "red" if in_redis < in_journal else None
        table.add_row(kind, str(in_journal), str(in_redis), style=style)
    console.print(table)
    if any(in_redis < in_journal for in_journal, in_redis in counts.values()):
        console.print("Redis lacks records the journal holds: run `streamrank state restore`")
    else:
        console.print("Redis holds every journaled record")


@state_group.command("backfill")
def backfill() -> None:
    """Copy to the journal every record Redis holds and the journal lacks.

    Once after upgrading to a release with the journal, or after running with
    STREAMRANK_JOURNAL_ENABLED=false: records written then are in Redis alone.

    Example: streamrank state backfill
    """
    from streamrank.streams.state.journal import JournalError
    from streamrank.streams.state.restore import backfill_journal

    settings, client = connect()
    upgrade_layout(settings, client)
    try:
        written = backfill_journal(settings, client)
    except JournalError as error:
        fail(str(error).split("; ")[0], "; ".join(str(error).split("; ")[1:]))
    table = Table("kind", "written to the journal", title=f"backfill of {settings.topic('state')}")
    for kind, count in sorted(written.items()):
        table.add_row(kind, str(count))
    console.print(table)
    console.print(f"wrote {sum(written.values())} record(s) to the journal")


def connect() -> tuple[Any, Any]:
    """(settings, Redis client), or a clear error when Redis or the registry key is missing."""
    from redis.exceptions import ConnectionError as RedisDown

    from streamrank.streams.config import get_settings
    from streamrank.streams.state.connections import redis_client

    settings = get_settings()
    if not settings.registry_key:
        fail(
            "no registry key: nothing is journaled without one",
            "set STREAMRANK_REGISTRY_KEY to the deployment's key",
        )
    client = redis_client(settings)
    try:
        client.ping()
    except RedisDown:
        fail(f"cannot reach Redis at {settings.redis_url}", "start it: `streamrank services up`")
    return settings, client


def upgrade_layout(settings: Any, client: Any) -> None:
    """Move a single Redis still in the key layout without hash tags to the current one, as
    a starting worker does, so that what is restored or journaled is what workers read (not
    for a dry run or ``status``, which write nothing)."""
    from streamrank.streams.state.layout import upgrade_key_layout

    upgrade_key_layout(settings, client)


def summary_table(summary: RestoreSummary) -> Table:
    """One row per kind of record: in the journal, already in Redis, restored, failed."""
    restored = "would restore" if summary.dry_run else "restored"
    table = Table("kind", "in journal", "already in Redis", restored, "failed to verify")
    for kind, counts in sorted(summary.kinds.items()):
        table.add_row(
            kind,
            str(counts.journal),
            str(counts.present),
            str(counts.restored),
            str(counts.failed),
            style="red" if counts.failed else None,
        )
    return table

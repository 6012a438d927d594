"""The ``streamrank`` command line."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from streamrank.streams.cli.models import fail
from streamrank.streams.config import Settings, get_settings
from streamrank.streams.events import EVENT_TYPES, ContractError, decode

console = Console()
errors = Console(stderr=True)
DEPLOY_DIR = Path(__file__).resolve().parents[2] / "deploy"
SERVICES = ("kafka", "redis")
# The field whose value becomes the Kafka message key: it decides the partition, so all
# messages about one request (or document, or user) stay in order on one partition.
KEY_FIELDS = {
    "queries": "request_id",
    "candidates": "request_id",
    "rankings": "request_id",
    "interactions": "request_id",
    "items": "doc_id",
    "users": "user_id",
    "control": "command_id",
    "comparisons": "request_id",
    "deadletter": "topic",
}
PROGRESS_MIN_BYTES = 1_000_000

topic_kind = click.Choice(list(EVENT_TYPES))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """streamrank: streaming re-ranking over Kafka, with Redis for shared state.

    Settings come from STREAMRANK_* environment variables (see docs/configuration.md).
    """


# -- services ---------------------------------------------------------------------------


@cli.command()
@click.argument("action", type=click.Choice(["up", "down", "status"]))
def services(action: str) -> None:
    """Start, stop or show the local Kafka broker and Redis (deploy/kafka.sh, deploy/redis.sh).

    Example: streamrank services up
    """
    script_action = {"up": "start", "down": "stop", "status": "status"}[action]
    order = SERVICES if action != "down" else tuple(reversed(SERVICES))
    failed = False
    for service in order:
        script = DEPLOY_DIR / f"{service}.sh"
        if not script.exists():
            fail(f"{script} not found", "run streamrank from a checkout of the repository")
        result = subprocess.run(["bash", str(script), script_action], check=False)
        failed |= result.returncode not in (0, 3) or (action == "up" and result.returncode != 0)
    if failed:
        sys.exit(1)


# -- topics ------------------------------------------------------------------------------


@cli.group()
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


def no_broker(settings: Settings) -> None:
    fail(
        f"no Kafka broker answers at {settings.kafka_bootstrap}",
        "start one with `streamrank services up`, or point STREAMRANK_KAFKA_BOOTSTRAP at yours",
    )


# -- publish -----------------------------------------------------------------------------


def numbered_lines(path: Path, progress: Progress | None) -> Iterator[tuple[int, bytes]]:
    task = progress.add_task("publishing", total=path.stat().st_size) if progress else None
    with path.open("rb") as file:
        for number, line in enumerate(file, start=1):
            if progress is not None and task is not None:
                progress.advance(task, len(line))
            if line.strip():
                yield number, line.rstrip(b"\r\n")


@cli.command()
@click.argument("kind", metavar="TOPIC", type=topic_kind)
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def publish(kind: str, file: Path) -> None:
    """Validate every line of FILE.jsonl against TOPIC's contract and publish the good ones.

    Each rejected line is reported with its number and reason, and the command then exits
    with status 1, so a script notices. TOPIC is a kind (candidates, interactions, ...); the
    configured prefix is added.

    Example: streamrank publish candidates deploy/sample/candidates.jsonl
    """
    from kafka import KafkaProducer
    from streamrank.streams.kafka.topics import UNREACHABLE, existing_topics

    settings = get_settings()
    limits = settings.limits()
    try:
        producer = KafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap,
            acks="all",
            linger_ms=5,
            max_request_size=settings.max_message_bytes,
            **settings.kafka_client_options(),
        )
    except UNREACHABLE:
        no_broker(settings)
    topic = settings.topic(kind)
    if topic not in existing_topics(settings):
        fail(f"topic {topic} does not exist", "create the topics with `streamrank topics create`")
    rejected: list[tuple[int, str]] = []
    published = 0
    show_progress = file.stat().st_size >= PROGRESS_MIN_BYTES
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), TimeRemainingColumn(), console=errors
    )
    with progress if show_progress else _nothing():
        for number, line in numbered_lines(file, progress if show_progress else None):
            try:
                event = decode(kind, line, limits)
            except ContractError as error:
                rejected.append((number, f"{error.reason}: {error}"))
                continue
            key = getattr(event, KEY_FIELDS[kind], None)
            producer.send(topic, key=str(key).encode() if key else None, value=event.to_bytes())
            published += 1
    producer.flush()
    producer.close()
    for number, reason in rejected:
        errors.print(f"{file}:{number}: rejected: {reason}", markup=False, highlight=False)
    console.print(f"published {published} message(s) to {topic}; rejected {len(rejected)}")
    if rejected:
        sys.exit(1)


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


# -- tail --------------------------------------------------------------------------------


@cli.command()
@click.argument("kind", metavar="TOPIC", type=topic_kind)
@click.option("--from-beginning", is_flag=True, help="start at the oldest message kept")
@click.option("--max-messages", "-n", type=int, help="stop after this many messages")
@click.option("--idle-timeout", type=float, help="stop after this many seconds with no message")
def tail(
    kind: str, from_beginning: bool, max_messages: int | None, idle_timeout: float | None
) -> None:
    """Pretty-print TOPIC's messages as they arrive (Ctrl-C stops).

    Example: streamrank tail rankings --from-beginning -n 10
    """
    from kafka import KafkaConsumer, TopicPartition
    from streamrank.streams.kafka.topics import UNREACHABLE

    settings = get_settings()
    topic = settings.topic(kind)
    try:
        consumer = KafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap, **settings.kafka_client_options()
        )
    except UNREACHABLE:
        no_broker(settings)
    partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        fail(f"topic {topic} does not exist", "create the topics with `streamrank topics create`")
    assigned = [TopicPartition(topic, partition) for partition in sorted(partitions)]
    consumer.assign(assigned)
    if from_beginning:
        consumer.seek_to_beginning(*assigned)
    else:
        consumer.seek_to_end(*assigned)
    seen = 0
    last_message = time.monotonic()
    try:
        while max_messages is None or seen < max_messages:
            batches = consumer.poll(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    print_record(kind, record)
                    seen += 1
                    last_message = time.monotonic()
            if idle_timeout is not None and time.monotonic() - last_message > idle_timeout:
                break
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()


def print_record(kind: str, record: object) -> None:
    where = f"{record.topic}[{record.partition}]@{record.offset}"  # type: ignore[attr-defined]
    try:
        payload = json.loads(record.value)  # type: ignore[attr-defined]
        console.print(f"[dim]{where}[/]")
        console.print_json(data=payload)
    except (ValueError, TypeError):
        console.print(f"[dim]{where}[/] [red]not JSON:[/] {record.value!r}")  # type: ignore[attr-defined]


# -- worker ------------------------------------------------------------------------------


@cli.command()
@click.option("--loglevel", "-l", default="info", show_default=True)
def worker(loglevel: str) -> None:
    """Run a streamrank worker: the Faust app with all its agents.

    Start as many as there are partitions; they share the load through one consumer group.

    Example: STREAMRANK_KAFKA_BOOTSTRAP=127.0.0.1:9092 streamrank worker -l info
    """
    import faust
    from streamrank.models.assets.model_files import ModelFilesError

    try:
        import streamrank.streams.agents.learn
        import streamrank.streams.agents.rerank  # declares the agents; loads the models
        import streamrank.streams.agents.retrieve  # noqa: F401
    except ModelFilesError as error:
        fail(str(error).splitlines()[0], "run `streamrank models fetch` (STREAMRANK_MODEL_DIR)")
    from streamrank.streams.app import app

    faust.Worker(app, loglevel=loglevel).execute_from_commandline()


@cli.command()
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


def mount_model_commands() -> None:
    """Commands whose code lives with the models (their heavy imports happen when they run)."""
    from streamrank.models.evaluation.pipeline import pipeline_command
    from streamrank.streams.cli.data import analyze, data_group, index_group
    from streamrank.streams.cli.models import eval_group, models_group
    from streamrank.streams.cli.operator import (
        REGISTRY_COMMANDS,
        SHADOW_COMMANDS,
        TOP_LEVEL_COMMANDS,
    )
    from streamrank.streams.cli.shadow import shadow_group
    from streamrank.streams.cli.simulate import simulate_command

    eval_group.add_command(pipeline_command())
    for command in REGISTRY_COMMANDS:
        models_group.add_command(command)
    for command in SHADOW_COMMANDS:
        shadow_group.add_command(command)
    for command in TOP_LEVEL_COMMANDS:
        cli.add_command(command)

    for command in (models_group, eval_group, index_group, data_group, analyze, simulate_command):
        cli.add_command(command)
    cli.add_command(shadow_group)


mount_model_commands()


def main() -> None:
    cli()


if __name__ == "__main__":
    main()

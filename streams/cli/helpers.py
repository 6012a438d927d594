"""What every command module of the CLI shares: consoles, errors, progress bars and options.

Results go to :data:`console` (stdout) and everything else (progress, messages, errors) to
:data:`errors` (stderr), so ``--json`` output can be piped. A command that cannot go on calls
:func:`fail` with what was wrong and how to fix it. The progress bars are those of
:mod:`streamrank.streams.terminal` (the demo draws them too); the options here are the ones
several command groups take, defined once so their names, defaults and help agree.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
from rich.console import Console

from streamrank.models.assets.model_files import MODEL_DIR_VARIABLE, default_model_dir
from streamrank.models.learning.click_models import CLICK_MODELS
from streamrank.streams.terminal import RichProgress, progress_bar

__all__ = [
    "EXISTING_FILE",
    "RichProgress",
    "click_model_option",
    "console",
    "errors",
    "fail",
    "judged_candidates",
    "load_bi_encoder_or_fail",
    "model_dir_option",
    "no_broker",
    "open_registry",
    "progress_bar",
    "refused",
]

Command = TypeVar("Command", bound=Callable[..., Any])

console = Console()
errors = Console(stderr=True)


EXISTING_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
"""A click argument type: a file that must already exist."""


def fail(message: str, fix: str) -> NoReturn:
    """Stop with what went wrong and how to fix it, on stderr; exit status 2 (click's own for
    a usage error), so a script tells a refused command from a crash."""
    errors.print(f"[bold red]error:[/] {message}\n[bold]fix:[/] {fix}")
    sys.exit(2)


def no_broker(settings: Any) -> NoReturn:
    """:func:`fail` for a Kafka broker that does not answer at ``settings.kafka_bootstrap``."""
    fail(
        f"no Kafka broker answers at {settings.kafka_bootstrap}",
        "start one with `streamrank services up`, or point STREAMRANK_KAFKA_BOOTSTRAP at yours",
    )


def load_bi_encoder_or_fail(model_dir: Path, fix: str) -> Any:
    """The first stage's bi-encoder (:func:`streamrank.models.scoring.bi_encoder.load_bi_encoder`),
    or :func:`fail` with ``fix`` when its files are missing."""
    from streamrank.models.assets.model_files import ModelFilesError
    from streamrank.models.scoring.bi_encoder import load_bi_encoder

    try:
        return load_bi_encoder(model_dir)
    except ModelFilesError as error:
        fail(str(error).splitlines()[0], fix)


# -- the registry ---------------------------------------------------------------------------


def open_registry(operator_key: bytes | None = None) -> tuple[Any, Any, Any]:
    """(settings, Redis client, registry), or a clear error when the registry is not set up.

    Shared by the registry commands of ``models``, the ``shadow`` commands and ``promote`` /
    ``rollback``. Redis and the runtime are imported here, not at the top, so that mounting
    those commands costs the CLI nothing. ``operator_key`` is passed to
    :func:`~streamrank.streams.state.connections.registry_for` (None: its default).

    A registry that Redis lost while the state journal holds it is restored first
    (:func:`~streamrank.streams.state.restore.restore_if_lost`): otherwise the first command
    after Redis lost its data would act on nothing, and ``models register`` would issue
    ``v1`` again. A journal that cannot be read then is reported, and the command goes on.
    """
    from redis.exceptions import ConnectionError as RedisDown

    from streamrank.models.registry import RegistryError
    from streamrank.streams.config import get_settings
    from streamrank.streams.state.connections import redis_client, registry_for

    settings = get_settings()
    client = redis_client(settings)
    try:
        client.ping()
        registry = registry_for(settings, client, operator_key=operator_key)
    except RedisDown:
        fail(f"cannot reach Redis at {settings.redis_url}", "start it: `streamrank services up`")
    except RegistryError as error:
        fail(str(error).split(":")[0], "set STREAMRANK_REGISTRY_KEY to a long random secret")
    restore_if_lost_or_warn(settings, client, operator_key)
    return settings, client, registry


def restore_if_lost_or_warn(settings: Any, client: Any, operator_key: bytes | None) -> None:
    """Restore the registry from the state journal when Redis lost it; say what came back."""
    from streamrank.streams.state.journal import JournalError
    from streamrank.streams.state.restore import restore_if_lost

    try:
        summary = restore_if_lost(settings, client, operator_key)
    except JournalError as error:
        errors.print(f"[yellow]warning:[/] the registry looks lost in Redis; {error}")
        return
    if summary is None or not (summary.restored or summary.failed):
        return
    errors.print(f"the registry had lost records in Redis: {summary.describe()}")
    for problem in summary.problems:
        errors.print(f"[yellow]warning:[/] {problem}")
    if summary.failed:
        errors.print(
            "[bold]fix:[/] records signed with the operator token are restored by "
            "`streamrank state restore --token ...` or by the next worker that starts"
        )


def refused(error: Exception) -> NoReturn:
    """:func:`fail` for a refused promotion or rollback; its message carries the fix after
    the first ``": "`` when it offers a choice ("... or ...")."""
    message = str(error)
    fix = "see `streamrank shadow report`"
    if " or " in message and ": " in message:
        message, fix = message.split(": ", 1)
    fail(message, fix)


# -- shared options -------------------------------------------------------------------------

model_dir_option = click.option(
    "--model-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=default_model_dir,
    show_default=f"{MODEL_DIR_VARIABLE} or ~/.cache/streamrank/models",
    help="where `streamrank models fetch` puts the models",
)


def click_model_option(default: str) -> Callable[[Command], Command]:
    """``--click-model`` (the ``user`` parameter): one of the simulated users of
    :data:`streamrank.models.learning.click_models.CLICK_MODELS`."""
    return click.option(
        "--click-model",
        "user",
        type=click.Choice(sorted(CLICK_MODELS)),
        default=default,
        show_default=True,
        help="the simulated users' click model",
    )


def judged_candidates(function: Command) -> Command:
    """``--candidates FILE.json --qrels QRELS.txt``: what every evaluation and simulation reads."""
    function = click.option(
        "--qrels",
        type=EXISTING_FILE,
        required=True,
        help="TREC qrels (the true grades)",
    )(function)
    return click.option(
        "--candidates",
        type=EXISTING_FILE,
        required=True,
        help="rank_llm JSON candidate lists (e.g. ../shared/data/trec-dl-2019/bm25-top100.json)",
    )(function)


def send_control(settings: Any, control: Any) -> None:
    """Publish one ``control`` message (a :class:`~streamrank.streams.events.Control`) and wait
    for the broker to take it; a missing topic or broker fails within 10 s, not a minute."""
    from kafka import KafkaProducer

    from streamrank.streams.kafka.clients import producer_options

    producer = KafkaProducer(**producer_options(settings, max_block_ms=10_000))
    try:
        producer.send(
            settings.topic("control"), key=control.command_id.encode(), value=control.to_bytes()
        )
        producer.flush(timeout=10)
    finally:
        producer.close()

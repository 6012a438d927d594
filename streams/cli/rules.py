"""``streamrank rules``: the business rules every worker applies after the model.

``set FILE`` checks a rules file (JSON or TOML, see docs/rules.md) against the item fields
the items carry, stores it in Redis and sends a ``control`` message, on which every worker
re-reads it (each also re-reads every ``STREAMRANK_CONTROL_POLL_S``, so one that missed the
message follows all the same); ``show`` prints the stored rules; ``clear`` removes them.
A file that does not load is refused with the setting at fault, and nothing is written.
"""

from __future__ import annotations

import getpass
import uuid
from pathlib import Path
from typing import Any

import click

from streamrank.streams.cli.helpers import EXISTING_FILE, console, errors, fail, send_control


@click.group("rules")
def rules_group() -> None:
    """Business rules after the model: stock, promoted boost, pins, bury list, diversity."""


@rules_group.command("set")
@click.argument("file", type=EXISTING_FILE)
@click.option("--reason", default="", help="why, for the control message")
def set_rules(file: Path, reason: str) -> None:
    """Check FILE (JSON, or TOML by its .toml suffix), store it and make every worker apply it.

    Example: streamrank rules set deploy/rules.json --reason "sale week"
    """
    from streamrank.models.scoring.rules import RulesError, load_rules
    from streamrank.streams.state.feature_store import RULE_FIELDS

    try:
        config = load_rules(read_file(file), RULE_FIELDS)
    except RulesError as error:
        fail(
            f"{file}: {error}",
            f"fix the file and run `streamrank rules set {file}` again; nothing was changed",
        )
    settings, store = open_store()
    stored = store.save(config, by=getpass.getuser())
    announce(settings, stored.version, reason)
    console.print(f"rules version {stored.version} stored; workers reloading")


@rules_group.command("show")
@click.option("--json", "as_json", is_flag=True, help="only the config, as JSON")
def show_rules(as_json: bool) -> None:
    """Print the stored rules (the version every worker converges to)."""
    _, store = open_store()
    stored = store.read()
    if as_json:
        console.print_json(stored.config or "{}")
        return
    if stored.config is None:
        console.print(f"no rules (version {stored.version}): rankings are the model's order")
        return
    console.print(f"rules version {stored.version} (sha256 {stored.sha256}):")
    console.print_json(stored.config)


@rules_group.command("clear")
@click.option("--reason", default="", help="why, for the control message")
def clear_rules(reason: str) -> None:
    """Remove the rules: every worker serves the model's order again."""
    settings, store = open_store()
    stored = store.clear(by=getpass.getuser())
    announce(settings, stored.version, reason)
    console.print(f"rules cleared (version {stored.version}); workers reloading")


def read_file(file: Path) -> dict[str, Any] | str:
    """The file's settings: TOML parsed here, JSON text left to ``load_rules`` (its errors)."""
    if file.suffix.lower() != ".toml":
        return file.read_text()
    import tomllib

    try:
        return tomllib.loads(file.read_text())
    except tomllib.TOMLDecodeError as error:
        fail(f"{file}: not valid TOML ({error})", "fix the file; nothing was changed")


def open_store() -> tuple[Any, Any]:
    """(settings, :class:`~streamrank.streams.state.rules_store.RulesStore`), or a clear error
    when Redis does not answer."""
    from redis.exceptions import ConnectionError as RedisDown

    from streamrank.streams.config import get_settings
    from streamrank.streams.state.connections import redis_client
    from streamrank.streams.state.rules_store import RulesStore

    settings = get_settings()
    client = redis_client(settings)
    try:
        client.ping()
    except RedisDown:
        fail(f"cannot reach Redis at {settings.redis_url}", "start it: `streamrank services up`")
    return settings, RulesStore(client, settings)


def announce(settings: Any, version: int, reason: str) -> None:
    """Send the ``control`` message on which workers re-read the rules at once. A broker that
    does not answer only delays them: they re-read every ``control_poll_s`` anyway."""
    from kafka.errors import KafkaError

    from streamrank.streams.events import Control

    control = Control(
        command_id=uuid.uuid4().hex,
        action="rules",
        version=str(version),
        issued_by=getpass.getuser(),
        reason=reason or None,
    )
    try:
        send_control(settings, control)
    except KafkaError as error:
        errors.print(
            f"[yellow]warning:[/] the control message was not sent ({error}); workers pick "
            f"the rules up within {settings.control_poll_s:g} s all the same"
        )

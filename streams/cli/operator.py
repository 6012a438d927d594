"""Operator commands: registry versions, shadows, their report, promotion and rollback.

``streamrank models register|list|show``, ``streamrank shadow add|remove|worker|report``,
``streamrank promote`` and ``streamrank rollback``. Heavy imports happen inside the
commands, so mounting them costs the CLI nothing.
"""

from __future__ import annotations

import json
import os
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from streamrank.streams.cli.models import fail

console = Console()


def _registry() -> tuple[Any, Any, Any]:
    """(settings, Redis client, registry), or a clear error when the registry is not set up."""
    from redis.exceptions import ConnectionError as RedisDown
    from streamrank.models.registry import RegistryError
    from streamrank.streams.config import get_settings
    from streamrank.streams.state.connections import redis_client, registry_for

    settings = get_settings()
    client = redis_client(settings)
    try:
        client.ping()
        return settings, client, registry_for(settings, client)
    except RedisDown:
        fail(f"cannot reach Redis at {settings.redis_url}", "start it: `streamrank services up`")
    except RegistryError as error:
        fail(str(error).split(":")[0], "set STREAMRANK_REGISTRY_KEY to a long random secret")


def _refused(error: Exception) -> None:
    message = str(error)
    fix = "see `streamrank shadow report`"
    if " or " in message and ": " in message:
        message, fix = message.split(": ", 1)
    fail(message, fix)


# -- registry -------------------------------------------------------------------------------


@click.command("register")
@click.option("--pipeline", required=True, help="cascade spec, e.g. 'dense>ce:20'")
@click.option("--parent", default=None, help="the version this one derives from")
@click.option("--notes", default="", help="free text shown by `models show`")
def register(pipeline: str, parent: str | None, notes: str) -> None:
    """Register a ranker version (a pipeline over the fetched models); prints its name.

    Example: streamrank models register --pipeline 'dense>ce:20' --notes 'cheaper cascade'
    """
    from streamrank.models.assets.model_files import sha256_file
    from streamrank.models.scoring.cascade import PipelineError, parse_pipeline
    from streamrank.models.scoring.factory import FOLDERS, tiers_needed

    settings, _, registry = _registry()
    try:
        parse_pipeline(pipeline)
    except PipelineError as error:
        fail(str(error), "use a spec like 'ce' or 'dense>ce:30' (see `streamrank eval rerank`)")
    cross_encoder = {}
    if "ce" in tiers_needed(pipeline):
        model = settings.model_dir / FOLDERS["ce"] / "model.onnx"
        if not model.is_file():
            fail(f"missing model file {model}", "run `streamrank models fetch`")
        cross_encoder = {"name": FOLDERS["ce"], "sha256": sha256_file(model)}
    version = registry.register(
        pipeline=pipeline, cross_encoder=cross_encoder, parent=parent, notes=notes
    )
    if registry.active() is None:
        registry.activate(version.version)  # the first version serves until one is promoted
    console.print(version.version)


@click.command("list")
def list_versions() -> None:
    """Every registered version, with what serves now (active) and what shadows."""
    _, _, registry = _registry()
    active, shadows = registry.active(), set(registry.shadows())
    table = Table("version", "pipeline", "role", "created", "events", "parent", "notes")
    for version in registry.versions():
        role = (
            "active"
            if version.version == active
            else "shadow"
            if version.version in shadows
            else ""
        )
        created = _time(version.created_at)
        table.add_row(
            version.version,
            version.pipeline,
            role,
            created,
            str(version.training_events),
            version.parent or "",
            version.notes,
        )
    console.print(table)


@click.command("show")
@click.argument("version")
def show(version: str) -> None:
    """One version in full, as JSON (hashes, settings, metrics, parent)."""
    from dataclasses import asdict

    from streamrank.models.registry import RegistryError

    _, _, registry = _registry()
    try:
        record = asdict(registry.get(version))
    except RegistryError as error:
        fail(str(error), "see `streamrank models list` for the versions there are")
    record["active"] = registry.active() == version
    record["shadow"] = version in registry.shadows()
    click.echo(json.dumps(record, indent=2))


def _time(epoch: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")


# -- shadows --------------------------------------------------------------------------------


@click.command("add")
@click.argument("version")
def add(version: str) -> None:
    """Mirror live traffic to VERSION (start its worker with `streamrank shadow worker`)."""
    from streamrank.models.registry import RegistryError

    _, _, registry = _registry()
    try:
        registry.add_shadow(version)
    except RegistryError as error:
        fail(str(error), "register it first: `streamrank models register --pipeline ...`")
    console.print(f"{version} is a shadow; start `streamrank shadow worker {version}`")


@click.command("remove")
@click.argument("version")
def remove(version: str) -> None:
    """Stop treating VERSION as a shadow (its evidence is kept)."""
    _, _, registry = _registry()
    registry.remove_shadow(version)
    console.print(f"{version} is no longer a shadow")


@click.command("worker")
@click.argument("version")
@click.option("--loglevel", "-l", default="info", show_default=True)
def shadow_worker(version: str, loglevel: str) -> None:
    """Run a shadow worker for VERSION: it ranks every request in its own consumer group.

    Example: streamrank shadow worker v2
    """
    import faust
    from streamrank.models.assets.model_files import ModelFilesError
    from streamrank.models.registry import RegistryError

    settings, _, registry = _registry()
    try:
        registry.get(version)
    except RegistryError as error:
        fail(str(error), "see `streamrank models list`")
    if settings.shadow_nice:
        lowest_cpu_priority()
    os.environ["STREAMRANK_SHADOW_VERSION"] = version
    os.environ["STREAMRANK_APP_ID"] = f"{settings.app_id}-shadow-{version}"
    from streamrank.streams.config import get_settings

    get_settings.cache_clear()
    try:
        import streamrank.streams.agents.shadow  # noqa: F401  (declares the shadow's agents on the app)
    except ModelFilesError as error:
        fail(str(error).splitlines()[0], "run `streamrank models fetch` (STREAMRANK_MODEL_DIR)")
    from streamrank.streams.app import app

    faust.Worker(app, loglevel=loglevel).execute_from_commandline()


def lowest_cpu_priority() -> None:
    """Let this process (and every thread it starts later) run only on otherwise idle CPU.

    SCHED_IDLE on Linux; nice 19 (about 1.5 % of a contended CPU) where that is refused.
    Called before the models load, because Linux applies both per thread and new threads
    inherit them: the primary must not feel a shadow.
    """
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        os.nice(19)


@click.command("report")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def report(as_json: bool) -> None:
    """Every shadow's evidence and verdict: keep collecting, promote or reject."""
    from streamrank.shadow.evidence import ShadowStats
    from streamrank.shadow.report import summarize

    settings, client, registry = _registry()
    summaries = [
        summarize(
            ShadowStats(client, settings, version).snapshot(),
            min_sessions=settings.promotion_min_sessions,
            alpha=settings.promotion_alpha,
        )
        for version in registry.shadows()
    ]
    if as_json:
        click.echo(json.dumps({"active": registry.active(), "shadows": summaries}))
        return
    if not summaries:
        console.print("no shadows: add one with `streamrank shadow add VERSION`")
        return
    console.print(report_table(summaries, registry.active()))


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def report_table(summaries: list[dict[str, Any]], active: str | None) -> Table:
    table = Table(title=f"shadows of the active version {active}")
    for column in (
        "shadow",
        "sessions",
        "W / L / T",
        "Delta [95% CI]",
        "p (seq.)",
        "p (sign)",
        "clicked higher",
        "tau",
        "RBO",
        "p50 / p95 ms",
        "verdict",
    ):
        table.add_column(column)
    for s in summaries:
        low, high = s["delta_interval"]
        table.add_row(
            s["version"],
            str(s["sessions"]),
            f"{s['wins']} / {s['losses']} / {s['ties']}",
            f"{s['delta']:+.3f} [{low:+.3f}, {high:+.3f}]",
            _fmt(s["sequential_p"], ".3g"),
            _fmt(s["sign_test_p"], ".3g"),
            _fmt(s["clicked_higher_share"], ".0%"),
            _fmt(s["kendall_tau"]),
            _fmt(s["rbo"]),
            f"{_fmt(s['shadow_p50_ms'], '.0f')} / {_fmt(s['shadow_p95_ms'], '.0f')}",
            s["verdict"],
        )
    return table


# -- promotion ------------------------------------------------------------------------------

# The token an operator presents (--token or STREAMRANK_TOKEN) is checked against the
# deployment's configured one (STREAMRANK_OPERATOR_TOKEN, usually in STREAMRANK_CONFIG_FILE):
# two names, so that presenting a token can never also configure it.
token_option = click.option(
    "--token",
    envvar="STREAMRANK_TOKEN",
    help="your operator token [default: STREAMRANK_TOKEN]",
)


def publish_control(settings: Any, control: Any) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", **settings.kafka_client_options()
    )
    producer.send(
        settings.topic("control"), key=control.command_id.encode(), value=control.to_bytes()
    )
    producer.flush()
    producer.close()


@click.command("promote")
@click.argument("version")
@click.option("--reason", required=True, help="why, for the audit log")
@click.option("--force", is_flag=True, help="promote without a significant win (recorded)")
@token_option
def promote(version: str, reason: str, force: bool, token: str | None) -> None:
    """Make VERSION the active ranker on every worker (needs a significant shadow win).

    Example: streamrank promote v2 --reason "wins interleaving, p=0.003"
    """
    from streamrank.models.registry import RegistryError
    from streamrank.shadow.promotion import PromotionError
    from streamrank.shadow.promotion import promote as do_promote

    settings, client, registry = _registry()
    try:
        decision = do_promote(settings, registry, client, version, token, reason, force)
    except (PromotionError, RegistryError) as error:
        _refused(error)
    publish_control(settings, decision.control)
    console.print(f"promoted {version} (was {decision.audit['replaced']}); workers switching")


@click.command("rollback")
@click.option("--reason", required=True, help="why, for the audit log")
@token_option
def rollback(reason: str, token: str | None) -> None:
    """Return every worker to the version that was active before the current one."""
    from streamrank.shadow.promotion import PromotionError
    from streamrank.shadow.promotion import rollback as do_rollback

    settings, _, registry = _registry()
    try:
        decision = do_rollback(settings, registry, token, reason)
    except PromotionError as error:
        _refused(error)
    publish_control(settings, decision.control)
    console.print(f"rolled back to {decision.audit['version']} (from {decision.audit['replaced']})")


REGISTRY_COMMANDS = (register, list_versions, show)
SHADOW_COMMANDS = (add, remove, shadow_worker, report)
TOP_LEVEL_COMMANDS = (promote, rollback)

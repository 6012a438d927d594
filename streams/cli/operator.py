"""``streamrank promote`` and ``streamrank rollback``: the operator switches every worker's
active ranker version, through the registry and the ``control`` topic.

The registry's own commands are in :mod:`streamrank.streams.cli.models`, the shadows' in
:mod:`streamrank.streams.cli.shadow`. Heavy imports happen inside the commands, so mounting
them costs the CLI nothing.
"""

from __future__ import annotations

from typing import Any

import click

from streamrank.streams.cli.helpers import console, open_registry, refused

# The token an operator presents (--token or STREAMRANK_TOKEN) is checked against the
# deployment's configured one (STREAMRANK_OPERATOR_TOKEN, usually in STREAMRANK_CONFIG_FILE):
# two names, so that presenting a token can never also configure it.
token_option = click.option(
    "--token",
    envvar="STREAMRANK_TOKEN",
    help="your operator token [default: STREAMRANK_TOKEN]",
)


def publish_control(settings: Any, command: Any) -> None:
    """Send a decision's command to every worker, as the ``control`` topic's message."""
    from dataclasses import asdict

    from kafka import KafkaProducer

    from streamrank.streams.events import Control

    control = Control(**asdict(command))
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
    from streamrank.shadow.promotion import PromotionError, PromotionPolicy
    from streamrank.shadow.promotion import promote as do_promote
    from streamrank.streams.state.connections import shadow_stats_for

    settings, client, registry = open_registry()
    policy = PromotionPolicy(
        settings.operator_token, settings.promotion_min_sessions, settings.promotion_alpha
    )
    evidence = shadow_stats_for(settings, client, version)
    try:
        decision = do_promote(policy, registry, evidence, token, reason, force)
    except (PromotionError, RegistryError) as error:
        refused(error)
    publish_control(settings, decision.control)
    console.print(f"promoted {version} (was {decision.audit['replaced']}); workers switching")


@click.command("rollback")
@click.option("--reason", required=True, help="why, for the audit log")
@token_option
def rollback(reason: str, token: str | None) -> None:
    """Return every worker to the version that was active before the current one."""
    from streamrank.shadow.promotion import PromotionError
    from streamrank.shadow.promotion import rollback as do_rollback

    settings, _, registry = open_registry()
    try:
        decision = do_rollback(settings.operator_token, registry, token, reason)
    except PromotionError as error:
        refused(error)
    publish_control(settings, decision.control)
    console.print(f"rolled back to {decision.audit['version']} (from {decision.audit['replaced']})")

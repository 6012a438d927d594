"""``streamrank promote`` and ``streamrank rollback``: the operator switches every worker's
active ranker version, through the registry and the ``control`` topic.

The registry's own commands are in :mod:`streamrank.streams.cli.models`, the shadows' in
:mod:`streamrank.streams.cli.shadow`. Heavy imports happen inside the commands, so mounting
them costs the CLI nothing.
"""

from __future__ import annotations

import uuid
from typing import Any

import click

from streamrank.streams.cli.helpers import (
    console,
    errors,
    fail,
    open_registry,
    refused,
    send_control,
)

# The token an operator presents (--token or STREAMRANK_TOKEN) is the key the pointer record
# is signed with. It is never compared with STREAMRANK_OPERATOR_TOKEN in this process (a
# caller's own environment proves nothing): the workers verify the record under the token
# they hold, and obey nothing else.
token_option = click.option(
    "--token",
    envvar="STREAMRANK_TOKEN",
    help="your operator token: signs the change [default: STREAMRANK_TOKEN; none: the "
    "registry key, for deployments without an operator token]",
)

WRONG_TOKEN = "your token does not match the one this deployment's pointers are signed with"


def reading_registry(settings: Any, registry: Any) -> Any:
    """The registry verifying pointers as the workers do: under the deployment's operator
    token (STREAMRANK_OPERATOR_TOKEN), else the registry key. For commands that only read."""
    return registry.with_operator_key(settings.operator_token.encode())


def signing_registry(registry: Any, token: str | None, replace_unverified: bool = False) -> Any:
    """The registry signing pointer changes with the presented ``token``, after checking that
    the current pointer record verifies under it.

    The check spares an operator with the wrong token a change no worker would obey; it is a
    courtesy, not the boundary (workers verify every record). With no record yet, the first
    signer sets it. ``replace_unverified`` skips the check, for the one way back after the
    record was overwritten by someone without the token.
    """
    from redis.exceptions import ConnectionError as RedisDown

    from streamrank.models.registry import PointerError

    signer = registry.with_operator_key((token or "").encode())
    if replace_unverified:
        errors.print("[yellow]warning:[/] replacing a pointer record that may not verify")
        return signer
    try:
        signer.pointers()
    except PointerError:
        fail(
            WRONG_TOKEN,
            "present the deployment's operator token (--token or STREAMRANK_TOKEN); if the "
            "record was overwritten without it, `streamrank promote VERSION --force "
            "--replace-unverified` with the right token writes a fresh one",
        )
    except RedisDown as error:
        fail(f"cannot read the pointer record ({error})", "check that Redis is up")
    return signer


def publish_control(settings: Any, command: Any) -> None:
    """Send a decision's command to every worker, as the ``control`` topic's message."""
    from dataclasses import asdict

    from streamrank.streams.events import Control

    send_control(settings, Control(**asdict(command)))


@click.command("promote")
@click.argument("version")
@click.option("--reason", required=True, help="why, for the audit log")
@click.option("--force", is_flag=True, help="promote without a significant win (recorded)")
@click.option(
    "--replace-unverified",
    is_flag=True,
    help="write a fresh pointer record over one that does not verify under your token "
    "(recorded; needs --force)",
)
@token_option
def promote(
    version: str, reason: str, force: bool, replace_unverified: bool, token: str | None
) -> None:
    """Make VERSION the active ranker on every worker (needs a significant shadow win).

    Example: streamrank promote v2 --reason "wins interleaving, p=0.003"
    """
    from streamrank.models.registry import PointerError, RegistryError
    from streamrank.shadow.promotion import PromotionError, PromotionPolicy
    from streamrank.shadow.promotion import promote as do_promote
    from streamrank.streams.state.connections import shadow_stats_for

    if replace_unverified and not force:
        fail("--replace-unverified drops the history and the evidence check", "add --force")
    settings, client, registry = open_registry()
    signer = signing_registry(registry, token, replace_unverified)
    policy = PromotionPolicy(settings.promotion_min_sessions, settings.promotion_alpha)
    evidence = shadow_stats_for(settings, client, version)
    try:
        if replace_unverified:
            decision = _replace_unverified(signer, version, reason)
        else:
            decision = do_promote(policy, signer, evidence, reason, force)
    except PointerError:
        fail(WRONG_TOKEN, "present the deployment's operator token (--token or STREAMRANK_TOKEN)")
    except (PromotionError, RegistryError) as error:
        refused(error)
    publish_control(settings, decision.control)
    console.print(f"promoted {version} (was {decision.audit['replaced']}); workers switching")


@click.command("rollback")
@click.option("--reason", required=True, help="why, for the audit log")
@token_option
def rollback(reason: str, token: str | None) -> None:
    """Return every worker to the version that was active before the current one."""
    from streamrank.models.registry import PointerError
    from streamrank.shadow.promotion import PromotionError
    from streamrank.shadow.promotion import rollback as do_rollback

    settings, _, registry = open_registry()
    signer = signing_registry(registry, token)
    try:
        decision = do_rollback(signer, reason)
    except PointerError:
        fail(WRONG_TOKEN, "present the deployment's operator token (--token or STREAMRANK_TOKEN)")
    except PromotionError as error:
        refused(error)
    publish_control(settings, decision.control)
    console.print(f"rolled back to {decision.audit['version']} (from {decision.audit['replaced']})")


def _replace_unverified(signer: Any, version: str, reason: str) -> Any:
    """Activate ``version`` in a fresh pointer record, over one that does not verify."""
    import getpass

    from streamrank.shadow.promotion import ControlCommand, Decision

    who = getpass.getuser()
    previous = signer.activate(
        version,
        reason=reason,
        by=who,
        action="promote",
        details={"forced": True},
        replace_unverified=True,
    )
    entry = {"action": "promote", "version": version, "replaced": previous, "by": who}
    control = ControlCommand(uuid.uuid4().hex, "promote", version, who, reason)
    return Decision(control, entry | {"reason": reason, "forced": True})

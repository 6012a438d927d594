"""Promotion and rollback: move the registry's ``active`` pointer, say why, tell every worker.

``streamrank promote VERSION`` refuses unless the caller holds the operator token and the
shadow's evidence says ``promote`` (:func:`streamrank.shadow.report.summarize`: a significant
interleaving win under the sequential test, after enough sessions); ``--force`` overrides the
evidence, never the token, and is written down. Either way an audit entry records who, when,
why and the statistics at that moment, then the pointer moves and the decision carries the
command every worker must obey. The caller publishes it on the ``control`` topic; workers
follow ``control`` and switch within seconds, and a worker that missed the message finds the
pointer when it next polls it.

What a promotion must satisfy comes in as a :class:`PromotionPolicy` (the deployment's
settings fill it in), and the command goes out as a plain :class:`ControlCommand`: this
module decides, the streaming side owns the wire.

Examples
--------
>>> try:
...     check_token("", "anything")
... except PromotionError as error:
...     print(error)
no operator token is configured: set STREAMRANK_OPERATOR_TOKEN
"""

from __future__ import annotations

import getpass
import hmac
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from streamrank.models.registry import ModelRegistry
from streamrank.shadow.evidence import ShadowStats
from streamrank.shadow.report import PROMOTE, summarize

Action = Literal["promote", "rollback"]


class PromotionError(RuntimeError):
    """A promotion or rollback that was refused; the message says why and what would do."""


@dataclass(frozen=True)
class PromotionPolicy:
    """What a promotion must satisfy: the operator token, and the evidence the test needs.

    ``min_sessions`` interleaved sessions at least, and a sequential p-value below ``alpha``.
    """

    operator_token: str
    min_sessions: int
    alpha: float


@dataclass(frozen=True)
class ControlCommand:
    """The command every worker obeys after a promotion or rollback.

    Its fields are those of the ``control`` topic's message, so the publisher turns it into
    that message field for field; ``timestamp`` is when the decision was taken.
    """

    command_id: str
    action: Action
    version: str
    issued_by: str
    reason: str
    timestamp: float = field(default_factory=time.time)


@dataclass(frozen=True)
class Decision:
    """What a promotion or rollback did: the command to publish and the audit entry."""

    control: ControlCommand
    audit: dict[str, Any]


def check_token(configured: str, given: str | None) -> None:
    """Refuse unless ``given`` matches the configured operator token (constant-time)."""
    if not configured:
        raise PromotionError("no operator token is configured: set STREAMRANK_OPERATOR_TOKEN")
    if not given or not hmac.compare_digest(configured.encode(), given.encode()):
        raise PromotionError(
            "wrong or missing operator token: pass --token or set STREAMRANK_TOKEN"
        )


def promote(
    policy: PromotionPolicy,
    registry: ModelRegistry,
    evidence: ShadowStats,
    token: str | None,
    reason: str,
    force: bool = False,
) -> Decision:
    """Make the evidence's version active after checking the token and the evidence."""
    check_token(policy.operator_token, token)
    version = evidence.version
    registry.get(version)  # unknown or tampered versions stop here
    if registry.active() == version:
        raise PromotionError(f"{version} is already the active version")
    summary = summarize(evidence.snapshot(), min_sessions=policy.min_sessions, alpha=policy.alpha)
    if summary["verdict"] != PROMOTE and not force:
        raise PromotionError(
            f"{version}'s evidence says {summary['verdict']!r} ({summary['sessions']} "
            f"interleaved sessions, Delta {summary['delta']:+.3f}, sequential p "
            f"{summary['sequential_p']:.3g}; promotion needs p < {policy.alpha} "
            f"with >= {policy.min_sessions} sessions): keep collecting, "
            "or pass --force (recorded in the audit log)"
        )
    previous = registry.activate(version)
    return _record(registry, "promote", version, previous, reason, forced=force, stats=summary)


def rollback(
    operator_token: str, registry: ModelRegistry, token: str | None, reason: str
) -> Decision:
    """Return ``active`` to the version before it (``operator_token``: the configured one)."""
    check_token(operator_token, token)
    current = registry.active()
    try:
        previous = registry.rollback()
    except Exception as error:
        raise PromotionError(str(error)) from error
    return _record(registry, "rollback", previous, current, reason, forced=False, stats=None)


def _record(
    registry: ModelRegistry,
    action: Action,
    version: str,
    replaced: str | None,
    reason: str,
    forced: bool,
    stats: dict[str, Any] | None,
) -> Decision:
    who = getpass.getuser()
    entry = {
        "action": action,
        "version": version,
        "replaced": replaced,
        "by": who,
        "reason": reason,
        "forced": forced,
        "statistics": stats,
    }
    registry.audit(entry)
    control = ControlCommand(
        command_id=uuid.uuid4().hex,
        action=action,
        version=version,
        issued_by=who,
        reason=reason,
    )
    return Decision(control, entry)

"""Promotion and rollback: move the registry's ``active`` pointer, say why, tell every worker.

``streamrank promote VERSION`` refuses unless the caller holds the operator token and the
shadow's evidence says ``promote`` (:func:`streamrank.shadow.report.summarize`: a significant
interleaving win under the sequential test, after enough sessions); ``--force`` overrides the
evidence, never the token, and is written down. Either way an audit entry records who, when,
why and the statistics at that moment, then the pointer moves and a ``control`` message goes
out. Workers follow ``control`` (:mod:`streamrank.streams.agents.control`) and switch within seconds; a worker
that missed the message finds the pointer when it next polls it.

Examples
--------
>>> check_token("", "anything")
Traceback (most recent call last):
...
streamrank.shadow.promotion.PromotionError: no operator token is configured: set STREAMRANK_OPERATOR_TOKEN
"""

from __future__ import annotations

import getpass
import hmac
import uuid
from dataclasses import dataclass
from typing import Any

import redis
from streamrank.models.registry import ModelRegistry
from streamrank.shadow.evidence import ShadowStats
from streamrank.shadow.report import PROMOTE, summarize
from streamrank.streams.config import Settings
from streamrank.streams.events import Control


class PromotionError(RuntimeError):
    """A promotion or rollback that was refused; the message says why and what would do."""


@dataclass(frozen=True)
class Decision:
    """What a promotion or rollback did: the control message it published and the audit entry."""

    control: Control
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
    settings: Settings,
    registry: ModelRegistry,
    client: redis.Redis,
    version: str,
    token: str | None,
    reason: str,
    force: bool = False,
) -> Decision:
    """Make ``version`` active after checking the token and the evidence; returns the decision."""
    check_token(settings.operator_token, token)
    registry.get(version)  # unknown or tampered versions stop here
    if registry.active() == version:
        raise PromotionError(f"{version} is already the active version")
    summary = summarize(
        ShadowStats(client, settings, version).snapshot(),
        min_sessions=settings.promotion_min_sessions,
        alpha=settings.promotion_alpha,
    )
    if summary["verdict"] != PROMOTE and not force:
        raise PromotionError(
            f"{version}'s evidence says {summary['verdict']!r} ({summary['sessions']} "
            f"interleaved sessions, Delta {summary['delta']:+.3f}, sequential p "
            f"{summary['sequential_p']:.3g}; promotion needs p < {settings.promotion_alpha} "
            f"with >= {settings.promotion_min_sessions} sessions): keep collecting, "
            "or pass --force (recorded in the audit log)"
        )
    previous = registry.activate(version)
    return _record(registry, "promote", version, previous, reason, forced=force, stats=summary)


def rollback(
    settings: Settings, registry: ModelRegistry, token: str | None, reason: str
) -> Decision:
    """Return ``active`` to the version before it."""
    check_token(settings.operator_token, token)
    current = registry.active()
    try:
        previous = registry.rollback()
    except Exception as error:
        raise PromotionError(str(error)) from error
    return _record(registry, "rollback", previous, current, reason, forced=False, stats=None)


def _record(
    registry: ModelRegistry,
    action: str,
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
    control = Control(
        command_id=uuid.uuid4().hex,
        action=action,  # type: ignore[arg-type]
        version=version,
        issued_by=who,
        reason=reason,
    )
    return Decision(control, entry)

"""Promotion and rollback: move the registry's ``active`` pointer, say why, tell every worker.

``streamrank promote VERSION`` refuses unless the shadow's evidence says ``promote``
(:func:`streamrank.shadow.report.summarize`: a significant interleaving win under the
sequential test, after enough sessions); ``--force`` overrides the evidence and is written
down. The first activation (nothing serves yet) needs no evidence: there is nothing to compare
against. Either way the registry moves the signed pointer record and writes the audit entry
(who, when, why, the statistics at that moment) in one transaction, and the decision carries
the command every worker must obey. The caller publishes it on the ``control`` topic; workers
follow ``control`` and switch within seconds, and a worker that missed the message finds the
pointer when it next polls it.

Who may promote is not decided here. A check in the caller's process would compare the token
the caller presents with one the caller configured, which proves nothing; instead the registry
given here signs the pointer record with the key its caller holds (the presented token), and
every worker verifies the record under the operator key *it* holds before obeying it
(:mod:`streamrank.models.registry`). This module decides what the evidence allows.

What a promotion must satisfy comes in as a :class:`PromotionPolicy` (the deployment's
settings fill it in), and the command goes out as a plain :class:`ControlCommand`: this
module decides, the streaming side owns the wire.

Examples
--------
>>> PromotionPolicy(min_sessions=200, alpha=0.05).alpha
0.05
"""

from __future__ import annotations

import getpass
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from streamrank.models.registry import ModelRegistry, PointerError, RegistryError
from streamrank.shadow.evidence import ShadowStats
from streamrank.shadow.report import PROMOTE, summarize

Action = Literal["promote", "rollback"]


class PromotionError(RuntimeError):
    """A promotion or rollback that was refused; the message says why and what would do."""


@dataclass(frozen=True)
class PromotionPolicy:
    """The evidence a promotion needs: ``min_sessions`` interleaved sessions at least, and a
    sequential p-value below ``alpha``."""

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


def promote(
    policy: PromotionPolicy,
    registry: ModelRegistry,
    evidence: ShadowStats,
    reason: str,
    force: bool = False,
) -> Decision:
    """Make the evidence's version active once the evidence allows it (or ``force``).

    ``registry`` signs the new pointer record with the key it holds; workers obey it only
    when that is the deployment's operator key.
    """
    version = evidence.version
    try:
        registry.get(version)  # unknown or tampered versions stop here
        current = registry.active()
    except PointerError:
        raise  # the caller's key does not match the deployment's: not a policy refusal
    except RegistryError as error:
        raise PromotionError(str(error)) from None
    if current == version:
        raise PromotionError(f"{version} is already the active version")
    summary = summarize(evidence.snapshot(), min_sessions=policy.min_sessions, alpha=policy.alpha)
    if current is not None and summary["verdict"] != PROMOTE and not force:
        raise PromotionError(
            f"{version}'s evidence says {summary['verdict']!r} ({summary['sessions']} "
            f"interleaved sessions, Delta {summary['delta']:+.3f}, sequential p "
            f"{summary['sequential_p']:.3g}; promotion needs p < {policy.alpha} "
            f"with >= {policy.min_sessions} sessions): keep collecting, "
            "or pass --force (recorded in the audit log)"
        )
    who = getpass.getuser()
    details = {"forced": force, "statistics": summary}
    try:
        previous = registry.activate(
            version, reason=reason, by=who, action="promote", details=details
        )
    except PointerError:
        raise  # the caller's key does not match the deployment's: not a policy refusal
    except RegistryError as error:
        raise PromotionError(str(error)) from None
    return _decision("promote", version, previous, who, reason, details)


def rollback(registry: ModelRegistry, reason: str) -> Decision:
    """Return ``active`` to the version before it (refused: no history, or a version gone)."""
    who = getpass.getuser()
    try:
        current = registry.active()
        previous = registry.rollback(reason=reason, by=who)
    except PointerError:
        raise  # the caller's key does not match the deployment's: not a policy refusal
    except RegistryError as error:
        raise PromotionError(str(error)) from None
    return _decision("rollback", previous, current, who, reason, {"forced": False})


def _decision(
    action: Action,
    version: str,
    replaced: str | None,
    who: str,
    reason: str,
    details: dict[str, Any],
) -> Decision:
    """The command to publish, and the audit entry the registry wrote (as it reads)."""
    entry = {
        "action": action,
        "version": version,
        "replaced": replaced,
        "by": who,
        "reason": reason,
    } | details
    control = ControlCommand(
        command_id=uuid.uuid4().hex,
        action=action,
        version=version,
        issued_by=who,
        reason=reason,
    )
    return Decision(control, entry)

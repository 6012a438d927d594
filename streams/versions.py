"""What a primary worker serves: the registry's active version, and shadows for experiments.

Without a registry (no ``registry_key``), the worker serves ``settings.pipeline`` and this
module is a thin wrapper. With one, :class:`VersionedServing` holds the active version in a
:class:`~streamrank.streams.agents.control.RankerSlot` (switched by
:func:`streamrank.streams.agents.control.follow_control`) and, when interleaving or an A/B split is
configured, a ranker per shadow version, so that an experiment request can be ranked by both
(:mod:`streamrank.streams.experiments`).

The worker obeys only a pointer record that verifies under the operator key *it* holds
(``settings.operator_token``, else the registry key): whoever can write Redis, or runs the CLI
with another token, cannot choose what it serves. A record that does not verify, or one whose
serial is older than one already obeyed (a replayed genuine record), is refused: the worker
keeps serving what it serves, counts the refusal and logs it (once per distinct reason, again
every minute while it lasts, so a forged record cannot flood the log).

At start there is nothing served yet to keep. Refusing to start would turn one forged Redis
write into an outage, and serving ``settings.pipeline`` would serve something no operator
chose for this deployment's registry; so the worker serves the newest state it *can* verify:
the version the newest verifying audit entry made active (audit entries are signed under the
same key and written in the same transaction as the record), and only when there is none,
``settings.pipeline``. It logs that loudly, and switches as soon as a verifying record appears.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import redis

from streamrank.models.registry import (
    ModelRegistry,
    PointerError,
    Pointers,
    RegistryError,
    Version,
)
from streamrank.streams.agents.control import RankerSlot
from streamrank.streams.config import Settings
from streamrank.streams.events import Candidates, RankedItem, Ranking
from streamrank.streams.experiments import AB_SHADOW, INTERLEAVE, assign, interleave
from streamrank.streams.serving import FEATURE_LOG, Reranker

log = logging.getLogger(__name__)
UNVERSIONED = ""
REFUSAL_LOG_INTERVAL_S = 60.0


class Refused:
    """A pointer read that was refused (the reason is logged and counted)."""


REFUSED = Refused()


class VersionedServing:
    """Ranks a request with the active version, or as an experiment with a shadow."""

    def __init__(
        self,
        settings: Settings,
        build: Callable[[Version | None], Reranker],
        registry: ModelRegistry | None,
    ) -> None:
        self.settings = settings
        self.build = build
        # The workers' rule, whatever key the caller built the registry with.
        self.registry = (
            registry.with_operator_key(settings.operator_token.encode()) if registry else None
        )
        self.refused_pointers = 0  # pointer reads refused (forged, wrong key, replayed)
        self._serial = 0  # the highest serial obeyed or audited: older records are replays
        self._logged: tuple[str, float] | None = None
        self._failed_shadows: set[str] = set()
        self._audited_active: str | None = None  # the fallback when the record is refused
        self.shadows: dict[str, Reranker] = {}
        pointers = self._start_pointers()
        self.slot: RankerSlot[Reranker] = RankerSlot(self.load, self._start_version(pointers))
        self._refresh(pointers)  # before the first request, so experiments start with it

    def _start_pointers(self) -> Pointers | Refused | None:
        """The pointer record at start; Redis down is logged and waited out by the follower."""
        if self.registry is None:
            return None
        try:
            # One read of the audit log serves both the replay bound and the fallback.
            self._audited_active, self._serial = self.registry.audited_state()
            return self._read()
        except redis.RedisError as error:
            log.error(
                "cannot read the pointer record at start (%s); serving %s until Redis answers",
                error,
                self.settings.pipeline,
            )
            return None

    def _start_version(self, pointers: Pointers | Refused | None) -> str:
        """The active version when the record verifies, else the newest audited one."""
        if self.registry is None or pointers is None:
            return UNVERSIONED
        if isinstance(pointers, Pointers):
            return self._loadable(pointers.active) or UNVERSIONED
        try:
            audited = self._loadable(self._audited_active)
        except redis.RedisError:
            audited = None
        log.error(
            "REFUSING the registry's pointer record; serving %s, the newest version a "
            "verified audit entry made active, until a record that verifies appears",
            audited or f"the unversioned pipeline {self.settings.pipeline!r}",
        )
        return audited or UNVERSIONED

    def _loadable(self, version: str | None) -> str | None:
        """``version`` when the registry has it, verified; None otherwise (logged)."""
        if version is None or self.registry is None:
            return None
        try:
            self.registry.get(version)
        except RegistryError as error:
            log.error("cannot serve version %s at start: %s", version, error)
            return None
        return version

    def _read(self) -> Pointers | Refused | None:
        """The verified pointer record (None: none yet), or REFUSED; Redis errors propagate."""
        assert self.registry is not None
        try:
            pointers = self.registry.pointers()
        except PointerError as error:
            return self._refuse(str(error))
        if pointers is not None and pointers.serial < self._serial:
            return self._refuse(
                f"the pointer record's serial {pointers.serial} is older than {self._serial}, "
                "already seen (a replayed record); refusing it"
            )
        if pointers is not None:
            self._serial = pointers.serial
        return pointers

    def _refuse(self, reason: str) -> Refused:
        self.refused_pointers += 1
        now = time.monotonic()
        if (
            self._logged is None
            or self._logged[0] != reason
            or (now - self._logged[1] >= REFUSAL_LOG_INTERVAL_S)
        ):
            serving = self.slot.current.version if hasattr(self, "slot") else "nothing yet"
            log.error(
                "%s (refusals so far: %d; still serving %s)",
                reason,
                self.refused_pointers,
                serving or self.settings.pipeline,
            )
            self._logged = (reason, now)
        return REFUSED

    def active_version(self) -> str | None:
        """The version to serve now, and the shadows brought up to date (the control task
        calls it, in a thread). None: keep serving what serves (no record yet, or refused).
        Redis errors propagate: the control follower backs off and retries."""
        if self.registry is None:
            return None
        pointers = self._read()
        if not isinstance(pointers, Pointers):
            return None
        self._refresh(pointers)
        return pointers.active

    def load(self, version: str) -> Reranker:
        """A ranker for a registry version (its pipeline, its final ranker), fully loaded
        before it serves; ``build(None)`` is the unversioned ``settings.pipeline``."""
        if version == UNVERSIONED or self.registry is None:
            return self.build(None)
        return self.build(self.registry.get(version))

    @property
    def experiments_on(self) -> bool:
        return self.registry is not None and (
            self.settings.interleave_fraction > 0 or self.settings.ab_fraction > 0
        )

    def refresh_shadows(self) -> None:
        """Bring the shadows' rankers up to date with a fresh, verified pointer record."""
        if self.registry is not None:
            self._refresh(self._read())

    def _refresh(self, pointers: Pointers | Refused | None) -> None:
        """Load rankers for new shadow versions and drop removed ones (a refused record
        changes nothing; a shadow that cannot load is logged once and left out)."""
        if not self.experiments_on or isinstance(pointers, Refused):
            return
        wanted = set(pointers.shadows) if pointers else set()
        for version in wanted - set(self.shadows):
            try:
                self.shadows[version] = self.load(version)
            except Exception as error:  # one bad shadow must not stop the others or serving
                if version not in self._failed_shadows:
                    log.error("shadow %s cannot be loaded (%s); left out", version, error)
                    self._failed_shadows.add(version)
                continue
            log.info("shadow %s loaded for experiments", version)
        for version in set(self.shadows) - wanted:
            self.shadows.pop(version, None)

    def rank(self, request: Candidates, queued_s: float = 0.0) -> tuple[Ranking, dict[str, Any]]:
        """The ranking to publish and the impression to record (with its latency);
        ``queued_s`` is the request's wait so far, out of its budget."""
        started = time.perf_counter()
        serving = self.slot.current  # one read: the whole request uses this version
        shadows = sorted(self.shadows)
        experiment = assign(
            request.request_id,
            request.user_id,
            shadows,
            self.settings.interleave_fraction,
            self.settings.ab_fraction,
        )
        if experiment is not None and experiment.kind == AB_SHADOW:
            ranking, impression = self.shadows[experiment.shadow].rank(request, queued_s)
        else:
            ranking, impression = serving.ranker.rank(request, queued_s)
        if experiment is not None and experiment.kind == INTERLEAVE:
            shadow_ranking, _ = self.shadows[experiment.shadow].rank(request, queued_s)
            ranking, impression, teams = interleaved(request, ranking, shadow_ranking, impression)
            impression["experiment"] = {
                "kind": INTERLEAVE,
                "shadow": experiment.shadow,
                "teams": teams,
            }
        elif experiment is not None:
            impression["experiment"] = {"kind": experiment.kind, "shadow": experiment.shadow}
        if experiment is not None:
            impression["learn"] = False  # experiment lists were not chosen by the learner
            # nor by one final ranker: they are not logged as its training data
            impression.pop(FEATURE_LOG, None)
        label = (
            serving.version
            if experiment is None or experiment.kind != AB_SHADOW
            else experiment.shadow
        )
        if label:
            ranking = ranking.model_copy(
                update={"model_version": f"{label}:{ranking.model_version}"}
            )
            impression["model_version"] = ranking.model_version
        impression["latency_ms"] = 1000 * (time.perf_counter() - started)
        return ranking, impression


def interleaved(
    request: Candidates, primary: Ranking, shadow: Ranking, impression: dict[str, Any]
) -> tuple[Ranking, dict[str, Any], list[str]]:
    """The team-draft merge as the served ranking, and the impression of what was shown."""
    shown = max(request.k, 10)
    docs, teams = interleave(
        request.request_id,
        [item.doc_id for item in primary.items],
        [item.doc_id for item in shadow.items],
        k=shown,
    )
    by_doc = {item.doc_id: item for item in primary.items}
    items = [
        RankedItem(
            doc_id=doc,
            score=float(len(docs) - position),
            position=position + 1,
            flags=[*by_doc[doc].flags, f"interleaved:{teams[position]}"],
        )
        for position, doc in enumerate(docs)
    ]
    served = {item["doc_id"]: item for item in impression["items"]}
    shown_items = [
        {**served.get(doc, {"doc_id": doc}), "doc_id": doc, "position": position + 1}
        for position, doc in enumerate(docs[:shown])
    ]
    ranking = primary.model_copy(update={"items": items})
    return ranking, {**impression, "items": shown_items}, teams[:shown]

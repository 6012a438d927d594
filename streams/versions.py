"""What a primary worker serves: the registry's active version, and shadows for experiments.

Without a registry (no ``registry_key``), the worker serves ``settings.pipeline`` and this
module is a thin wrapper. With one, :class:`VersionedServing` holds the active version in a
:class:`~streamrank.streams.agents.control.RankerSlot` (switched by
:func:`streamrank.streams.agents.control.follow_control`) and, when interleaving or an A/B split is
configured, a ranker per shadow version, so that an experiment request can be ranked by both
(:mod:`streamrank.streams.experiments`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from streamrank.models.registry import ModelRegistry
from streamrank.streams.agents.control import RankerSlot
from streamrank.streams.config import Settings
from streamrank.streams.events import Candidates, RankedItem, Ranking
from streamrank.streams.experiments import AB_SHADOW, INTERLEAVE, assign, interleave
from streamrank.streams.serving import Reranker

log = logging.getLogger(__name__)
UNVERSIONED = ""


class VersionedServing:
    """Ranks a request with the active version, or as an experiment with a shadow."""

    def __init__(
        self,
        settings: Settings,
        build: Callable[[str | None], Reranker],
        registry: ModelRegistry | None,
    ) -> None:
        self.settings = settings
        self.build = build
        self.registry = registry
        active = registry.active() if registry else None
        self.slot: RankerSlot[Reranker] = RankerSlot(self.load, active or UNVERSIONED)
        self.shadows: dict[str, Reranker] = {}
        self.refresh_shadows()  # before the first request, so experiments start with it

    def load(self, version: str) -> Reranker:
        """A ranker for a registry version (its pipeline), fully loaded before it serves."""
        if version == UNVERSIONED or self.registry is None:
            return self.build(None)
        return self.build(self.registry.get(version).pipeline)

    @property
    def experiments_on(self) -> bool:
        return self.registry is not None and (
            self.settings.interleave_fraction > 0 or self.settings.ab_fraction > 0
        )

    def refresh_shadows(self) -> None:
        """Load rankers for new shadow versions and drop removed ones (control task, a thread)."""
        if not self.experiments_on:
            return
        assert self.registry is not None
        wanted = set(self.registry.shadows())
        for version in wanted - set(self.shadows):
            self.shadows[version] = self.load(version)
            log.info("shadow %s loaded for experiments", version)
        for version in set(self.shadows) - wanted:
            self.shadows.pop(version, None)

    def rank(self, request: Candidates) -> tuple[Ranking, dict[str, Any]]:
        """The ranking to publish and the impression to record (with its latency)."""
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
            ranking, impression = self.shadows[experiment.shadow].rank(request)
        else:
            ranking, impression = serving.ranker.rank(request)
        if experiment is not None and experiment.kind == INTERLEAVE:
            shadow_ranking, _ = self.shadows[experiment.shadow].rank(request)
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

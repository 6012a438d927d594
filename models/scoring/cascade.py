"""A re-ranking cascade: cheap tiers narrow the candidates, the cross-encoder orders the top.

A pipeline is a spec string, so stages and K values are configuration, not code:

========================== =========================================================================
``first-stage``            the candidates' own order
``dense``                  the bi-encoder re-scores every candidate
``ce``                     the cross-encoder re-scores every candidate
``dense>ce:30``            dense re-scores all; the cross-encoder re-scores dense's top 30
``colbert>ce:30``          the same with ColBERT as the cheap tier
``dense:100>ce:20``        dense re-scores the first stage's top 100, the cross-encoder its top 20
``dense>student:50>ce:5``  the distilled student orders dense's top 50, the cross-encoder its top 5
========================== =========================================================================

``tier:K`` means the tier re-scores the top ``K`` of the order it receives (the previous
tier keeps its top ``K`` for it); without ``:K`` it re-scores them all. After each tier the
candidates it scored come first, by their fused score, and the rest follow in the previous
order. The :class:`~streamrank.models.scoring.fusion.Fusion` mixes the tier's score with the
score that made the order it received (the first stage's, then each fusion's), so a tier
that knows the corpus less than the first stage does cannot throw the first stage's order
away; ``Fusion("none")`` orders by the tier's score alone.

:meth:`Cascade.rank` also

- keeps a latency budget (``deadline_s``): each tier gets the time left and scores only what
  it estimates will fit (from measured throughput); the rest keep the previous order, and the
  ranking says ``degraded`` with the reason. A tier that fails is treated the same way: a
  request never goes unanswered because a stage was slow or broken;
- skips the cross-encoder when the :class:`~streamrank.models.scoring.confidence.ConfidenceRule`
  says so;
- ranks a candidate without text at its first-stage position, flagged ``no_text``.

Examples
--------
>>> parse_pipeline("dense:100>ce:20")
(Stage(tier='dense', k=100, model=None), Stage(tier='ce', k=20, model=None))
>>> from streamrank.models.types import TextCandidate
>>> from streamrank.models.scoring.tiers import FunctionTier
>>> length = FunctionTier("ce", lambda query, texts: np.array([len(t) for t in texts]))
>>> cascade = Cascade("ce:2", {"ce": length}, fusion=Fusion("none"))
>>> docs = [TextCandidate("a", "x", 9.0), TextCandidate("b", "xxx", 8.0),
...         TextCandidate("c", "xxxxx", 7.0)]
>>> [item.doc_id for item in cascade.rank("q", docs).items]
['b', 'a', 'c']
>>> fused = cascade.with_fusion(Fusion("minmax", weight=0.3))
>>> [(item.doc_id, item.score, item.fused) for item in fused.rank("q", docs).items]
[('a', 1.0, 0.7), ('b', 3.0, 0.3), ('c', 7.0, None)]
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from streamrank.models.scoring.confidence import ConfidenceRule
from streamrank.models.scoring.fusion import DEFAULT_FUSION, Fusion
from streamrank.models.scoring.tiers import TierScores
from streamrank.models.types import CandidateLike, has_text

TIERS = ("dense", "colbert", "student", "ce")
FIRST_STAGE = "first-stage"


class PipelineError(ValueError):
    """A pipeline spec that does not parse, or names a tier that is not there."""


class Tier(Protocol):
    """A scorer the cascade can run (see :mod:`streamrank.models.scoring.tiers`)."""

    name: str
    version: str

    def score(
        self, query: str, candidates: Sequence[CandidateLike], budget_s: float | None
    ) -> TierScores: ...


@dataclass(frozen=True)
class Stage:
    """One step of a pipeline: a tier, how many of the top candidates it re-scores and, for
    the ``student`` tier, which student (``student@<model hash prefix>``; none: the shipped
    one), so that a registry version's spec names its model by content."""

    tier: str
    k: int | None = None
    model: str | None = None


def parse_pipeline(spec: str) -> tuple[Stage, ...]:
    """Stages of a pipeline spec (``first-stage`` alone is the empty cascade).

    Raises
    ------
    PipelineError
        On an unknown tier, a bad K, or an empty stage.
    """
    stages = []
    for number, part in enumerate(spec.strip().split(">")):
        name, _, k = part.strip().partition(":")
        if name == FIRST_STAGE and number == 0 and not k:
            continue
        name, at, model = name.partition("@")
        if name not in TIERS:
            raise PipelineError(f"unknown tier {name!r} in {spec!r}; tiers: {', '.join(TIERS)}")
        if at and (name != "student" or not _is_hash_prefix(model)):
            raise PipelineError(
                f"bad model {name}@{model!r} in {spec!r}: only the student tier takes one, "
                "a hex model hash of 8 to 64 characters (e.g. student@1a2b3c4d5e6f)"
            )
        if k and not (k.isdigit() and int(k) > 0):
            raise PipelineError(f"bad K {k!r} in {spec!r}: a positive integer")
        stages.append(Stage(name, int(k) if k else None, model or None))
    return tuple(stages)


def _is_hash_prefix(text: str) -> bool:
    return 8 <= len(text) <= 64 and all(c in "0123456789abcdef" for c in text)


@dataclass(frozen=True)
class CascadeItem:
    """One candidate in the final order.

    Attributes
    ----------
    score
        The score of the last tier that scored it (first-stage score if none did): scores
        of different tiers are on different scales, only the order is comparable.
    fused
        The fused score that placed it (``None`` when the last tier that scored it was not
        fused with the order before, or no tier scored it); it orders the candidates that
        tier scored within this request only.
    stage
        Which tier's score placed it (``first-stage`` when none).
    flags
        ``no_text`` (nothing to score: ranked by its first-stage position) or
        ``not_scored`` (a tier had no time for it).
    """

    doc_id: str
    score: float
    position: int
    stage: str
    flags: tuple[str, ...] = ()
    fused: float | None = None


@dataclass
class CascadeResult:
    """A ranking with what it took to make it (``fusion``: how tier scores were combined)."""

    items: list[CascadeItem]
    model_version: str
    fusion: str = "none"
    timings_ms: dict[str, float] = field(default_factory=dict)
    degraded: bool = False
    degraded_reason: str | None = None
    skipped: dict[str, str] = field(default_factory=dict)
    pairs_scored: int = 0
    cache_hits: int = 0
    tier_scores: dict[str, dict[str, float]] = field(default_factory=dict)
    """Each tier's own score of every candidate it scored, by doc id (the final ranker's
    request values: ``score`` above holds only the last tier's)."""

    @property
    def doc_ids(self) -> list[str]:
        """Document ids in the final order."""
        return [item.doc_id for item in self.items]


class Cascade:
    """Runs a pipeline spec over the tiers it names.

    Parameters
    ----------
    spec
        Pipeline spec, see the module docstring.
    tiers
        The tier objects by name (``dense``, ``colbert``, ``ce``); only those the spec names
        are needed.
    confidence
        When to skip the cross-encoder; off by default.
    fusion
        How each tier's scores combine with the order it received; ``None``:
        :data:`~streamrank.models.scoring.fusion.DEFAULT_FUSION`. An active fusion is part of
        ``model_version`` (it changes the rankings as much as a model does).
    """

    def __init__(
        self,
        spec: str,
        tiers: Mapping[str, Tier],
        confidence: ConfidenceRule | None = None,
        fusion: Fusion | None = None,
    ) -> None:
        self.spec = spec
        self.stages = parse_pipeline(spec)
        missing = sorted({s.tier for s in self.stages} - set(tiers))
        if missing:
            raise PipelineError(f"pipeline {spec!r} needs tiers that were not given: {missing}")
        self.tiers = {s.tier: tiers[s.tier] for s in self.stages}
        self.confidence = confidence or ConfidenceRule()
        self.fusion = DEFAULT_FUSION if fusion is None else fusion
        versions = [f"{s.tier}={self.tiers[s.tier].version}" for s in self.stages]
        fused = [f"fusion={self.fusion}"] if self.stages and self.fusion.active else []
        self.model_version = ";".join([spec, *versions, *fused])

    def with_fusion(self, fusion: Fusion) -> Cascade:
        """The same cascade (the same tier objects, so their caches) with another fusion."""
        return Cascade(self.spec, self.tiers, self.confidence, fusion)

    def rank(
        self, query: str, candidates: Sequence[CandidateLike], deadline_s: float | None = None
    ) -> CascadeResult:
        """Re-rank ``candidates`` (given in first-stage order) for ``query``.

        Parameters
        ----------
        deadline_s
            Seconds this call may take; ``None`` for no limit.
        """
        started = time.perf_counter()
        run = _Run(candidates, self.model_version, self.fusion)
        skip = self.confidence.skip_reason([c.first_stage_score for c in candidates])
        for stage in self.stages:
            if stage.tier == "ce" and skip:
                run.result.skipped["ce"] = skip
                continue
            left = None if deadline_s is None else deadline_s - (time.perf_counter() - started)
            run.apply(stage, self.tiers[stage.tier], query, left)
        run.result.timings_ms["total"] = 1000 * (time.perf_counter() - started)
        return run.finish()

    async def rank_async(
        self,
        query: str,
        candidates: Sequence[CandidateLike],
        deadline_s: float | None = None,
        executor: Executor | None = None,
    ) -> CascadeResult:
        """:meth:`rank` in an executor thread, so an event loop never waits on inference."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(executor, self.rank, query, candidates, deadline_s)


class _Run:
    """The state of one :meth:`Cascade.rank` call."""

    def __init__(
        self, candidates: Sequence[CandidateLike], model_version: str, fusion: Fusion
    ) -> None:
        self.candidates = candidates
        self.fusion = fusion
        self.textful = [has_text(c) for c in candidates]
        self.order = [i for i, textful in enumerate(self.textful) if textful]
        self.scores = {i: float(c.first_stage_score) for i, c in enumerate(candidates)}
        self.fused: dict[int, float] = {}
        self.stage = dict.fromkeys(range(len(candidates)), FIRST_STAGE)
        self.unscored: set[int] = set()
        self.reasons: list[str] = []
        self.result = CascadeResult([], model_version, fusion=str(fusion))

    def apply(self, stage: Stage, tier: Tier, query: str, left: float | None) -> None:
        head = self.order[: stage.k] if stage.k else list(self.order)
        if not head:
            return
        began = time.perf_counter()
        if left is not None and left <= 0:
            scores = TierScores(np.full(len(head), np.nan))
        else:
            scores = self._score(tier, query, head, left)
        self.result.timings_ms[stage.tier] = 1000 * (time.perf_counter() - began)
        self._reorder(stage.tier, head, scores)

    def _score(self, tier: Tier, query: str, head: list[int], left: float | None) -> TierScores:
        try:
            return tier.score(query, [self.candidates[i] for i in head], left)
        except Exception as error:  # serve the previous order rather than nothing
            self.reasons.append(f"{tier.name} failed: {type(error).__name__}: {error}")
            return TierScores(np.full(len(head), np.nan))

    def _reorder(self, name: str, head: list[int], result: TierScores) -> None:
        scores = np.asarray(result.scores, dtype=np.float64)
        unscored = np.isnan(scores).tolist()
        done = [i for i, nan in zip(head, unscored, strict=True) if not nan]
        left_out = [i for i, nan in zip(head, unscored, strict=True) if nan]
        late = len(left_out) - result.missing  # missing vectors: an ingestion gap, not overload
        if late > 0 and not any(r.startswith(f"{name} failed") for r in self.reasons):
            self.reasons.append(
                f"{name}: deadline, scored {len(done)} of {len(head)}, "
                "the rest keep the previous order"
            )
        by_index = dict(zip(head, scores.tolist(), strict=True))
        self.result.tier_scores[name] = {self.candidates[i].doc_id: by_index[i] for i in done}
        fused = self._fuse(done, by_index)
        done.sort(key=lambda i: -fused[i])  # stable: ties keep the previous order
        for i in done:
            self.scores[i] = float(by_index[i])
            self.stage[i] = name
            self.unscored.discard(i)
            if self.fusion.method == "none":
                self.fused.pop(i, None)
            else:
                self.fused[i] = float(fused[i])
        self.unscored.update(left_out)
        self.order = done + left_out + self.order[len(head) :]
        if name == "ce":
            self.result.pairs_scored += result.inferred
            self.result.cache_hits += result.cached

    def _fuse(self, done: list[int], by_index: dict[int, float]) -> dict[int, float]:
        """Fused scores of the candidates a tier scored (``done``, in the order received)."""
        previous = np.array([self.fused.get(i, self.scores[i]) for i in done])
        new = np.array([by_index[i] for i in done])
        return dict(zip(done, self.fusion.fuse(previous, new).tolist(), strict=True))

    def finish(self) -> CascadeResult:
        slots: list[int | None] = [None] * len(self.candidates)
        for i, textful in enumerate(self.textful):
            if not textful:
                slots[i] = i  # no text: keeps its first-stage position
        fill = iter(self.order)
        final = [slot if slot is not None else next(fill) for slot in slots]
        self.result.items = [self._item(i, position) for position, i in enumerate(final, 1)]
        if self.reasons:
            self.result.degraded = True
            self.result.degraded_reason = "; ".join(self.reasons)
        return self.result

    def _item(self, i: int, position: int) -> CascadeItem:
        flags = ()
        if not self.textful[i]:
            flags = ("no_text",)
        elif i in self.unscored:
            flags = ("not_scored",)
        doc_id = self.candidates[i].doc_id
        fused = self.fused.get(i)
        return CascadeItem(doc_id, self.scores[i], position, self.stage[i], flags, fused)

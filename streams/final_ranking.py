"""The final ranker in a worker, and the feature log it is trained from.

After the cascade, a version with a final ranker (a LambdaMART model and its feature set,
:mod:`streamrank.models.learning.ranker_versions`) scores every candidate from the feature
store's state in Redis: :class:`Featuriser` turns the request and the cascade's result into
a :class:`~streamrank.models.features.events.FeatureRequest` (the first stage's scores and
ranks, each tier's own scores where it computed them) and reads the matrix with the same
:class:`~streamrank.models.features.vector.FeatureVector` that builds training data offline,
so a missing value is the same at training and serving. :class:`FinalStage` orders the list by
the model's score; the online ranker and the business rules come after it.

Every ranking served with the feature store on is logged to the ``impressions`` topic with
the feature vector of each shown item as it was ranked (:class:`FeatureLogger`): the rows the
final ranker used when there is one, else rows computed for the same list after the ranking
was published (off the request's latency). ``streamrank train ranker`` joins that log with the
interactions that follow, so a model is trained point-in-time correct.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import redis

from streamrank.models.features.config import FeatureSet
from streamrank.models.features.defaults import default_features
from streamrank.models.features.events import REQUEST_VALUES, FeatureRequest
from streamrank.models.features.state import FeatureState
from streamrank.models.features.vector import FeatureVector
from streamrank.models.learning.lambdamart import FinalRanker
from streamrank.models.learning.ranker_versions import load_final_ranker
from streamrank.models.registry import ModelRegistry, Version
from streamrank.models.scoring.cascade import CascadeResult
from streamrank.streams.config import Settings
from streamrank.streams.events import Candidates, Impression, LoggedItem
from streamrank.streams.state.feature_state import RedisFeatureState

log = logging.getLogger(__name__)

FINAL_STAGE = "final"
TIER_VALUES = tuple(v for v in REQUEST_VALUES if not v.startswith("first_stage"))
"""Request values that are a cascade tier's own scores (``dense``, ``student``, ``ce``)."""


class Featuriser:
    """A request's feature matrix from the feature state, in the cascade's order."""

    def __init__(self, features: FeatureSet, state: FeatureState) -> None:
        self.features = features
        self.vector = FeatureVector(features, state)

    def request(
        self, request: Candidates, doc_ids: Sequence[str], result: CascadeResult, now: float
    ) -> FeatureRequest:
        """The feature request of ``doc_ids`` (a served order of ``request``'s candidates)."""
        given = {c.doc_id: (rank, c) for rank, c in enumerate(request.candidates, 1)}
        rows = [given[doc_id] for doc_id in doc_ids]
        values: dict[str, np.ndarray] = {
            "first_stage_score": np.array([c.first_stage_score for _, c in rows], np.float64),
            "first_stage_rank": np.array([rank for rank, _ in rows], np.float64),
        }
        for tier in TIER_VALUES:
            scores = result.tier_scores.get(tier)
            if scores:
                values[tier] = np.array([scores.get(d, np.nan) for d in doc_ids], np.float64)
        return FeatureRequest(
            list(doc_ids), now=now, query=request.query, user_id=request.user_id, values=values
        )

    def matrix(
        self, request: Candidates, doc_ids: Sequence[str], result: CascadeResult, now: float
    ) -> np.ndarray:
        return self.vector.matrix(self.request(request, doc_ids, result, now))


@dataclass(frozen=True)
class FinalScores:
    """What the final ranker saw and said: the matrix and scores, rows in ``doc_ids`` order."""

    doc_ids: tuple[str, ...]
    matrix: np.ndarray
    scores: np.ndarray


class FinalStage:
    """Orders the cascade's list by a LambdaMART model over the feature store's features.

    Parameters
    ----------
    ranker
        The model; it reads ``features``' columns in order.
    features
        The feature set the model was trained on.
    state
        The feature state (Redis in a worker).
    compile_dir
        Where lleaves caches the compiled model (the ``fast-trees`` extra); None, or lleaves
        absent: LightGBM's own predict.
    """

    def __init__(
        self,
        ranker: FinalRanker,
        features: FeatureSet,
        state: FeatureState,
        compile_dir: Path | None = None,
    ) -> None:
        if list(ranker.feature_names) != features.columns:
            raise ValueError("the final ranker does not read its feature set's columns")
        self.ranker = ranker
        self.featuriser = Featuriser(features, state)
        self.compiled = compile_dir is not None and ranker.compile(compile_dir)

    @property
    def version(self) -> str:
        return f"final={self.ranker.digest[:12]}"

    @property
    def features(self) -> FeatureSet:
        return self.featuriser.features

    def rank(
        self, request: Candidates, result: CascadeResult, now: float
    ) -> tuple[CascadeResult, FinalScores]:
        """The list ordered by the model's score (ties keep the cascade's order)."""
        started = time.perf_counter()
        # rows in the first stage's order, as training data is built (list-relative features
        # read the list in that order); ties are broken by the cascade's order
        doc_ids = tuple(c.doc_id for c in request.candidates)
        matrix = self.featuriser.matrix(request, doc_ids, result, now)
        scores = self.ranker.predict_many(matrix)
        row = {doc_id: i for i, doc_id in enumerate(doc_ids)}
        served = np.array([scores[row[item.doc_id]] for item in result.items])
        order = np.argsort(-served, kind="stable")
        items = [
            replace(
                result.items[i],
                score=float(served[i]),
                position=position,
                stage=FINAL_STAGE,
                fused=None,
            )
            for position, i in enumerate(order.tolist(), 1)
        ]
        timings = result.timings_ms | {FINAL_STAGE: 1000 * (time.perf_counter() - started)}
        ranked = replace(
            result,
            items=items,
            model_version=f"{result.model_version};{self.version}",
            timings_ms=timings,
        )
        return ranked, FinalScores(doc_ids, matrix, scores)


@dataclass(frozen=True)
class PendingLog:
    """A served list whose feature log is still to be written (see :class:`FeatureLogger`)."""

    request: Candidates
    shown: tuple[tuple[str, int], ...]  # (doc_id, served position), in served order
    model_version: str
    served_at: float
    result: CascadeResult
    final: FinalScores | None = None
    features: FeatureSet | None = None


class FeatureLogger:
    """Turns served lists into :class:`~streamrank.streams.events.Impression` events.

    A list the final ranker served is logged with the rows it scored; any other with rows the
    logger's own :class:`Featuriser` (the feature store's feature set) computes for the whole
    list, at the time it was served, so that list-relative features read the same list.
    """

    def __init__(self, featuriser: Featuriser) -> None:
        self.featuriser = featuriser

    def event(self, pending: PendingLog) -> Impression:
        if pending.final is not None and pending.features is not None:
            features, doc_ids, matrix = (
                pending.features,
                pending.final.doc_ids,
                pending.final.matrix,
            )
            scores: np.ndarray | None = pending.final.scores
        else:
            doc_ids = tuple(c.doc_id for c in pending.request.candidates)
            features, scores = self.featuriser.features, None
            matrix = self.featuriser.matrix(
                pending.request, doc_ids, pending.result, pending.served_at
            )
        row = {doc_id: i for i, doc_id in enumerate(doc_ids)}
        items = []
        for doc_id, position in pending.shown:
            i = row.get(doc_id)
            if i is None:  # a pin from outside the candidates: no features were computed
                continue
            items.append(
                LoggedItem(
                    doc_id=doc_id,
                    position=position,
                    features=[float(v) if np.isfinite(v) else None for v in matrix[i].tolist()],
                    score=None if scores is None else float(scores[i]),
                )
            )
        request = pending.request
        return Impression(
            request_id=request.request_id,
            query=request.query,
            user_id=request.user_id,
            session_id=request.session_id,
            model_version=pending.model_version,
            features_digest=features.digest,
            items=items,
            served_at=pending.served_at,
        )


def final_stage_for(
    settings: Settings, registry: ModelRegistry | None, version: Version | None, client: redis.Redis
) -> FinalStage | None:
    """The final stage of a registry version (None: it has none), its model verified and
    compiled when lleaves is installed; features are read through ``client``."""
    if version is None or not version.final_ranker or registry is None:
        return None
    loaded = load_final_ranker(registry, version.version)
    if loaded is None:
        return None
    ranker, features = loaded
    state = RedisFeatureState.for_settings(settings, client, features)
    return FinalStage(ranker, features, state, settings.model_dir / "final-rankers")


def feature_logger_for(settings: Settings, client: redis.Redis) -> FeatureLogger | None:
    """The worker's feature logger over the feature store's feature set (None: feature store
    or feature log off)."""
    if not (settings.feature_store and settings.feature_log):
        return None
    features = default_features()
    state = RedisFeatureState.for_settings(settings, client, features)
    return FeatureLogger(Featuriser(features, state))

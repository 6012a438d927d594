"""The model tiers of a cascade: cross-encoder, dense (bi-encoder) and ColBERT.

A tier scores a query against candidates in the order it is given them and may stop early:
``score(query, candidates, budget_s)`` returns a :class:`TierScores` whose ``scores`` hold
NaN for the candidates it had no time for. The cross-encoder tier asks its score cache first,
estimates what the rest costs with a :class:`~streamrank.models.scoring.budget.CostModel`
calibrated at start and updated from every call, and computes only what fits in the budget.
The vector tiers (dense, ColBERT) encode only the query in a request: document vectors are
read from their store, filled ahead of time (:meth:`_VectorTier.ensure_vectors`); a candidate
without one is left unscored and counted, never encoded inline.

Examples
--------
A tier can be anything with ``name``, ``version`` and ``score``; tests use tiny ones:

>>> import numpy as np
>>> from streamrank.models.types import TextCandidate
>>> tier = FunctionTier("length", lambda query, texts: np.array([len(t) for t in texts]))
>>> tier.score("q", [TextCandidate("a", "xx"), TextCandidate("b", "x")], None).scores.tolist()
[2.0, 1.0]
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from tokenizers import Encoding

from streamrank.models.scoring.bi_encoder import BiEncoder
from streamrank.models.scoring.budget import CostModel
from streamrank.models.scoring.colbert import ColBERT
from streamrank.models.scoring.cross_encoder import CrossEncoder, token_lengths
from streamrank.models.scoring.score_cache import (
    InMemoryCache,
    ScoreCache,
    VectorCache,
    score_key,
    vector_key,
)
from streamrank.models.types import CandidateLike

CALIBRATION_TEXT = " ".join(["the quick brown fox jumps over the lazy dog"] * 10)


@dataclass
class TierScores:
    """One tier's answer for one request.

    Attributes
    ----------
    scores
        One score per candidate given, NaN where the tier did not score it (no time).
    inferred
        Candidates (pairs or documents) that needed the model in this call.
    cached
        Candidates answered from a cache.
    missing
        Candidates left unscored because their stored input is not there (a vector tier's
        document vector): an ingestion gap, not lack of time, so not a reason to call the
        ranking degraded. Counted among the NaN of ``scores``.
    """

    scores: np.ndarray
    inferred: int = 0
    cached: int = 0
    missing: int = 0


def _texts(candidates: Sequence[CandidateLike]) -> list[str]:
    return [c.text or "" for c in candidates]


def _calibrate(run: Callable[[], object], units: float) -> float:
    """Seconds per unit of a warm call (the first call also warms the session up)."""
    run()
    started = time.perf_counter()
    run()
    return (time.perf_counter() - started) / units


class FunctionTier:
    """A tier from a plain function ``(query, texts) -> scores``; no budget, no cache."""

    def __init__(self, name: str, function: Callable[[str, list[str]], np.ndarray]) -> None:
        self.name = name
        self.version = name
        self.function = function

    def score(
        self, query: str, candidates: Sequence[CandidateLike], budget_s: float | None
    ) -> TierScores:
        scores = np.asarray(self.function(query, _texts(candidates)), dtype=np.float64)
        return TierScores(scores, inferred=len(candidates))


class CrossEncoderTier:
    """Cross-encoder scores, from the score cache when there, else from the model.

    Parameters
    ----------
    encoder
        The cross-encoder.
    cache
        Score cache (``get_many`` / ``set_many``); ``None`` for none.
    predict_encoded
        What runs the model on tokenized pairs; default ``encoder.predict_encoded``. Pass
        ``CrossRequestBatcher(encoder.predict_encoded).predict`` to merge concurrent requests.
        The tier tokenizes each request once: the token counts that decide what fits a
        deadline come from the same encodings the model runs on.
    cost
        Seconds per token; default: calibrated on start.
    name
        The tier's name in pipeline specs: ``ce`` (the teacher) or ``student``.
    """

    def __init__(
        self,
        encoder: CrossEncoder,
        cache: ScoreCache | None = None,
        predict_encoded: Callable[[list[Encoding]], np.ndarray] | None = None,
        cost: CostModel | None = None,
        name: str = "ce",
    ) -> None:
        self.name = name
        self.encoder = encoder
        self.cache = cache
        self.predict_encoded = predict_encoded or encoder.predict_encoded
        self.version = encoder.version
        if cost is None:
            pairs = [("calibration query about foxes", CALIBRATION_TEXT)] * 16
            tokens = float(encoder.token_counts(pairs).sum())
            cost = CostModel(_calibrate(lambda: encoder.predict(pairs), tokens), overhead_s=0.002)
        self.cost = cost

    def score(
        self, query: str, candidates: Sequence[CandidateLike], budget_s: float | None
    ) -> TierScores:
        started = time.perf_counter()
        scores = np.full(len(candidates), np.nan)
        keys = [score_key(self.version, query, c.doc_id, c.text or "") for c in candidates]
        cached = self._from_cache(keys, scores)
        todo = np.flatnonzero(np.isnan(scores))
        encodings = self.encoder.encode([(query, candidates[i].text or "") for i in todo])
        tokens = None
        if budget_s is not None and len(todo):
            counts = token_lengths(encodings)
            # the cache lookup and the tokenizing above came out of this request's budget too
            fit = self.cost.fits(counts, budget_s - (time.perf_counter() - started))
            todo, encodings, tokens = todo[:fit], encodings[:fit], float(counts[:fit].sum())
        if len(todo):
            scores[todo] = self._predict(encodings, tokens)
            if self.cache is not None:
                self.cache.set_many({keys[i]: float(scores[i]) for i in todo})
        return TierScores(scores, inferred=len(todo), cached=cached)

    def _from_cache(self, keys: list[str], scores: np.ndarray) -> int:
        if self.cache is None or not keys:
            return 0
        found = self.cache.get_many(keys)
        for i, value in enumerate(found):
            if value is not None:
                scores[i] = value
        return sum(value is not None for value in found)

    def _predict(self, encodings: list[Encoding], tokens: float | None) -> np.ndarray:
        """Scores from the model; the time it took updates the cost model.

        With ``tokens`` (this request's, counted for a deadline) the estimate learns the
        latency this request saw, waiting for merged concurrent requests included; without,
        it learns the encoder's own seconds per token.
        """
        scored, seconds = self.encoder.tokens_scored, self.encoder.seconds
        started = time.perf_counter()
        scores = np.asarray(self.predict_encoded(encodings), dtype=np.float64)
        if tokens:
            self.cost.observe(tokens, time.perf_counter() - started)
        elif self.encoder.tokens_scored > scored:
            self.cost.observe(self.encoder.tokens_scored - scored, self.encoder.seconds - seconds)
        return scores


class _VectorTier:
    """Shared logic of the tiers that score stored document vectors against a query.

    On the request path (:meth:`score`) only the query is encoded: a candidate whose vector is
    not in the store is left unscored (NaN: it keeps the previous tier's order) and counted
    in ``missing`` and :attr:`TierScores.missing`. A missing vector is a gap in ingestion
    (``index build``, the ``items`` agent, :meth:`ensure_vectors`), not overload: encoding it
    inline would spend the request's budget on work that belongs before the request, and make
    a request's cost depend on how many of its documents are new. :meth:`ensure_vectors`
    encodes ahead of time.
    """

    name = "vectors"
    version = "vectors"
    ENCODE_BATCH = 256
    """Documents per :meth:`ensure_vectors` encoder call (and store write)."""

    def __init__(self, cache: VectorCache | None, cost: CostModel) -> None:
        self.cache = cache if cache is not None else InMemoryCache(max_items=50_000)
        self.cost = cost
        self.missing = 0
        """Candidates scored without a stored vector so far (see :meth:`take_missing`)."""
        self._missing_lock = threading.Lock()

    def _encode_docs(self, texts: list[str]) -> list[np.ndarray]:
        raise NotImplementedError

    def _encode_query(self, query: str) -> np.ndarray:
        raise NotImplementedError

    def _similarity(self, query: np.ndarray, docs: list[np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def _keys(self, candidates: Sequence[CandidateLike]) -> list[str]:
        return [vector_key(self.version, c.doc_id, c.text or "") for c in candidates]

    def ensure_vectors(
        self,
        candidates: Sequence[CandidateLike],
        on_progress: Callable[[int], None] | None = None,
    ) -> int:
        """Encode and store the vectors of the documents not stored yet; how many were encoded.

        For ingestion and ahead of an evaluation run, never for a request. Encodes in batches
        of :attr:`ENCODE_BATCH`; ``on_progress`` gets the count of documents done per batch.
        """
        keys = self._keys(candidates)
        found = self.cache.get_many(keys) if keys else []
        todo = {keys[i]: candidates[i].text or "" for i, v in enumerate(found) if v is None}
        pending = list(todo.items())  # a document given twice is encoded once
        for start in range(0, len(pending), self.ENCODE_BATCH):
            batch = pending[start : start + self.ENCODE_BATCH]
            texts = [text for _, text in batch]
            begun = time.perf_counter()
            encoded = self._encode_docs(texts)
            self.cost.observe(sum(map(len, texts)), time.perf_counter() - begun)
            self.cache.set_many({k: v for (k, _), v in zip(batch, encoded, strict=True)})
            if on_progress is not None:
                on_progress(len(batch))
        return len(pending)

    def take_missing(self) -> int:
        """Candidates scored without a stored vector since the last call (then reset to 0)."""
        with self._missing_lock:
            count, self.missing = self.missing, 0
            return count

    def score(
        self, query: str, candidates: Sequence[CandidateLike], budget_s: float | None
    ) -> TierScores:
        """Similarity of the query with each candidate's stored vector; NaN where none is
        stored (``budget_s`` is not needed: nothing here grows with the documents' length)."""
        query_vector = self._encode_query(query)
        found = self.cache.get_many(self._keys(candidates)) if candidates else []
        scores = np.full(len(candidates), np.nan)
        have = [i for i, v in enumerate(found) if v is not None]
        if have:
            scores[have] = self._similarity(query_vector, [found[i] for i in have])
        missing = len(candidates) - len(have)
        if missing:
            with self._missing_lock:
                self.missing += missing
        return TierScores(scores, inferred=0, cached=len(have), missing=missing)


class DenseTier(_VectorTier):
    """Bi-encoder tier: dot product of the query vector with cached document vectors."""

    name = "dense"

    def __init__(
        self, encoder: BiEncoder, cache: VectorCache | None = None, cost: CostModel | None = None
    ) -> None:
        self.encoder = encoder
        self.version = encoder.version
        if cost is None:
            texts = [CALIBRATION_TEXT] * 8
            per_char = _calibrate(lambda: encoder.encode(texts), sum(map(len, texts)))
            cost = CostModel(per_char, overhead_s=0.004)
        super().__init__(cache, cost)

    def _encode_docs(self, texts: list[str]) -> list[np.ndarray]:
        return list(self.encoder.encode(texts))

    def _encode_query(self, query: str) -> np.ndarray:
        return self.encoder.encode_queries([query])[0]

    def _similarity(self, query: np.ndarray, docs: list[np.ndarray]) -> np.ndarray:
        return np.stack(docs) @ query


class ColBERTTier(_VectorTier):
    """Late-interaction tier: MaxSim of the query's token vectors with cached document ones."""

    name = "colbert"

    def __init__(
        self, encoder: ColBERT, cache: VectorCache | None = None, cost: CostModel | None = None
    ) -> None:
        self.encoder = encoder
        self.version = encoder.version
        if cost is None:
            texts = [CALIBRATION_TEXT] * 8
            per_char = _calibrate(lambda: encoder.encode_documents(texts), sum(map(len, texts)))
            cost = CostModel(per_char, overhead_s=0.004)
        super().__init__(cache, cost)

    def _encode_docs(self, texts: list[str]) -> list[np.ndarray]:
        return self.encoder.encode_documents(texts)

    def _encode_query(self, query: str) -> np.ndarray:
        return self.encoder.encode_queries([query])[0]

    def _similarity(self, query: np.ndarray, docs: list[np.ndarray]) -> np.ndarray:
        return self.encoder.score(query, docs)

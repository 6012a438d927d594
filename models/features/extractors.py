"""How each kind of feature is computed for a request's candidates, vectorised over them.

Every extractor takes its declaration and the request's
:class:`~streamrank.models.features.lookup.StateLookup` and returns float64 values shaped
(candidates,) or (candidates, windows), with NaN wherever the value is missing; only
:class:`~streamrank.models.features.vector.FeatureVector` turns NaN into the declared default,
so that rule lives in one place.

Examples
--------
>>> smoothed_rate(np.array([0.0, 50.0]), np.array([0.0, 100.0]), global_rate=0.1, weight=10)
array([0.1, 0.3])
>>> category_code("shoes", 1024) == category_code("shoes", 1024)
True
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import numpy as np

from streamrank.models.features.config import (
    AgeFeature,
    CosineFeature,
    CounterFeature,
    DecayedPopularityFeature,
    EmbeddingMeanFeature,
    FieldFeature,
    MultiOverlapFeature,
    OverlapFeature,
    RateFeature,
    RelativeToListFeature,
    RequestFeature,
    UserItemFeature,
)
from streamrank.models.features.events import DAY_S
from streamrank.models.features.learn import MULTI_TOTAL, decay
from streamrank.models.features.lookup import StateLookup

Extractor = Callable[[Any, StateLookup], np.ndarray]


def smoothed_rate(
    numerator: np.ndarray, denominator: np.ndarray, global_rate: float, weight: float
) -> np.ndarray:
    """Metarank's rate: ``(weight + numerator) / (weight / global_rate + denominator)``.

    With no history it is the global rate; ``weight`` is how many numerator events of
    evidence the prior is worth. A global rate of 0 (nothing happened yet) gives 0.
    """
    if global_rate <= 0.0:
        return np.where(np.isnan(numerator + denominator), np.nan, 0.0)
    return (weight + numerator) / (weight / global_rate + denominator)


@lru_cache(maxsize=65_536)
def category_code(value: str, buckets: int) -> float:
    """A category's stable code in ``[0, buckets)``: the same in every process and run."""
    return float(zlib.crc32(value.encode()) % buckets)


def field(feature: FieldFeature, lookup: StateLookup) -> np.ndarray:
    categorical = lookup.plan.field_type(feature.source, feature.field) == "category"
    if feature.source == "users":
        value = (lookup.user_hash or {}).get(feature.field)
        if value is None:
            return np.full(lookup.size, np.nan)
        number = category_code(str(value), feature.buckets) if categorical else float(value)
        return np.full(lookup.size, number)
    if categorical:
        nan = float("nan")
        codes = [
            nan if value is None else category_code(value, feature.buckets)
            for value in lookup.item_strings(feature.field)
        ]
        return np.array(codes, dtype=np.float64)
    return lookup.item_numbers(feature.field)


def age(feature: AgeFeature, lookup: StateLookup) -> np.ndarray:
    return (lookup.now - lookup.item_numbers(feature.field)) / DAY_S


def counter(feature: CounterFeature, lookup: StateLookup) -> np.ndarray:
    return lookup.window_sums(feature.scope, feature.event, feature.windows)


def rate(feature: RateFeature, lookup: StateLookup) -> np.ndarray:
    numerator = lookup.window_sums(feature.scope, feature.numerator, feature.windows)
    denominator = lookup.window_sums(feature.scope, feature.denominator, feature.windows)
    global_numerator = lookup.window_sums("global", feature.numerator, feature.windows)[0]
    global_denominator = lookup.window_sums("global", feature.denominator, feature.windows)[0]
    columns = []
    for column, (top, bottom) in enumerate(zip(global_numerator, global_denominator, strict=True)):
        if not bottom > 0:  # nothing to smooth toward yet (NaN too): missing
            columns.append(np.full(lookup.size, np.nan))
            continue
        columns.append(
            smoothed_rate(
                numerator[:, column], denominator[:, column], top / bottom, feature.weight
            )
        )
    return np.stack(columns, axis=1)


def decayed_popularity(feature: DecayedPopularityFeature, lookup: StateLookup) -> np.ndarray:
    value = lookup.item_numbers(f"pop.{feature.name}.value")
    since = lookup.item_numbers(f"pop.{feature.name}.time")
    # An item nobody touched has popularity 0, a value, not a missing one.
    return np.nan_to_num(value * decay(lookup.now - since, feature.half_life_days), nan=0.0)


def embedding_mean(feature: EmbeddingMeanFeature, lookup: StateLookup) -> np.ndarray:
    stored = lookup.user_hash
    if stored is None:
        return np.full(lookup.size, np.nan)
    weight = float(stored.get(f"emb.{feature.name}.weight", 0.0))
    if weight > 0.0:
        since = float(stored[f"emb.{feature.name}.time"])
        weight *= float(decay(lookup.now - since, feature.half_life_days))
    return np.full(lookup.size, weight)


def overlap(feature: OverlapFeature, lookup: StateLookup) -> np.ndarray:
    counts = lookup.user_overlap(feature.name)
    if not counts:
        return np.full(lookup.size, np.nan)
    total = float(sum(float(count) for count in counts.values()))
    shares = {value: float(count) / total for value, count in counts.items()}
    values = lookup.item_strings(feature.field)
    nan = float("nan")
    return np.array(
        [nan if value is None else shares.get(value, 0.0) for value in values], dtype=np.float64
    )


def cosine(feature: CosineFeature, lookup: StateLookup) -> np.ndarray:
    user = lookup.user_embedding(feature.embedding)
    matrix, present = lookup.item_vectors
    out = np.full(lookup.size, np.nan)
    if user is None or not present.any() or matrix.shape[1] != user.shape[0]:
        return out
    # einsum: the row norms without a temporary the size of the matrix.
    norms = np.sqrt(np.einsum("ij,ij->i", matrix, matrix)) * float(np.linalg.norm(user))
    with np.errstate(divide="ignore", invalid="ignore"):
        similarity = (matrix @ user.astype(np.float32)).astype(np.float64) / norms
    # A zero vector has no direction: its NaN stays missing.
    out[present] = similarity[present]
    return out


def request(feature: RequestFeature, lookup: StateLookup) -> np.ndarray:
    return lookup.request_value(feature.value)


def relative_to_list(feature: RelativeToListFeature, lookup: StateLookup) -> np.ndarray:
    values = lookup.item_numbers(feature.field)
    head = values if feature.top_n is None else values[: feature.top_n]
    known = head[~np.isnan(head)]
    if known.size == 0:
        return np.full(lookup.size, np.nan)
    median = float(np.median(known))
    with np.errstate(divide="ignore", invalid="ignore"):
        return values / median  # a median of 0 gives inf: not finite, so missing


EXTRACTORS: dict[str, Extractor] = {
    "field": field,
    "age": age,
    "counter": counter,
    "rate": rate,
    "decayed_popularity": decayed_popularity,
    "embedding_mean": embedding_mean,
    "overlap": overlap,
    "cosine": cosine,
    "request": request,
    "relative_to_list": relative_to_list,
}
"""The extractor of each feature kind."""


_COMBINE = {"max": max, "mean": lambda shares: sum(shares) / len(shares), "sum": sum}


def multi_overlap(feature: MultiOverlapFeature, lookup: StateLookup) -> np.ndarray:
    """The user's shares of the candidate's values of a multi-valued field, combined."""
    counts = lookup.user_overlap(feature.name)
    if not counts or not float(counts.get(MULTI_TOTAL, 0.0)) > 0.0:
        return np.full(lookup.size, np.nan)
    total = float(counts[MULTI_TOTAL])
    combine = _COMBINE[feature.combine]
    separator = feature.separator
    out = np.full(lookup.size, np.nan)
    # Many candidates share a value list ("Comedy|Drama"): work each one out once.
    done: dict[str, float] = {}
    for row, joined in enumerate(lookup.item_strings(feature.field)):
        if joined is None:
            continue
        if joined not in done:
            values = [v for v in dict.fromkeys(joined.split(separator)) if v]
            shares = [float(counts.get(v, 0.0)) / total for v in values]
            done[joined] = combine(shares) if shares else float("nan")
        out[row] = done[joined]
    return out


def user_item(feature: UserItemFeature, lookup: StateLookup) -> np.ndarray:
    """How often the user did the feature's events with each candidate; 0 for none."""
    if lookup.request.user_id is None:
        return np.full(lookup.size, np.nan)
    counts = lookup.user_overlap(feature.name) or {}
    return np.array(
        [float(counts.get(doc_id, 0.0)) for doc_id in lookup.request.doc_ids], dtype=np.float64
    )


EXTRACTORS.update({"multi_overlap": multi_overlap, "user_item": user_item})

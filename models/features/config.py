"""The feature declarations: one entry per feature, checked at load with errors that say how
to fix them.

Each entry names the feature, its ``kind`` (how it is computed), its ``source`` (the topic it
is fed from: ``items``, ``users``, ``interactions``, or the ``request`` itself), the kind's own
settings (scope, windows, half-life...) and the ``default`` that stands in wherever the value
is missing, at training and serving alike. A :class:`FeatureSet` also declares the item and
user fields events may carry, so that a misspelt field is an error at load, not a column of
defaults in production.

Examples
--------
>>> features = FeatureSet.from_dict({"features": [
...     {"name": "price", "kind": "field", "source": "items", "field": "price",
...      "default": "nan"},
...     {"name": "clicks", "kind": "counter", "source": "interactions", "event": "click",
...      "scope": "item", "windows": [7, 30], "default": 0},
... ]})
>>> features.columns
['price', 'clicks_7d', 'clicks_30d']
>>> FeatureSet.from_dict({"features": [{"name": "x", "kind": "counter", "source": "items",
...     "event": "click", "scope": "item", "windows": [7], "default": 0}]})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
streamrank...FeatureConfigError: feature 1 ('x'): kind 'counter' is fed from source ..., not ...
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

FieldType = Literal["number", "category", "time"]
Source = Literal["items", "users", "interactions", "request"]
EventType = Literal["impression", "click", "add_to_cart", "purchase", "session"]
InteractionType = Literal["impression", "click", "add_to_cart", "purchase"]
Scope = Literal["item", "query_item", "category", "user"]
RequestValue = Literal["first_stage_score", "first_stage_rank", "dense", "student", "ce"]
Name = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)]
Windows = Annotated[list[Annotated[int, Field(ge=1, le=365)]], Field(min_length=1)]

DEFAULT_ITEM_FIELDS: dict[str, FieldType] = {
    "price": "number",
    "category": "category",
    "brand": "category",
    "stock": "number",
    "in_stock": "number",
    "promoted": "number",
    "created": "time",
    "categories": "category",
}
"""Item fields the ``items`` topic carries; ``in_stock`` defaults to ``stock > 0``;
``categories`` holds every category of an item joined by ``|`` (``category`` is the main one)."""

DEFAULT_USER_FIELDS: dict[str, FieldType] = {"segment": "category"}
"""User fields the ``users`` topic carries."""


class FeatureConfigError(Exception):
    """A feature config that cannot be used; the message names the entry and the fix."""


class _Feature(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name
    default: float = Field(description="the value wherever this one is missing; nan allowed")
    description: str | None = None

    @property
    def columns(self) -> list[str]:
        """The matrix columns this feature fills, in order."""
        return [self.name]


class FieldFeature(_Feature):
    """An item's or a user's field; a category becomes a stable code in ``[0, buckets)``."""

    kind: Literal["field"]
    source: Literal["items", "users"]
    field: Name
    buckets: int = Field(1024, ge=2, le=1 << 24)


class AgeFeature(_Feature):
    """Days since an item's time field (``created``; else when the item was first seen)."""

    kind: Literal["age"]
    source: Literal["items"]
    field: Name = "created"


class CounterFeature(_Feature):
    """How often ``event`` happened in ``scope`` over each of ``windows`` days."""

    kind: Literal["counter"]
    source: Literal["interactions"]
    event: EventType
    scope: Scope
    windows: Windows

    @property
    def columns(self) -> list[str]:
        return [f"{self.name}_{window}d" for window in self.windows]

    @model_validator(mode="after")
    def _sessions_are_per_user(self) -> CounterFeature:
        if self.event == "session" and self.scope != "user":
            raise ValueError('sessions are counted per user: set scope = "user"')
        return self


class RateFeature(_Feature):
    """``(weight + numerator) / (weight / global_rate + denominator)`` over each window.

    Metarank's smoothing: an item with no history starts at the global rate and moves toward
    its own as its denominator grows past ``weight / global_rate``.
    """

    kind: Literal["rate"]
    source: Literal["interactions"]
    numerator: InteractionType
    denominator: InteractionType
    scope: Scope
    windows: Windows
    weight: float = Field(10.0, gt=0)

    @property
    def columns(self) -> list[str]:
        return [f"{self.name}_{window}d" for window in self.windows]


class DecayedPopularityFeature(_Feature):
    """An item's interactions, each weighted by type, halved every ``half_life_days``."""

    kind: Literal["decayed_popularity"]
    source: Literal["interactions"]
    weights: dict[InteractionType, Annotated[float, Field(ge=0)]] = Field(min_length=1)
    half_life_days: float = Field(gt=0)


class EmbeddingMeanFeature(_Feature):
    """A user's time-decayed mean of the vectors of items they ``event``-ed (purchased).

    Its column is the decayed weight behind the mean (a recency-weighted purchase count);
    :class:`CosineFeature` compares the mean itself with each candidate.
    """

    kind: Literal["embedding_mean"]
    source: Literal["interactions"]
    event: InteractionType = "purchase"
    half_life_days: float = Field(gt=0)


class OverlapFeature(_Feature):
    """The share of a user's ``events`` whose item had this candidate's value of ``field``."""

    kind: Literal["overlap"]
    source: Literal["interactions"]
    field: Name
    events: list[InteractionType] = Field(default=["click"], min_length=1)
    max_values: int = Field(32, ge=1, le=1024, description="values kept per user")


class MultiOverlapFeature(_Feature):
    """A user's affinity to the several values of a candidate's multi-valued ``field``.

    ``field`` holds values joined by ``separator`` (``"Comedy|Drama"``). Each of a user's
    ``events`` adds one to every value of its item; a value's share is how many of the user's
    events had it (a fraction of events, not of values, so a taste for comedies reads the
    same whatever else the comedies were). A candidate's column combines the shares of its
    values by ``combine``: ``max`` (its best-liked value), ``mean`` or ``sum``.
    """

    kind: Literal["multi_overlap"]
    source: Literal["interactions"]
    field: Name
    separator: str = Field("|", min_length=1, max_length=4)
    events: list[InteractionType] = Field(default=["click"], min_length=1)
    combine: Literal["max", "mean", "sum"] = "mean"
    max_values: int = Field(32, ge=1, le=1024, description="values kept per user")


class UserItemFeature(_Feature):
    """How often the requesting user did one of ``events`` with each candidate before.

    0 for an item the user never touched (missing only for an anonymous request): a shop
    ranks what a user already bought differently from what they have not seen. At most
    ``max_items`` items are kept per user; past that, the least frequent one makes room.
    """

    kind: Literal["user_item"]
    source: Literal["interactions"]
    events: list[InteractionType] = Field(default=["purchase"], min_length=1)
    max_items: int = Field(1024, ge=1, le=1 << 16, description="items kept per user")


class CosineFeature(_Feature):
    """Cosine of a user's :class:`EmbeddingMeanFeature` (named) and each item's vector."""

    kind: Literal["cosine"]
    source: Literal["interactions"]
    embedding: Name


class RequestFeature(_Feature):
    """A value the request carries per candidate (first-stage score, cross-encoder...)."""

    kind: Literal["request"]
    source: Literal["request"]
    value: RequestValue


class RelativeToListFeature(_Feature):
    """An item's number over the median of the list's (its first ``top_n``) values."""

    kind: Literal["relative_to_list"]
    source: Literal["items"]
    field: Name
    top_n: int | None = Field(None, ge=1)


FEATURE_KINDS: dict[str, type[_Feature]] = {
    "field": FieldFeature,
    "age": AgeFeature,
    "counter": CounterFeature,
    "rate": RateFeature,
    "decayed_popularity": DecayedPopularityFeature,
    "embedding_mean": EmbeddingMeanFeature,
    "overlap": OverlapFeature,
    "multi_overlap": MultiOverlapFeature,
    "user_item": UserItemFeature,
    "cosine": CosineFeature,
    "request": RequestFeature,
    "relative_to_list": RelativeToListFeature,
}

Feature = Annotated[
    FieldFeature
    | AgeFeature
    | CounterFeature
    | RateFeature
    | DecayedPopularityFeature
    | EmbeddingMeanFeature
    | OverlapFeature
    | MultiOverlapFeature
    | UserItemFeature
    | CosineFeature
    | RequestFeature
    | RelativeToListFeature,
    Field(discriminator="kind"),
]
SOURCES = ("items", "users", "interactions", "request")
# The field types each kind may read: a typo or a wrong type is refused at load.
_FIELD_TYPES = {
    "field": ("number", "category"),
    "age": ("time",),
    "overlap": ("category",),
    "multi_overlap": ("category",),
    "relative_to_list": ("number",),
}


class FeatureSet(BaseModel):
    """Every feature, in column order, and the item and user fields events may carry."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    item_fields: dict[Name, FieldType] = Field(default_factory=lambda: dict(DEFAULT_ITEM_FIELDS))
    user_fields: dict[Name, FieldType] = Field(default_factory=lambda: dict(DEFAULT_USER_FIELDS))
    features: list[Feature] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> FeatureSet:
        # FeatureConfigError is not a ValueError, so it leaves pydantic as it is raised.
        seen: set[str] = set()
        for index, feature in enumerate(self.features, 1):
            where = f"feature {index} ({feature.name!r})"
            clash = [column for column in feature.columns if column in seen]
            if clash:
                raise FeatureConfigError(f"{where}: column {clash[0]!r} is declared twice")
            seen.update(feature.columns)
            self._check_field(feature, where)
            self._check_embedding(feature, where)
        return self

    def _check_field(self, feature: _Feature, where: str) -> None:
        kind = getattr(feature, "kind", "")
        if kind not in _FIELD_TYPES:
            return
        source = getattr(feature, "source", "items")
        fields = self.user_fields if source == "users" else self.item_fields
        name = getattr(feature, "field", "")
        declared = "user_fields" if source == "users" else "item_fields"
        if name not in fields:
            known = ", ".join(sorted(fields)) or "none"
            raise FeatureConfigError(
                f"{where}: unknown field {name!r} of source {source!r} (known: {known}); "
                f"fix the name or declare it in {declared}"
            )
        allowed = _FIELD_TYPES[kind]
        if fields[name] not in allowed:
            raise FeatureConfigError(
                f"{where}: kind {kind!r} reads a {' or '.join(allowed)} field, but {name!r} "
                f"is declared as {fields[name]!r} in {declared}"
            )

    def _check_embedding(self, feature: _Feature, where: str) -> None:
        if not isinstance(feature, CosineFeature):
            return
        embeddings = [f.name for f in self.features if isinstance(f, EmbeddingMeanFeature)]
        if feature.embedding not in embeddings:
            known = ", ".join(embeddings) or "none declared"
            raise FeatureConfigError(
                f"{where}: embedding {feature.embedding!r} is not an embedding_mean feature "
                f"(those: {known})"
            )

    @field_validator("features")
    @classmethod
    def _names_unique(cls, features: list[_Feature]) -> list[_Feature]:
        names = [feature.name for feature in features]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise FeatureConfigError(f"feature names must be unique; declared twice: {twice}")
        return features

    @property
    def columns(self) -> list[str]:
        """The matrix's column names, in declared order."""
        return [column for feature in self.features for column in feature.columns]

    @property
    def defaults(self) -> list[float]:
        """Each column's declared default, in column order."""
        return [f.default for f in self.features for _ in f.columns]

    @property
    def max_window_days(self) -> int:
        """The longest counter or rate window: how many day buckets a counter keeps."""
        windows = [w for f in self.features for w in getattr(f, "windows", ())]
        return max(windows, default=1)

    @property
    def digest(self) -> str:
        """The first 16 hex digits of the sha256 of the config's canonical JSON: its identity.

        Two configs with the same digest compute the same columns the same way, so a logged
        feature vector and a model trained on it name the feature set they belong to.
        """
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureSet:
        """Validate a config read from TOML, JSON or code; :class:`FeatureConfigError` if bad."""
        if not isinstance(data, Mapping):
            raise FeatureConfigError("a feature config is a table with a 'features' list")
        unknown = sorted(set(data) - set(cls.model_fields))
        if unknown:
            raise FeatureConfigError(
                f"unknown key {unknown[0]!r} in the feature config; its keys are "
                f"{', '.join(cls.model_fields)}"
            )
        entries = data.get("features")
        if not isinstance(entries, list) or not entries:
            raise FeatureConfigError("the feature config needs a non-empty 'features' list")
        features = [_parse_entry(index, entry) for index, entry in enumerate(entries, 1)]
        try:
            return cls(**{**data, "features": features})
        except ValidationError as error:
            raise FeatureConfigError(_describe(error, "the feature config")) from None


def _parse_entry(index: int, entry: Any) -> _Feature:
    """One declaration, checked in the order a reader would fix it: kind, source, the rest."""
    if not isinstance(entry, Mapping):
        raise FeatureConfigError(f"feature {index}: expected a table of settings, got {entry!r}")
    where = f"feature {index} ({entry.get('name', '<unnamed>')!r})"
    kind = entry.get("kind")
    if kind not in FEATURE_KINDS:
        raise FeatureConfigError(
            f"{where}: unknown kind {kind!r}; kinds are {', '.join(FEATURE_KINDS)}"
        )
    model = FEATURE_KINDS[kind]
    source = entry.get("source")
    allowed = model.model_fields["source"].annotation.__args__  # type: ignore[union-attr]
    if source not in SOURCES:
        raise FeatureConfigError(
            f"{where}: unknown source {source!r}; sources are {', '.join(SOURCES)} "
            f"(kind {kind!r} is fed from {' or '.join(allowed)})"
        )
    if source not in allowed:
        raise FeatureConfigError(
            f"{where}: kind {kind!r} is fed from source {' or '.join(map(repr, allowed))}, "
            f'not {source!r}; set source = "{allowed[0]}"'
        )
    try:
        return model.model_validate(dict(entry))
    except ValidationError as error:
        raise FeatureConfigError(_describe(error, where, model)) from None


def _describe(error: ValidationError, where: str, model: type[BaseModel] | None = None) -> str:
    """pydantic's first complaint, said about the entry and naming the settings it takes."""
    first = error.errors()[0]
    place = ".".join(str(part) for part in first["loc"]) or "value"
    message = f"{where}: {place}: {first['msg']}"
    if first["type"] == "extra_forbidden" and model is not None:
        message += f" (this kind takes: {', '.join(model.model_fields)})"
    elif first["type"] == "missing" and place == "default":
        message += ' (say what stands in for a missing value, e.g. default = 0 or "nan")'
    return message

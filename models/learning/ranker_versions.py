"""A final ranker as a registry version: its model and its feature set, stored as artifacts.

A version that carries a final ranker names two signed artifacts in ``final_ranker``:
``model``, LightGBM's text model exactly as trained, and ``features``, the
:class:`~streamrank.models.features.config.FeatureSet` it reads, as canonical JSON. Both are
stored by content (the registry's artifacts are keyed by their sha256 and signed), so a worker
that loads the version gets exactly the model and the columns it was trained with, and a
model is never paired with another feature set by name.

"""

from __future__ import annotations

import json
from typing import Any

from streamrank.models.features.config import FeatureSet
from streamrank.models.learning.lambdamart import FinalRanker
from streamrank.models.registry import ModelRegistry, RegistryError, Version


def feature_set_bytes(features: FeatureSet) -> bytes:
    """The feature set as canonical JSON: the same config always gives the same bytes."""
    return json.dumps(features.model_dump(mode="json"), sort_keys=True).encode()


def register_final_ranker(
    registry: ModelRegistry, ranker: FinalRanker, features: FeatureSet, **fields: Any
) -> Version:
    """Store ``ranker`` and ``features`` as artifacts and register a version that serves them.

    ``fields`` are the other :class:`~streamrank.models.registry.Version` fields (``pipeline``
    is required; ``parent``, ``training_events``, ``metrics``, ``notes``...). Refuses a model
    whose feature names are not the feature set's columns.
    """
    if list(ranker.feature_names) != features.columns:
        raise ValueError(
            f"the model reads {len(ranker.feature_names)} features, not the feature set's "
            f"{len(features.columns)} columns in order"
        )
    model = registry.put_artifact(ranker.model_text.encode("utf-8"))
    config = registry.put_artifact(feature_set_bytes(features))
    return registry.register(final_ranker={"model": model, "features": config}, **fields)


def load_final_ranker(
    registry: ModelRegistry, version: str
) -> tuple[FinalRanker, FeatureSet] | None:
    """The version's final ranker and feature set, verified; None when it has none.

    Raises :class:`~streamrank.models.registry.RegistryError` when an artifact is missing or
    does not verify, or when the model does not read the feature set's columns.
    """
    final = registry.get(version).final_ranker
    if not final:
        return None
    features = FeatureSet.from_dict(json.loads(registry.get_artifact(final["features"])))
    ranker = FinalRanker(
        registry.get_artifact(final["model"]).decode("utf-8"), tuple(features.columns)
    )
    names = ranker.booster.feature_name()
    if list(names) != features.columns:
        raise RegistryError(
            f"version {version}: the model's features are not its feature set's columns"
        )
    return ranker, features

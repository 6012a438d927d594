"""The feature store's library half: declarations, extractors and the feature matrix.

One readable config (:mod:`.config`, the default in :mod:`.defaults`) declares every feature;
:class:`~.learn.FeatureLearner` folds item, user and interaction events into a
:class:`~.state.FeatureState`; :class:`~.vector.FeatureVector` turns a request's candidates
into a float32 matrix with the declared default wherever a value is missing. The same code
runs offline (:func:`~.replay.point_in_time` replays events in time order into a
:class:`~.state.MemoryState`) and online (a Redis-backed state fed by the agents), so training
and serving cannot disagree about a feature or about what "missing" becomes.

Like every sub-package of ``streamrank.models``, importing this one loads none of its modules:
each name of ``__all__`` is imported from its module on first use (PEP 562).
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "DEFAULT_FEATURES": "defaults",
    "default_features": "defaults",
    "FeatureConfigError": "config",
    "FeatureSet": "config",
    "FeatureLearner": "learn",
    "FeatureRequest": "events",
    "InteractionEvent": "events",
    "ItemEvent": "events",
    "UserEvent": "events",
    "FeatureState": "state",
    "MemoryReport": "state",
    "MemoryState": "state",
    "FeatureVector": "vector",
    "point_in_time": "replay",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

"""The feature matrix: one code path from state to model input, for training and serving.

:meth:`FeatureVector.matrix` computes every declared feature for a request's candidates and
returns a float32 matrix (rows = candidates, columns =
:attr:`~streamrank.models.features.config.FeatureSet.columns`). Wherever a value is missing
(NaN, or not finite) the declared default takes its place here and nowhere else, so a missing
value reads the same at training and at serving by construction. A default of NaN is kept as
NaN, which LightGBM treats as missing natively.

Examples
--------
>>> from streamrank.models.features.config import FeatureSet
>>> from streamrank.models.features.events import FeatureRequest
>>> from streamrank.models.features.state import MemoryState
>>> features = FeatureSet.from_dict({"features": [
...     {"name": "price", "kind": "field", "source": "items", "field": "price", "default": -1},
...     {"name": "score", "kind": "request", "source": "request", "value": "first_stage_score",
...      "default": "nan"},
... ]})
>>> state = MemoryState()
>>> state.update_hash("item|d1", {"price": 20.0})
>>> FeatureVector(features, state).matrix(FeatureRequest(["d1", "d2"], now=0.0))
array([[20., nan],
       [-1., nan]], dtype=float32)
"""

from __future__ import annotations

import numpy as np

from streamrank.models.features.config import FeatureSet
from streamrank.models.features.events import FeatureRequest
from streamrank.models.features.extractors import EXTRACTORS
from streamrank.models.features.lookup import ReadPlan, StateLookup
from streamrank.models.features.state import FeatureState


class FeatureVector:
    """Assembles the declared features of a request's candidates from a feature state.

    Parameters
    ----------
    features
        The declarations; their columns, in order, are the matrix's.
    state
        Where the learnt state lives: a :class:`~.state.MemoryState` offline, Redis online.
    prefetch
        Read everything the features are known to need as one batch before computing
        (:meth:`~.lookup.StateLookup.prefetch`: one Redis round trip, two with category
        counters); False reads each part on first use, as a benchmark's baseline.
    """

    def __init__(self, features: FeatureSet, state: FeatureState, prefetch: bool = True) -> None:
        self.features = features
        self.state = state
        self.prefetch = prefetch
        self.columns = features.columns
        self.defaults = np.array(features.defaults, dtype=np.float32)
        self._plan = ReadPlan.for_features(features)
        self._widths = [len(feature.columns) for feature in features.features]

    def matrix(self, request: FeatureRequest) -> np.ndarray:
        """Features of ``request``'s candidates at ``request.now``, shaped (candidates, columns)."""
        lookup = StateLookup(request, self.state, self._plan)
        if self.prefetch:
            lookup.prefetch()
        values = np.empty((request.size, len(self.columns)), dtype=np.float64)
        start = 0
        for feature, width in zip(self.features.features, self._widths, strict=True):
            block = EXTRACTORS[feature.kind](feature, lookup)
            values[:, start : start + width] = block.reshape(request.size, width)
            start += width
        return fill_missing(values.astype(np.float32), self.defaults)


def fill_missing(values: np.ndarray, defaults: np.ndarray) -> np.ndarray:
    """``values`` with each column's default wherever a value is not finite.

    Examples
    --------
    >>> fill_missing(np.array([[1.0, np.nan], [np.inf, 2.0]], np.float32),
    ...              np.array([0.0, np.nan], np.float32))
    array([[ 1., nan],
           [ 0.,  2.]], dtype=float32)
    """
    with np.errstate(over="ignore"):
        return np.where(np.isfinite(values), values, defaults).astype(np.float32, copy=False)

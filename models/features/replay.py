"""Point-in-time training data: replay logged events in time order, featurise each request.

Each request's features are computed after every event up to and including its time and
before any later one, with the same :class:`~.vector.FeatureVector` the server runs, so a
training row never sees the future (its own later clicks included) and never differs from
what serving would have computed.

Examples
--------
>>> from streamrank.models.features.config import FeatureSet
>>> from streamrank.models.features.events import FeatureRequest, InteractionEvent
>>> features = FeatureSet.from_dict({"features": [{"name": "clicks", "kind": "counter",
...     "source": "interactions", "event": "click", "scope": "item", "windows": [7],
...     "default": 0}]})
>>> events = [InteractionEvent("click", "d1", t) for t in (10.0, 20.0, 30.0)]
>>> rows = point_in_time(features, events, [FeatureRequest(["d1"], now=25.0)])
>>> [(request.now, matrix.tolist()) for request, matrix in rows]
[(25.0, [[2.0]])]
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from streamrank.models.features.config import FeatureSet
from streamrank.models.features.events import Event, FeatureRequest
from streamrank.models.features.learn import FeatureLearner
from streamrank.models.features.state import FeatureState, MemoryState
from streamrank.models.features.vector import FeatureVector


def point_in_time(
    features: FeatureSet,
    events: Iterable[Event],
    requests: Iterable[FeatureRequest],
    state: FeatureState | None = None,
) -> Iterator[tuple[FeatureRequest, np.ndarray]]:
    """Each request with its feature matrix as of its time, in time order.

    An event at exactly a request's time counts for it (events with ``timestamp <= now``).
    ``state`` defaults to a fresh :class:`~.state.MemoryState` keeping the longest window.
    """
    if state is None:
        state = MemoryState(days=features.max_window_days)
    learner = FeatureLearner(features, state)
    vector = FeatureVector(features, state)
    timeline: list[tuple[float, int, int, Event | FeatureRequest]] = [
        (float(event.timestamp), 0, order, event) for order, event in enumerate(events)
    ]
    timeline += [(float(r.now), 1, order, r) for order, r in enumerate(requests)]
    timeline.sort(key=lambda entry: entry[:3])
    for _, is_request, _, item in timeline:
        if is_request:
            yield item, vector.matrix(item)  # type: ignore[arg-type]
        else:
            learner.learn_one(item)  # type: ignore[arg-type]

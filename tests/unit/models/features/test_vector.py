"""The feature matrix: declared order, declared defaults, point-in-time replay."""

from __future__ import annotations

import math

import numpy as np

from streamrank.models.features.config import FeatureSet
from streamrank.models.features.defaults import DEFAULT_FEATURES, default_features
from streamrank.models.features.events import DAY_S, FeatureRequest, InteractionEvent, ItemEvent
from streamrank.models.features.learn import FeatureLearner
from streamrank.models.features.replay import point_in_time
from streamrank.models.features.state import MemoryState
from streamrank.models.features.vector import FeatureVector

T0 = 2_000 * DAY_S


def busy_state(features: FeatureSet) -> MemoryState:
    """A store that saw items (some without fields or vectors), users and interactions."""
    state = MemoryState(days=features.max_window_days)
    learner = FeatureLearner(features, state)
    rng = np.random.default_rng(0)
    for i in range(20):
        fields = {"price": float(10 + i), "category": f"c{i % 3}", "brand": f"b{i % 4}"}
        vector = rng.standard_normal(8) if i % 2 else None
        learner.learn_one(ItemEvent(f"d{i}", T0, fields if i % 5 else {}, vector))
    for t in range(300):
        kind = ("impression", "click", "add_to_cart", "purchase")[t % 4]
        event = InteractionEvent(kind, f"d{t % 20}", T0 + t, user_id="u", query="q", session_id="s")
        learner.learn_one(event)
    return state


def test_missing_values_become_the_declared_default_and_nan_only_by_declaration() -> None:
    features = default_features()
    state = busy_state(features)
    request = FeatureRequest(
        [f"d{i}" for i in range(20)] + ["unknown"],
        now=T0 + 400,
        query="q",
        user_id="u",
        values={"first_stage_score": np.linspace(1, 0, 21)},
    )
    matrix = FeatureVector(features, state).matrix(request)
    assert matrix.shape == (21, len(features.columns)) and matrix.dtype == np.float32
    for column, default in enumerate(features.defaults):
        if not math.isnan(default):
            assert not np.isnan(matrix[:, column]).any(), features.columns[column]
    unknown = dict(zip(features.columns, matrix[-1].tolist(), strict=True))
    assert unknown["promoted"] == 0.0 and unknown["in_stock"] == 1.0  # declared defaults
    assert math.isnan(unknown["price"]) and math.isnan(unknown["ce"])
    assert unknown["item_clicks_30d"] == 0.0  # no history is a count of 0, not missing


def test_the_same_missing_value_reads_the_same_at_training_and_serving() -> None:
    entries = [dict(entry) for entry in DEFAULT_FEATURES["features"]]
    for entry in entries:
        entry["default"] = -7.0  # no NaN default: nothing may stay missing
    features = FeatureSet.from_dict({"features": entries})
    state = busy_state(features)
    request = FeatureRequest(["d0", "d5", "unknown"], now=T0 + 400)  # anonymous, no query
    serving = FeatureVector(features, state).matrix(request)
    assert np.isfinite(serving).all()
    ((_, fresh),) = point_in_time(features, [], [request], state=state)
    np.testing.assert_array_equal(serving, fresh)
    by_name = dict(zip(features.columns, serving[2].tolist(), strict=True))
    for name in ("price", "category", "age_days", "ce", "purchase_affinity", "user_sessions_7d"):
        assert by_name[name] == -7.0, name


def test_features_at_time_t_ignore_later_events() -> None:
    features = default_features()
    events = [ItemEvent("d1", T0, {"price": 5.0, "category": "c"})]
    events += [
        InteractionEvent("click", "d1", T0 + day * DAY_S + 1, user_id="u") for day in range(6)
    ]
    events += [InteractionEvent("purchase", "d1", T0 + 3 * DAY_S + 1, user_id="u")]
    events.append(ItemEvent("d1", T0 + 4 * DAY_S, {"price": 500.0}))
    requests = [FeatureRequest(["d1"], now=T0 + 3 * DAY_S, user_id="u")]
    ((_, replayed),) = point_in_time(features, reversed(events), requests)
    # The same features from only the events up to t: the later ones changed nothing.
    state = MemoryState(days=features.max_window_days)
    learner = FeatureLearner(features, state)
    for event in events:
        if event.timestamp <= requests[0].now:
            learner.learn_one(event)
    prefix = FeatureVector(features, state).matrix(requests[0])
    np.testing.assert_array_equal(replayed, prefix)
    by_name = dict(zip(features.columns, replayed[0].tolist(), strict=True))
    assert by_name["item_clicks_7d"] == 3.0 and by_name["item_purchases_7d"] == 0.0
    assert by_name["price"] == 5.0


def test_columns_follow_the_declared_order() -> None:
    entries = [
        {"name": "b", "kind": "request", "source": "request", "value": "ce", "default": 2.0},
        {"name": "a", "kind": "request", "source": "request", "value": "dense", "default": 1.0},
    ]
    vector = FeatureVector(FeatureSet.from_dict({"features": entries}), MemoryState())
    assert vector.columns == ["b", "a"]
    request = FeatureRequest(["x"], now=0.0, values={"dense": [0.25]})
    assert vector.matrix(request).tolist() == [[2.0, 0.25]]
    assert vector.matrix(FeatureRequest([], now=0.0)).shape == (0, 2)

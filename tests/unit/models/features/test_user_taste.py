"""The user-taste kinds: ``multi_overlap`` (shares over an item's several categories) and
``user_item`` (how often the user already did something with the candidate)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from streamrank.models.features.config import FeatureConfigError, FeatureSet
from streamrank.models.features.events import FeatureRequest, InteractionEvent, ItemEvent
from streamrank.models.features.learn import MULTI_TOTAL, FeatureLearner
from streamrank.models.features.replay import point_in_time
from streamrank.models.features.state import MemoryState
from streamrank.models.features.vector import FeatureVector

NAN = float("nan")


def taste(combine: str = "max", **changes: Any) -> dict[str, Any]:
    entry = {
        "name": f"genres_{combine}",
        "kind": "multi_overlap",
        "source": "interactions",
        "field": "categories",
        "events": ["purchase"],
        "combine": combine,
        "default": NAN,
    }
    return {**entry, **changes}


SEEN = {"name": "seen", "kind": "user_item", "source": "interactions", "events": ["click"]}
ITEMS = [
    ItemEvent("a", 0.0, {"categories": "Comedy|Drama"}),
    ItemEvent("b", 0.0, {"categories": "Drama"}),
    ItemEvent("c", 0.0, {"categories": "Horror|Comedy"}),
]
HISTORY = [
    InteractionEvent("click", "a", 1.0, "u"),
    InteractionEvent("purchase", "a", 1.0, "u"),
    InteractionEvent("purchase", "b", 2.0, "u"),
]


def matrix(entries: list[dict[str, Any]], request: FeatureRequest) -> np.ndarray:
    features = FeatureSet.from_dict({"features": entries})
    [(_, rows)] = point_in_time(features, [*ITEMS, *HISTORY], [request])
    return rows


def test_shares_count_events_and_combine_over_the_items_values() -> None:
    # u bought a (Comedy, Drama) and b (Drama): Drama 2/2, Comedy 1/2, Horror 0/2.
    request = FeatureRequest(["a", "b", "c", "unknown"], now=5.0, user_id="u")
    rows = matrix([taste("max"), taste("mean"), taste("sum")], request)
    np.testing.assert_allclose(rows[:3], [[1.0, 0.75, 1.5], [1.0, 1.0, 1.0], [0.5, 0.25, 0.5]])
    assert np.isnan(rows[3]).all()  # an item without the field is missing, not 0


def test_no_history_or_no_user_is_missing_and_the_default_stands_in() -> None:
    for user in ("stranger", None):
        rows = matrix([taste(default=-1.0)], FeatureRequest(["a"], now=5.0, user_id=user))
        assert rows.tolist() == [[-1.0]]


def test_a_user_item_count_is_zero_for_unseen_items_and_missing_when_anonymous() -> None:
    request = FeatureRequest(["a", "b"], now=5.0, user_id="u")
    assert matrix([{**SEEN, "default": NAN}], request).tolist() == [[1.0], [0.0]]
    stranger = FeatureRequest(["a"], now=5.0, user_id="v")
    assert matrix([{**SEEN, "default": NAN}], stranger).tolist() == [[0.0]]
    anonymous = FeatureRequest(["a"], now=5.0)
    assert math.isnan(matrix([{**SEEN, "default": NAN}], anonymous)[0, 0])


def test_the_features_see_only_events_before_the_request() -> None:
    early = FeatureRequest(["a", "b"], now=1.5, user_id="u")
    rows = matrix([taste("max"), {**SEEN, "default": NAN}], early)
    # At 1.5 only a was bought: both its genres have share 1, b's Drama too.
    assert rows.tolist() == [[1.0, 1.0], [1.0, 0.0]]


def test_the_stored_values_stay_bounded_per_user() -> None:
    features = FeatureSet.from_dict(
        {"features": [taste("max", max_values=2), {**SEEN, "max_items": 2, "default": NAN}]}
    )
    state = MemoryState(days=1)
    learner = FeatureLearner(features, state)
    for event in [*ITEMS, *HISTORY, InteractionEvent("purchase", "c", 3.0, "u")]:
        learner.learn_one(event)
    for doc_id in ("b", "c"):
        learner.learn_one(InteractionEvent("click", doc_id, 4.0, "u"))
    genres = state.get_hashes(["user:overlap:genres_max|u"])[0] or {}
    assert len(genres) == 3 and genres[MULTI_TOTAL] == 3.0  # two values and the total
    seen = state.get_hashes(["user:overlap:seen|u"])[0] or {}
    assert len(seen) == 2
    rows = FeatureVector(features, state).matrix(FeatureRequest(["c"], now=5.0, user_id="u"))
    assert rows.shape == (1, 2)


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        (taste(field="genres"), ["unknown field 'genres'", "categories"]),
        (taste(field="price"), ["'price' is declared as 'number'"]),
        (taste(combine="median"), ["combine", "'max'"]),
        (taste(separator=""), ["separator"]),
        ({**SEEN, "events": [], "default": 0}, ["events"]),
        ({**SEEN, "source": "items", "default": 0}, ['set source = "interactions"']),
    ],
)
def test_bad_declarations_say_what_to_fix(entry: dict[str, Any], says: list[str]) -> None:
    with pytest.raises(FeatureConfigError) as caught:
        FeatureSet.from_dict({"features": [entry]})
    for part in says:
        assert part in str(caught.value)

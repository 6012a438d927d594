"""Feature declarations: the default config loads, and a bad one says what to fix."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import pytest

from streamrank.models.features.config import EventType, FeatureConfigError, FeatureSet
from streamrank.models.features.defaults import DEFAULT_FEATURES, default_features
from streamrank.models.features.events import COUNTED_EVENTS, REQUEST_VALUES

DOCS = Path(__file__).resolve().parents[4] / "docs" / "features.md"


def counter(**changes: Any) -> dict[str, Any]:
    entry = {
        "name": "clicks",
        "kind": "counter",
        "source": "interactions",
        "event": "click",
        "scope": "item",
        "windows": [7],
        "default": 0,
    }
    return {**entry, **changes}


def error_of(*entries: dict[str, Any], **top: Any) -> str:
    with pytest.raises(FeatureConfigError) as caught:
        FeatureSet.from_dict({"features": list(entries), **top})
    return str(caught.value)


def test_the_default_config_covers_the_issue_list() -> None:
    features = default_features()
    columns = set(features.columns)
    for wanted in ("price", "category", "brand", "stock", "in_stock", "promoted", "age_days"):
        assert wanted in columns
    for scope in ("item", "query_item", "category"):
        for event in ("impressions", "clicks", "add_to_carts", "purchases"):
            assert {f"{scope}_{event}_7d", f"{scope}_{event}_30d"} <= columns
    assert {"item_ctr_30d", "item_conversion_30d", "popularity", "purchase_history"} <= columns
    assert {"user_category_clicks", "user_brand_clicks", "user_sessions_30d"} <= columns
    assert set(REQUEST_VALUES) | {"purchase_affinity", "price_vs_list"} <= columns
    assert len(features.columns) == len(set(features.columns)) == len(features.defaults)


def test_the_default_config_reads_every_category_of_an_item_and_what_the_user_saw() -> None:
    features = default_features()
    assert features.item_fields["categories"] == "category"
    kinds = {f.name: f.kind for f in features.features}
    assert kinds["user_item_clicks"] == "user_item"
    assert kinds["user_categories_purchased_max"] == "multi_overlap"


def test_the_docs_show_every_default_feature() -> None:
    text = DOCS.read_text()
    for entry in DEFAULT_FEATURES["features"]:
        assert f"`{entry['name']}`" in text, entry["name"]


def test_event_types_match_what_the_learner_counts() -> None:
    assert typing.get_args(EventType) == COUNTED_EVENTS


def test_counter_and_rate_fill_one_column_per_window() -> None:
    features = FeatureSet.from_dict({"features": [counter(windows=[1, 7, 30])]})
    assert features.columns == ["clicks_1d", "clicks_7d", "clicks_30d"]
    assert features.max_window_days == 30


def test_nan_default_is_allowed_as_text_or_float() -> None:
    features = FeatureSet.from_dict({"features": [counter(default="nan")]})
    assert features.defaults[0] != features.defaults[0]


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        (counter(kind="countr"), ["unknown kind 'countr'", "counter"]),
        (counter(source="clicks"), ["unknown source 'clicks'", "interactions"]),
        (counter(source="items"), ["source 'interactions'", 'set source = "interactions"']),
        (counter(event="clik"), ["event", "'click'"]),
        (counter(scope="shop"), ["scope", "'query_item'"]),
        (counter(windows=[0]), ["windows", "greater than or equal to 1"]),
        (counter(windw=[7]), ["windw", "this kind takes", "windows"]),
        (counter(event="session"), ['scope = "user"']),
        ({k: v for k, v in counter().items() if k != "default"}, ["default", "missing value"]),
        (counter(name="Clicks"), ["name", "pattern"]),
    ],
)
def test_a_bad_entry_names_its_fault_and_the_fix(entry: dict[str, Any], says: list[str]) -> None:
    message = error_of(entry)
    assert message.startswith("feature 1 (")
    for part in says:
        assert part in message


def test_an_unknown_field_is_refused_with_the_known_ones() -> None:
    entry = {"name": "p", "kind": "field", "source": "items", "field": "prise", "default": 0}
    message = error_of(entry)
    assert "unknown field 'prise'" in message and "price" in message
    assert "item_fields" in message


def test_a_declared_field_becomes_usable() -> None:
    entry = {"name": "rating", "kind": "field", "source": "items", "field": "rating", "default": 0}
    features = FeatureSet.from_dict({"features": [entry], "item_fields": {"rating": "number"}})
    assert features.columns == ["rating"]


def test_a_field_of_the_wrong_type_is_refused() -> None:
    entry = {"name": "a", "kind": "age", "source": "items", "field": "price", "default": 0}
    assert "'price' is declared as 'number'" in error_of(entry)


def test_duplicate_names_and_columns_are_refused() -> None:
    assert "declared twice: ['clicks']" in error_of(counter(), counter())
    entry = {"name": "clicks_7d", "kind": "request", "source": "request", "value": "ce"}
    assert "column 'clicks_7d' is declared twice" in error_of(counter(), {**entry, "default": 0})


def test_a_cosine_needs_a_declared_embedding() -> None:
    entry = {"name": "c", "kind": "cosine", "source": "interactions", "embedding": "history"}
    assert "embedding 'history' is not an embedding_mean feature" in error_of(
        {**entry, "default": 0}
    )


def test_unknown_top_level_keys_and_empty_configs_are_refused() -> None:
    assert "unknown key 'featurs'" in error_of(featurs=[])
    with pytest.raises(FeatureConfigError, match="non-empty 'features'"):
        FeatureSet.from_dict({"features": []})

"""The default feature config: the issue's feature list, one entry per feature.

:data:`DEFAULT_FEATURES` is plain data, the same shape a TOML or JSON file takes (and the
example of ``docs/features.md``); :func:`default_features` validates it. Counters and rates
fill one column per window, named ``<name>_<window>d``.

Examples
--------
>>> features = default_features()
>>> features.columns[:3]
['price', 'category', 'brand']
>>> features.max_window_days
30
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from streamrank.models.features.config import FeatureSet

NAN = float("nan")
WINDOWS = [7, 30]


def _counters(scope: str, prefix: str) -> list[dict[str, Any]]:
    """Impressions, clicks, add-to-carts and purchases of one scope over 7 and 30 days."""
    return [
        {
            "name": f"{prefix}_{event}s",
            "kind": "counter",
            "source": "interactions",
            "event": event,
            "scope": scope,
            "windows": WINDOWS,
            "default": NAN if scope != "item" else 0.0,
        }
        for event in ("impression", "click", "add_to_cart", "purchase")
    ]


def _rate(name: str, numerator: str, denominator: str, scope: str) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "rate",
        "source": "interactions",
        "numerator": numerator,
        "denominator": denominator,
        "scope": scope,
        "windows": [30],
        "weight": 10.0,
        "default": NAN,
    }


def _categories(name: str, event: str, combine: str) -> dict[str, Any]:
    """The user's share of ``event``s in each of the candidate's categories, combined."""
    return {
        "name": name,
        "kind": "multi_overlap",
        "source": "interactions",
        "field": "categories",
        "events": [event],
        "combine": combine,
        "default": NAN,
    }


ITEM = [
    {"name": "price", "kind": "field", "source": "items", "field": "price", "default": NAN},
    {"name": "category", "kind": "field", "source": "items", "field": "category", "default": NAN},
    {"name": "brand", "kind": "field", "source": "items", "field": "brand", "default": NAN},
    {"name": "stock", "kind": "field", "source": "items", "field": "stock", "default": NAN},
    {"name": "in_stock", "kind": "field", "source": "items", "field": "in_stock", "default": 1.0},
    {"name": "promoted", "kind": "field", "source": "items", "field": "promoted", "default": 0.0},
    {"name": "age_days", "kind": "age", "source": "items", "field": "created", "default": NAN},
]

INTERACTIONS = [
    *_counters("item", "item"),
    *_counters("query_item", "query_item"),
    *_counters("category", "category"),
    _rate("item_ctr", "click", "impression", "item"),
    _rate("item_conversion", "purchase", "click", "item"),
    _rate("query_item_ctr", "click", "impression", "query_item"),
    _rate("category_ctr", "click", "impression", "category"),
    _rate("category_conversion", "purchase", "click", "category"),
    {
        "name": "popularity",
        "kind": "decayed_popularity",
        "source": "interactions",
        "weights": {"click": 1.0, "add_to_cart": 3.0, "purchase": 10.0},
        "half_life_days": 7.0,
        "default": 0.0,
    },
]

USER = [
    {
        "name": "purchase_history",
        "kind": "embedding_mean",
        "source": "interactions",
        "event": "purchase",
        "half_life_days": 30.0,
        "default": NAN,
    },
    {
        "name": "user_category_clicks",
        "kind": "overlap",
        "source": "interactions",
        "field": "category",
        "events": ["click"],
        "default": NAN,
    },
    {
        "name": "user_brand_clicks",
        "kind": "overlap",
        "source": "interactions",
        "field": "brand",
        "events": ["click"],
        "default": NAN,
    },
    _categories("user_categories_purchased_max", "purchase", "max"),
    _categories("user_categories_purchased_mean", "purchase", "mean"),
    _categories("user_categories_clicked_max", "click", "max"),
    {
        "name": "user_item_clicks",
        "kind": "user_item",
        "source": "interactions",
        "events": ["click"],
        "default": NAN,
    },
    {
        "name": "user_sessions",
        "kind": "counter",
        "source": "interactions",
        "event": "session",
        "scope": "user",
        "windows": WINDOWS,
        "default": NAN,
    },
]

QUERY_ITEM = [
    {"name": value, "kind": "request", "source": "request", "value": value, "default": NAN}
    for value in ("first_stage_score", "first_stage_rank", "dense", "student", "ce")
] + [
    {
        "name": "purchase_affinity",
        "kind": "cosine",
        "source": "interactions",
        "embedding": "purchase_history",
        "default": NAN,
    },
    {
        "name": "price_vs_list",
        "kind": "relative_to_list",
        "source": "items",
        "field": "price",
        "top_n": 100,
        "default": NAN,
    },
]

DEFAULT_FEATURES: dict[str, Any] = {"features": [*ITEM, *INTERACTIONS, *USER, *QUERY_ITEM]}
"""The default config as data: item fields, interaction counters, user and query x item."""


@lru_cache(maxsize=1)
def default_features() -> FeatureSet:
    """:data:`DEFAULT_FEATURES`, validated."""
    return FeatureSet.from_dict(DEFAULT_FEATURES)

"""The demo's shop phase: whom it shows, on a tiny shop (no services)."""

from __future__ import annotations

import numpy as np

from streamrank.models.assets.movielens import Item, MovieLens, Rating, User
from streamrank.models.evaluation.shop import Product, Shop, ShopQuery
from streamrank.models.evaluation.shop_eval import Search
from streamrank.models.features.events import FeatureRequest
from streamrank.streams.shop_demo import first_users, pick, top_genres

MOVIES = [
    Item("m1", "Heat", 1995, ("Action", "Crime"), "Heat"),
    Item("m2", "Emma", 1996, ("Comedy", "Romance"), "Emma"),
    Item("m3", "Fargo", 1996, ("Crime", "Drama"), "Fargo"),
]
RATINGS = [
    Rating("1", "m1", 5, 10),
    Rating("1", "m3", 4, 11),
    Rating("2", "m2", 5, 12),
    Rating("2", "m2", 2, 13),
    Rating("10", "m1", 5, 14),
]


def data() -> MovieLens:
    users = [User(u, 30, "F", "other", "00000") for u in ("1", "2", "10")]
    return MovieLens(MOVIES, users, RATINGS)


def test_first_users_keeps_their_ratings_only() -> None:
    kept = first_users(data(), 2)
    assert [u.user_id for u in kept.users] == ["1", "2"]  # by number, not by text
    assert {r.user_id for r in kept.ratings} == {"1", "2"} and kept.items == MOVIES


def test_the_other_user_has_another_favourite_genre() -> None:
    shop = Shop({m.doc_id: Product(m.doc_id, 1, False, 5.0) for m in MOVIES}, RATINGS, [])
    assert top_genres(shop, data(), "1") == ["Crime", "Action", "Drama"]
    query = ShopQuery("q", "1", "crime", 20, {"m3": 1}, "genre")
    search = Search(query, FeatureRequest(["m3"], now=19.0), np.zeros(1), np.zeros(1))
    chosen, other = pick(shop, data(), [search])
    assert chosen is search and other == "2"  # the first buyer whose favourite is not Crime

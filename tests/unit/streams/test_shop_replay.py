"""The shop replay's schedule and messages: what a live worker is sent, without one."""

from __future__ import annotations

import numpy as np

from streamrank.models.assets.movielens import Item as Movie
from streamrank.models.assets.movielens import Rating
from streamrank.models.evaluation.shop import Product, Shop, ShopQuery
from streamrank.models.evaluation.shop_eval import Search
from streamrank.models.features.events import DAY_S, FeatureRequest
from streamrank.streams.shop_replay import (
    BROWSE,
    Browse,
    browse_interactions,
    browse_request,
    catalog_item,
    search_request,
    steps,
)

DAY = 10_000


def at(day: int, second: int = 0) -> int:
    return int(DAY * DAY_S + day * DAY_S + second)


def search(query_id: str, timestamp: int) -> Search:
    query = ShopQuery(query_id, "u2", "comedy", timestamp, {"m2": 2}, "genre")
    request = FeatureRequest(["m1", "m2"], now=timestamp - 1.0, query="comedy", user_id="u2")
    return Search(query, request, np.array([0.5, 0.25]), np.array([0.1, 0.2]))


def shop() -> Shop:
    train = [
        Rating("u1", "m1", 5, at(0, 50)),
        Rating("u1", "m2", 2, at(0, 10)),
        Rating("u2", "m1", 4, at(0, 20)),
        Rating("u1", "m3", 3, at(1, 5)),
        Rating("u1", "m2", 5, at(3, 5)),  # after the last search: never replayed
    ]
    catalog = {
        d: Product(d, stock=0 if d == "m2" else 3, promoted=d == "m1", price=9.0)
        for d in ("m1", "m2", "m3")
    }
    return Shop(catalog, train, [])


def test_steps_cut_the_history_at_each_search_and_stop_at_the_last() -> None:
    # searches at day 0 + 30 s (now = 29 s) and day 2 + 100 s
    tests = [search("q1", at(0, 30)), search("q2", at(2, 100))]
    schedule = steps(shop(), tests)
    assert [[s.query.query_id for s in step.searches] for step in schedule] == [["q1"], ["q2"]]
    first, second = schedule
    assert [(b.session_id, [r.doc_id for r in b.ratings]) for b in first.browsing] == [
        (f"u1-{DAY}", ["m2"]),  # 10 s
        (f"u2-{DAY}", ["m1"]),  # 20 s; u1's m1 at 50 s is after the search
    ]
    assert [(b.session_id, [r.doc_id for r in b.ratings]) for b in second.browsing] == [
        (f"u1-{DAY}", ["m1"]),
        (f"u1-{DAY + 1}", ["m3"]),
    ]  # the rating of day 3 is never replayed
    ids = [b.request_id for step in schedule for b in step.browsing]
    assert len(set(ids)) == len(ids)  # one session split by a search: two requests


def test_a_session_is_one_browse_request_and_its_ratings_events() -> None:
    ratings = shop().train[:2]
    browse = Browse("browse-u1-7-0", "u1-7", ratings)
    request = browse_request(browse)
    assert request.query == BROWSE and request.user_id == "u1" and request.session_id == "u1-7"
    assert [c.doc_id for c in request.candidates] == ["m1", "m2"]
    assert request.timestamp == float(ratings[0].timestamp)
    events = list(browse_interactions(browse))
    kinds = [(e.doc_id, e.type) for e in events]
    assert kinds == [("m1", "impression"), ("m1", "click"), ("m1", "purchase"),
                     ("m2", "impression"), ("m2", "click")]  # fmt: skip
    assert {e.request_id for e in events} == {request.request_id}
    assert len({e.event_id for e in events}) == len(events)


def test_a_search_keeps_the_offline_candidates_scores_and_time() -> None:
    request = search_request(search("q1", at(1, 100)))
    assert [(c.doc_id, c.first_stage_score) for c in request.candidates] == [
        ("m1", 0.5),
        ("m2", 0.25),
    ]
    assert request.timestamp == at(1, 100) - 1.0 and request.context == {"explore": False}


def test_a_movie_becomes_an_item_with_the_offline_fields() -> None:
    movie = Movie("m1", "Heat", 1995, ("Action", "Crime"), "Heat (1995). Genres: Action, Crime")
    item = catalog_item(movie, Product("m1", stock=0, promoted=True, price=4.5), start=1.0)
    assert item.title is None and item.text == movie.text
    assert (item.price, item.stock, item.in_stock, item.promoted) == (4.5, 0, False, True)
    assert item.category == "Action" and item.categories == ["Action", "Crime"]
    assert item.brand == "1990s" and item.created_at is not None

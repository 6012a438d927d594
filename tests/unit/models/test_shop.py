"""The shop scenario: the per-user time split, the seeded catalog and the search queries."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from streamrank.models.assets.movielens import Item, MovieLens, Rating
from streamrank.models.evaluation import shop

GENRES = ("Action", "Comedy", "Drama", "Sci-Fi", "Children's")
WORDS = ("river", "night", "star", "wars", "love", "house", "blue", "dead")


def make_items(n: int = 60) -> list[Item]:
    items = []
    for i in range(n):
        genres = (GENRES[i % 5], GENRES[(i * 3 + 1) % 5]) if i % 7 else ()
        title = f"The {WORDS[i % 8].title()} of {WORDS[(i * 5 + 3) % 8].title()}, A"
        items.append(Item(str(i + 1), title, 1990, tuple(dict.fromkeys(genres)), ""))
    return items


def make_ratings(users: int = 12, seed: int = 7) -> list[Rating]:
    rng = np.random.default_rng(seed)
    ratings = []
    for user in range(1, users + 1):
        count = int(rng.integers(5, 40))
        for doc in rng.choice(60, count, replace=False):
            # Coarse timestamps so that some ratings of a user share a second.
            ts = int(rng.integers(0, 50)) * 10
            ratings.append(Rating(str(user), str(doc + 1), int(rng.integers(1, 6)), ts))
    return ratings


def test_time_split_sends_each_users_last_fifth_to_test():
    ratings = make_ratings()
    train, test = shop.time_split(ratings)
    assert len(train) + len(test) == len(ratings)
    assert sorted(train + test, key=repr) == sorted(ratings, key=repr)
    sides: dict[str, dict[str, list[Rating]]] = defaultdict(lambda: {"train": [], "test": []})
    for name, side in (("train", train), ("test", test)):
        for rating in side:
            sides[rating.user_id][name].append(rating)
    for user, split in sides.items():
        n = len(split["train"]) + len(split["test"])
        assert len(split["train"]) == int(0.8 * n + 1e-9), user
        # no test rating of a user comes before one of their train ratings
        assert max(r.timestamp for r in split["train"]) <= min(r.timestamp for r in split["test"])
    assert [r.timestamp for r in train] == sorted(r.timestamp for r in train)


def test_time_split_is_exact_for_round_numbers_and_honours_the_fraction():
    ratings = [Rating("u", str(i), 3, i) for i in range(35)]
    train, test = shop.time_split(ratings)
    assert (len(train), len(test)) == (28, 7)
    assert [r.doc_id for r in test] == [str(i) for i in range(28, 35)]
    train, test = shop.time_split(ratings, fraction=0.5)
    assert (len(train), len(test)) == (17, 18)


def test_catalog_draws_are_reproducible_and_differ_across_seeds():
    ids = [str(i) for i in range(1, 1683)]
    first, again, other = (shop.draw_catalog(ids, seed) for seed in (0, 0, 1))
    assert first == again
    assert first != other
    products = list(first.values())
    assert sum(p.stock == 0 for p in products) == round(0.10 * len(ids))
    assert sum(p.promoted for p in products) == round(0.05 * len(ids))
    assert all(1 <= p.stock <= 50 for p in products if p.stock)
    prices = np.array([p.price for p in products])
    assert prices.min() >= 0.99 and 8 < np.median(prices) < 18
    assert {p.doc_id for p in products} == set(ids)


def test_title_words_drop_stop_words_articles_and_short_words():
    assert shop.title_words("Usual Suspects, The") == ["usual", "suspects"]
    assert shop.title_words("Misérables, Les") == ["misérables"]
    assert shop.title_words("Star Wars (Star Wars IV) and It") == ["star", "wars"]


def test_queries_come_from_purchases_and_judge_the_matching_purchases():
    items = make_items()
    catalog = {item.doc_id: item for item in items}
    _, test = shop.time_split(make_ratings())
    queries = list(shop.shop_queries(test, items, "test", seed=3))
    assert queries and {q.kind for q in queries} == {"genre", "title"}
    purchases = defaultdict(dict)
    for rating in test:
        if rating.rating >= 4:
            purchases[rating.user_id][rating.doc_id] = rating.rating
    for query in queries:
        spawned = query.query_id.rsplit("-", 1)[1]
        assert query.query_id.startswith(f"test-{query.user_id}-")
        assert query.relevant[spawned] > 0  # the purchase that issued it answers it
        expected = {
            doc: 2 if stars == 5 else 1
            for doc, stars in purchases[query.user_id].items()
            if shop.matches(catalog[doc], query.kind, query.text)
        }
        assert query.relevant == expected
    texts = [(q.user_id, q.text) for q in queries]
    assert len(texts) == len(set(texts))  # one query per text per user


def test_queries_are_reproducible_and_differ_across_seeds():
    items, (train, _) = make_items(), shop.time_split(make_ratings())
    first, again, other = (list(shop.shop_queries(train, items, "train", s)) for s in (5, 5, 6))
    assert first == again
    assert [q.text for q in first] != [q.text for q in other]


def test_a_movie_with_neither_genre_nor_title_words_issues_no_query():
    items = [Item("1", "It", None, (), "It"), Item("2", "Heat", 1995, (), "")]
    ratings = [Rating("1", "1", 5, 1), Rating("1", "2", 4, 2)]
    queries = list(shop.shop_queries(ratings, items, "train"))
    assert [(q.text, q.relevant) for q in queries] == [("heat", {"2": 1})]


@pytest.mark.parametrize("seed", [0, 1])
def test_build_shop_puts_it_together(seed):
    items = make_items()
    data = MovieLens(items, [], sorted(make_ratings(), key=lambda r: r.timestamp))
    built = shop.build_shop(data, seed=seed)
    assert len(built.train) + len(built.test) == len(data.ratings)
    assert set(built.catalog) == {item.doc_id for item in items}
    assert all(q.query_id.startswith("train-") for q in built.train_queries)
    assert all(q.query_id.startswith("test-") for q in built.test_queries)
    assert built == shop.build_shop(data, seed=seed)

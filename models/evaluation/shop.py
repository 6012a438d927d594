"""The shop scenario: MovieLens 100K read as an e-commerce log, with search queries.

Pure data, deterministic given a seed; no retrieval or ranking happens here. Built from
:func:`streamrank.models.assets.movielens.load_movielens` as follows.

* **Products** are the movies. Every rating is an impression and a click; a rating of 4 or 5
  is a **purchase** (:data:`PURCHASE_RATING`).
* **Catalog** (:func:`draw_catalog`): with ``numpy.random.default_rng(seed)``, exactly
  ``round(10% of the items)`` are out of stock (stock 0), the rest get a stock drawn uniformly
  from 1-50; exactly ``round(5%)`` are promoted (out-of-stock ones may be); each item gets a
  lognormal price (median 12.00, sigma 0.6, rounded to cents, at least 0.99).
* **Split** (:func:`time_split`): each user's ratings, sorted by (timestamp, item id), go the
  first ``floor(0.8 * n)`` to train, the rest to test, so no test rating of a user precedes
  a train rating of the same user.
* **Queries** (:func:`shop_queries`), built the same way from the train and from the test
  ratings: the users are taken in id order, each user's purchases in time order, and for
  each purchase one query is drawn from the purchased movie, with one generator seeded by
  ``seed``: with probability 1/2 one of its genres (lower-cased, "comedy", "sci-fi"), else
  one of its title words (lower-cased words of 3+ characters, stop words and articles in
  the languages of the titles removed: "Usual Suspects, The" gives "usual" or "suspects"),
  each chosen uniformly; the other kind when a movie has none of one kind (no query when it
  has neither). The query is the user's, issued at the purchase's timestamp. Its
  **relevance** is every purchase of that user in the same split that matches the query
  (the genre is among the movie's genres, or the word is among its title words), graded
  **2** for a rating of 5 and **1** for a rating of 4; the purchase that spawned it is
  always among them. A user who would issue the same text twice issues it once, at the
  first purchase.

Examples
--------
>>> from streamrank.models.assets.movielens import Item, Rating
>>> items = [Item("1", "Toy Story", 1995, ("Animation", "Comedy"), ""),
...          Item("2", "Usual Suspects, The", 1995, ("Crime", "Comedy"), "")]
>>> title_words("Usual Suspects, The")
['usual', 'suspects']
>>> ratings = [Rating("7", "1", 5, 10), Rating("7", "2", 4, 20), Rating("8", "2", 2, 30)]
>>> for query in shop_queries(ratings, items, "test", seed=1):
...     print(query.query_id, query.kind, query.text, query.relevant)
test-7-1 title story {'1': 2}
test-7-2 genre comedy {'1': 2, '2': 1}
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from streamrank.models.assets.movielens import Item, MovieLens, Rating

PURCHASE_RATING = 4
TOP_GRADE_RATING = 5
OUT_OF_STOCK_SHARE = 0.10
PROMOTED_SHARE = 0.05
MAX_STOCK = 50
MEDIAN_PRICE = 12.0
PRICE_SIGMA = 0.6
MIN_PRICE = 0.99
GENRE_SHARE = 0.5
MIN_WORD_LENGTH = 3
# English function words, and the articles and particles of the French, Spanish, Italian,
# German, Dutch and Portuguese titles MovieLens has ("Misérables, Les", "Dolce Vita, La").
_STOP_WORD_TEXT = """
    and are but for from has have her his how into its not off our out over she than that the
    their them then there they this too was were what when where who why will with you your
    all can did does don get got just like more one two whom which while about after again
    against also any iii part les los las gli une des del della der die das und ein eine het
    een van dos
"""
STOP_WORDS = frozenset(_STOP_WORD_TEXT.split())  # words under 3 characters are dropped anyway
_WORD = re.compile(r"[^\W_]+")


@dataclass(frozen=True, slots=True)
class Product:
    """What the shop knows about one item besides its text."""

    doc_id: str
    stock: int
    promoted: bool
    price: float


@dataclass(frozen=True)
class ShopQuery:
    """One search by one user at one time, with its judged purchases (grade 2: rated 5,
    grade 1: rated 4)."""

    query_id: str
    user_id: str
    text: str
    timestamp: int
    relevant: dict[str, int]
    kind: str  # "genre" or "title"


@dataclass
class Shop:
    """The whole scenario for one seed: catalog, split and the queries of each side."""

    catalog: dict[str, Product]
    train: list[Rating]
    test: list[Rating]
    train_queries: list[ShopQuery] = field(default_factory=list)
    test_queries: list[ShopQuery] = field(default_factory=list)


def draw_catalog(
    doc_ids: Sequence[str],
    seed: int = 0,
    out_of_stock: float = OUT_OF_STOCK_SHARE,
    promoted: float = PROMOTED_SHARE,
) -> dict[str, Product]:
    """Stock, promotion and price per item, drawn with ``numpy.random.default_rng(seed)``.

    Examples
    --------
    >>> catalog = draw_catalog([str(i) for i in range(100)], seed=1)
    >>> sum(p.stock == 0 for p in catalog.values()), sum(p.promoted for p in catalog.values())
    (10, 5)
    >>> catalog == draw_catalog([str(i) for i in range(100)], seed=1)
    True
    """
    rng = np.random.default_rng(seed)
    n = len(doc_ids)
    stock = rng.integers(1, MAX_STOCK + 1, size=n)
    stock[rng.choice(n, round(n * out_of_stock), replace=False)] = 0
    flags = np.zeros(n, dtype=bool)
    flags[rng.choice(n, round(n * promoted), replace=False)] = True
    prices = np.maximum(
        np.round(rng.lognormal(math.log(MEDIAN_PRICE), PRICE_SIGMA, n), 2), MIN_PRICE
    )
    return {
        doc_id: Product(doc_id, int(stock[i]), bool(flags[i]), float(prices[i]))
        for i, doc_id in enumerate(doc_ids)
    }


def _id_order(key: str) -> tuple[int, int, str]:
    # Numeric ids sort as numbers ("9" before "10"); anything else after them, as text.
    return (0, int(key), "") if key.isdigit() else (1, 0, key)


def _user_order(rating: Rating) -> tuple[int, int, str]:
    return _id_order(rating.user_id)


def _time_order(rating: Rating) -> tuple[int, tuple[int, int, str]]:
    return rating.timestamp, _id_order(rating.doc_id)


def by_user(ratings: Iterable[Rating]) -> dict[str, list[Rating]]:
    """Each user's ratings in time order, users in id order."""
    groups: dict[str, list[Rating]] = defaultdict(list)
    for rating in sorted(ratings, key=_user_order):
        groups[rating.user_id].append(rating)
    return {user: sorted(group, key=_time_order) for user, group in groups.items()}


def time_split(
    ratings: Iterable[Rating], fraction: float = 0.8
) -> tuple[list[Rating], list[Rating]]:
    """Per user, the first ``floor(fraction * n)`` ratings in time to train, the rest to test.

    Both sides come back sorted by time.

    Examples
    --------
    >>> ratings = [Rating("1", str(i), 4, 100 - i) for i in range(5)]
    >>> train, test = time_split(ratings)
    >>> [r.doc_id for r in train], [r.doc_id for r in test]
    (['4', '3', '2', '1'], ['0'])
    """
    train: list[Rating] = []
    test: list[Rating] = []
    for group in by_user(ratings).values():
        # The epsilon keeps 0.8 * 35 = 28.000000000000004 and its cousins from rounding down.
        cut = math.floor(fraction * len(group) + 1e-9)
        train += group[:cut]
        test += group[cut:]
    return sorted(train, key=_time_order), sorted(test, key=_time_order)


def title_words(title: str) -> list[str]:
    """The content words of a title, lower-cased, in order, each once."""
    words = _WORD.findall(title.casefold())
    kept = (w for w in words if len(w) >= MIN_WORD_LENGTH and w not in STOP_WORDS)
    return list(dict.fromkeys(kept))


def genre_words(item: Item) -> list[str]:
    return [genre.casefold() for genre in item.genres]


def query_terms(item: Item) -> dict[str, list[str]]:
    """The query texts ``item`` answers, by kind: ``{"genre": [...], "title": [...]}``."""
    return {"genre": genre_words(item), "title": title_words(item.title)}


def matches(item: Item, kind: str, text: str) -> bool:
    """Whether ``item`` answers a ``kind`` ("genre" or "title") query ``text``."""
    return text in query_terms(item)[kind]


def grade(rating: Rating) -> int:
    return 2 if rating.rating >= TOP_GRADE_RATING else 1


def _draw_query(terms: dict[str, list[str]], rng: np.random.Generator) -> tuple[str, str] | None:
    """(kind, text) for a purchase of an item with these ``terms``; always two draws, so one
    item without words does not shift the choices of every query after it."""
    coin, pick = rng.random(), rng.random()
    genres, words = terms["genre"], terms["title"]
    kind = "genre" if (coin < GENRE_SHARE and genres) or not words else "title"
    options = genres if kind == "genre" else words
    return (kind, options[int(pick * len(options))]) if options else None


def shop_queries(
    ratings: Iterable[Rating],
    items: Sequence[Item] | Mapping[str, Item],
    split: str,
    seed: int = 0,
) -> Iterator[ShopQuery]:
    """One query per purchase in ``ratings`` (one side of :func:`time_split`); see the module
    docstring for the construction. Query ids are ``"{split}-{user_id}-{doc_id}"``."""
    catalog = items if isinstance(items, Mapping) else {item.doc_id: item for item in items}
    # Worked out once per item: a user's purchases are matched against every query they issue.
    terms = {doc_id: query_terms(item) for doc_id, item in catalog.items()}
    rng = np.random.default_rng(seed)
    for user, group in by_user(ratings).items():
        purchases = [r for r in group if r.rating >= PURCHASE_RATING and r.doc_id in catalog]
        issued: set[str] = set()
        for purchase in purchases:
            drawn = _draw_query(terms[purchase.doc_id], rng)
            if drawn is None or drawn[1] in issued:
                continue
            kind, text = drawn
            issued.add(text)
            relevant = {r.doc_id: grade(r) for r in purchases if text in terms[r.doc_id][kind]}
            query_id = f"{split}-{user}-{purchase.doc_id}"
            yield ShopQuery(query_id, user, text, purchase.timestamp, relevant, kind)


def build_shop(data: MovieLens, seed: int = 0, fraction: float = 0.8) -> Shop:
    """The catalog, the split and both sides' queries, all from one ``seed``."""
    train, test = time_split(data.ratings, fraction)
    return Shop(
        catalog=draw_catalog([item.doc_id for item in data.items], seed),
        train=train,
        test=test,
        train_queries=list(shop_queries(train, data.items, "train", seed)),
        test_queries=list(shop_queries(test, data.items, "test", seed)),
    )

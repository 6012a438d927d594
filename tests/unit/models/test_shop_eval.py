"""The shop evaluation on a small synthetic shop: its figures, the rules and point-in-time."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest

from streamrank.models.assets.movielens import Item, MovieLens, Rating, User, item_text
from streamrank.models.evaluation.shop import build_shop
from streamrank.models.evaluation.shop_eval import (
    METHODS,
    Catalog,
    ShopEvalConfig,
    encode_cached,
    featurise,
    impersonal,
    judge_unseen,
    run_shop_eval,
    searches,
    shop_events,
)
from streamrank.models.features.defaults import default_features
from streamrank.models.learning.lambdamart import LambdaMARTConfig
from streamrank.models.retrieval.bm25 import BM25Index
from streamrank.models.retrieval.corpus import Document

GENRES = ["Comedy", "Drama", "Action", "Horror"]
WORDS = ["river", "night", "star", "city", "dream", "love", "war", "ghost"]
DAY = 86_400


class HashEncoder:
    """Deterministic unit vectors from the words of a text: similar texts, similar vectors."""

    version = "hash-encoder-1"

    def encode(self, texts: list[str]) -> np.ndarray:
        vectors = np.zeros((len(texts), 32), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().replace(".", " ").replace(",", " ").split():
                vectors[row, zlib.crc32(word.encode()) % 32] += 1.0
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.where(norms == 0, 1.0, norms)

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        return self.encode(texts)


@pytest.fixture(scope="module")
def shop_data() -> MovieLens:
    rng = np.random.default_rng(3)
    items = []
    for n in range(1, 61):
        title = f"{WORDS[n % len(WORDS)].title()} {WORDS[(n * 3) % len(WORDS)].title()} {n}"
        genres = (GENRES[n % 4],) if n % 5 else (GENRES[n % 4], GENRES[(n + 1) % 4])
        year = 1950 + n
        items.append(Item(str(n), title, year, genres, item_text(title, year, genres)))
    users = [User(str(u), 30, "F", "other", "00000") for u in range(1, 21)]
    ratings = []
    for user in users:
        taste = int(user.user_id) % 4  # each user prefers one genre
        for step in range(15):
            liked = [i for i in items if i.genres[0] == GENRES[taste]]
            item = (
                liked[rng.integers(len(liked))] if rng.random() < 0.7 else items[rng.integers(60)]
            )
            stars = 5 if item.genres[0] == GENRES[taste] else int(rng.integers(1, 4))
            ratings.append(Rating(user.user_id, item.doc_id, stars, 1_000 * DAY + step * DAY))
    ratings.sort(key=lambda r: (r.timestamp, int(r.user_id)))
    return MovieLens(items, users, ratings)


SMALL = LambdaMARTConfig(n_estimators=20, min_data_in_leaf=5)


def test_the_report_has_every_method_and_the_rules_hold(
    shop_data: MovieLens, tmp_path: Path
) -> None:
    shop = build_shop(shop_data, seed=0)
    config = ShopEvalConfig(seed=0, candidates=30, train_queries=None, lambdamart=SMALL)
    report = run_shop_eval(shop_data, shop, HashEncoder(), config, tmp_path)
    assert set(report["ndcg@10"]) == set(METHODS) == set(report["purchases@10"])
    assert all(0.0 <= v <= 1.0 for v in report["ndcg@10"].values())
    assert report["rules"]["out_of_stock_in_top10"] == 0
    assert report["searches"]["test"] > 0
    assert report["features"]["lambdamart"] < report["features"]["personalised"]
    assert report["latency_ms"]["p50"] > 0
    by_kind = report["ndcg@10_by_kind"]
    assert sum(kind["searches"] for kind in by_kind.values()) == report["searches"]["test"]
    assert all(set(METHODS) <= set(kind) for kind in by_kind.values())


def test_a_search_never_sees_its_own_purchase(shop_data: MovieLens) -> None:
    shop = build_shop(shop_data, seed=0)
    encoder = HashEncoder()
    catalog = Catalog(
        [i.doc_id for i in shop_data.items], encoder.encode([i.text for i in shop_data.items])
    )
    index = BM25Index.build([Document(i.doc_id, i.title, i.text) for i in shop_data.items])
    texts = sorted({q.text for q in shop.train_queries})
    vectors = dict(zip(texts, encoder.encode_queries(texts), strict=True))
    found = searches(shop.train_queries, index, catalog, vectors, candidates=60)
    features = default_features()
    featurise(features, shop_events(shop_data, shop, catalog), found)
    purchases = features.columns.index("item_purchases_30d")
    for search in found:
        spawned = next(
            r
            for r in shop.train
            if r.user_id == search.query.user_id and r.timestamp == search.query.timestamp
        )
        earlier = sum(
            1
            for r in shop.train
            if r.doc_id == spawned.doc_id
            and r.rating >= 4
            and r.timestamp < search.query.timestamp
            and r.timestamp > search.query.timestamp - 30 * DAY
        )
        row = list(search.doc_ids).index(spawned.doc_id)
        assert search.matrix[row, purchases] == earlier  # type: ignore[index]


def test_training_searches_are_judged_by_purchases_not_yet_seen(shop_data: MovieLens) -> None:
    shop = build_shop(shop_data, seed=0)
    encoder = HashEncoder()
    catalog = Catalog(
        [i.doc_id for i in shop_data.items], encoder.encode([i.text for i in shop_data.items])
    )
    index = BM25Index.build([Document(i.doc_id, i.title, i.text) for i in shop_data.items])
    texts = sorted({q.text for q in shop.train_queries})
    vectors = dict(zip(texts, encoder.encode_queries(texts), strict=True))
    found = searches(shop.train_queries, index, catalog, vectors, candidates=60)
    judge_unseen(found, shop.train)
    bought = {(r.user_id, r.doc_id): r.timestamp for r in shop.train if r.rating >= 4}
    dropped = 0
    for search in found:
        assert search.judged is not None
        spawned = search.query.query_id.rsplit("-", 1)[1]
        assert spawned in search.judged  # the purchase a search is made for always counts
        for doc_id, grade in search.query.relevant.items():
            later = bought[(search.query.user_id, doc_id)] > search.request.now
            assert (doc_id in search.judged) == later
            assert search.judged.get(doc_id, grade) == grade
            dropped += not later
    assert dropped > 0  # the synthetic users do buy a genre twice
    assert (found[0].labels() > 0).sum() == len(found[0].judged)


def test_impersonal_drops_every_user_feature() -> None:
    kept = impersonal(default_features())
    kinds = {f.kind for f in kept.features}
    assert not kinds & {"embedding_mean", "overlap", "multi_overlap", "user_item", "cosine"}
    assert all(getattr(f, "scope", None) != "user" for f in kept.features)
    assert "popularity" in kept.columns


def test_vectors_are_cached_by_content(tmp_path: Path) -> None:
    calls = []

    def encode(texts: list[str]) -> np.ndarray:
        calls.append(list(texts))
        return np.ones((len(texts), 2), dtype=np.float32)

    encode_cached(encode, "v1", ["a", "b"], tmp_path)
    encode_cached(encode, "v1", ["a", "b"], tmp_path)
    encode_cached(encode, "v1", ["a", "c"], tmp_path)
    encode_cached(encode, "v2", ["a", "b"], tmp_path)
    assert calls == [["a", "b"], ["a", "c"], ["a", "b"]]

"""The shop evaluation: does the feature-based final ranker find what users go on to buy?

On the MovieLens shop (:mod:`streamrank.models.evaluation.shop`), each held-out search of a
user is answered by four rankers over the same first-stage candidates, and scored against
the user's own later purchases (nDCG@10 with their graded relevance, and purchases@10: how
many of them are in the top 10):

``cascade``
    the first stage (BM25 over title, year and genres) fused with the bi-encoder's
    similarity, as the re-ranking cascade's ``dense`` tier does (default fusion);
``popularity``
    the candidates by their time-decayed popularity (purchases weighted above clicks);
``lambdamart``
    LambdaMART over the feature store's features without any of the user's own;
``personalised``
    the same with them (purchase-history embedding affinity, clicked categories and brands,
    the user's shares of purchases and clicks in each of a film's genres, how often the user
    already clicked the film, session counts).

Features are point-in-time (:func:`~streamrank.models.features.replay.point_in_time`): the
feature state learns only the training period (each user's first 80% of ratings, as
impressions, clicks and, from 4 stars, purchases), and every search, training or held-out,
is featurised from the events before it, never its own purchase or anything later. The
rankers are trained on a seeded sample of the training searches and tested on the held-out
ones; the same function scores both LambdaMART variants, the only difference being the
feature columns. A training search is judged, as a held-out one is, by purchases its
features have not seen (:func:`judge_unseen`); the held-out judgements are the scenario's.
Figures come overall and per kind of search (genre, title).

Movies become products with a category (their first genre), categories (all their genres,
``|``-joined), a brand (their decade), a creation time (1 January of their year) and the
catalog's seeded price, stock and promotion.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from streamrank.models.assets.movielens import MovieLens, Rating
from streamrank.models.evaluation.metrics import latency_percentiles, ndcg_at_k
from streamrank.models.evaluation.shop import PURCHASE_RATING, Shop, ShopQuery
from streamrank.models.features.config import FeatureSet
from streamrank.models.features.events import FeatureRequest, InteractionEvent, ItemEvent
from streamrank.models.features.replay import point_in_time
from streamrank.models.features.state import MemoryState
from streamrank.models.features.vector import FeatureVector
from streamrank.models.learning.lambdamart import FinalRanker, LambdaMARTConfig, train_lambdamart
from streamrank.models.retrieval.bm25 import BM25Index
from streamrank.models.retrieval.corpus import Document
from streamrank.models.retrieval.hits import Hit, reciprocal_rank_fusion
from streamrank.models.scoring.fusion import DEFAULT_FUSION
from streamrank.models.scoring.rules import RuleItem, RulesConfig, apply_rules

PERSONAL_KINDS = ("embedding_mean", "overlap", "multi_overlap", "user_item", "cosine")
"""Feature kinds computed from the requesting user's own history."""
METHODS = ("cascade", "popularity", "lambdamart", "personalised")
SHOP_LAMBDAMART = LambdaMARTConfig(num_leaves=31, min_data_in_leaf=20)
"""Larger trees than the MSLR-chosen defaults: 600,000 rows (3,000 searches of 200) carry
them. Chosen on a validation split of the training searches (a quarter of their users), not
on the held-out ones: ``docs/notes/2026-12-07-shop-lift.md``."""
K = 10
Streaming = Callable[[list["Search"], FinalRanker, FeatureSet], dict[str, Any]]
"""The streaming half: ranks held-out searches live with a model; their figures
(``ndcg@10``, ``purchases@10`` and anything else to report)."""
SECONDS_PER_YEAR = 365.25 * 86_400


@dataclass(frozen=True)
class ShopEvalConfig:
    """What one run of the shop evaluation does.

    ``candidates``: first-stage hits per search (BM25, positive scores only).
    ``train_queries`` / ``test_queries``: seeded samples of each side's searches (``None``:
    all of them). ``lambdamart``: :data:`SHOP_LAMBDAMART` unless given.
    ``streaming_searches``: how many held-out searches the streaming half replays to.
    """

    seed: int = 0
    candidates: int = 200
    train_queries: int | None = 3000
    test_queries: int | None = None
    lambdamart: LambdaMARTConfig = field(default_factory=lambda: SHOP_LAMBDAMART)
    streaming_searches: int = 500


@dataclass(frozen=True)
class Catalog:
    """The items' dense vectors, one row per item, and where each item's row is."""

    doc_ids: list[str]
    matrix: np.ndarray

    @cached_property
    def position(self) -> dict[str, int]:
        return {doc_id: i for i, doc_id in enumerate(self.doc_ids)}


@dataclass
class Search:
    """One search: the query, its first-stage candidates and the request to featurise."""

    query: ShopQuery
    request: FeatureRequest
    first_stage: np.ndarray
    dense: np.ndarray
    matrix: np.ndarray | None = None
    judged: dict[str, int] | None = None

    @property
    def doc_ids(self) -> Sequence[str]:
        return self.request.doc_ids

    def labels(self) -> np.ndarray:
        """Each candidate's grade: the query's own judgements unless ``judged`` replaces them."""
        relevant = self.query.relevant if self.judged is None else self.judged
        return np.array([relevant.get(d, 0) for d in self.doc_ids], dtype=np.float64)


def impersonal(features: FeatureSet) -> FeatureSet:
    """``features`` without those computed from the requesting user's own history.

    Examples
    --------
    >>> from streamrank.models.features.defaults import default_features
    >>> full = default_features()
    >>> "purchase_affinity" in full.columns, "purchase_affinity" in impersonal(full).columns
    (True, False)
    """
    kept = [
        f
        for f in features.features
        if f.kind not in PERSONAL_KINDS and getattr(f, "scope", None) != "user"
    ]
    return features.model_copy(update={"features": kept})


def item_fields(item: Any, product: Any) -> dict[str, float | str]:
    """The commerce fields a movie gets as a product (see the module docstring)."""
    fields: dict[str, float | str] = {
        "price": product.price,
        "stock": float(product.stock),
        "promoted": float(product.promoted),
        "category": item.genres[0] if item.genres else "none",
        "categories": "|".join(item.genres) if item.genres else "none",
    }
    if item.year is not None:
        fields["brand"] = f"{item.year // 10 * 10}s"
        fields["created"] = (item.year - 1970) * SECONDS_PER_YEAR
    return fields


def shop_events(
    data: MovieLens, shop: Shop, catalog: Catalog
) -> list[ItemEvent | InteractionEvent]:
    """The training period as feature events: the catalog first, then each rating.

    A rating is an impression and a click; from 4 stars also a purchase. A user's ratings on
    one day form one session.
    """
    start = min(r.timestamp for r in shop.train) - 1.0
    rows = catalog.position
    events: list[ItemEvent | InteractionEvent] = [
        ItemEvent(
            item.doc_id,
            start,
            item_fields(item, shop.catalog[item.doc_id]),
            catalog.matrix[rows[item.doc_id]],
        )
        for item in data.items
    ]
    for rating in shop.train:
        session = f"{rating.user_id}-{int(rating.timestamp // 86_400)}"
        kinds = ["impression", "click"] + (["purchase"] if rating.rating >= 4 else [])
        events += [
            InteractionEvent(
                kind, rating.doc_id, float(rating.timestamp), rating.user_id, None, session
            )
            for kind in kinds
        ]
    return events


def sample(queries: list[ShopQuery], count: int | None, seed: int) -> list[ShopQuery]:
    """A seeded sample of ``count`` queries, in their original order (all when None)."""
    if count is None or count >= len(queries):
        return list(queries)
    chosen = np.random.default_rng(seed).choice(len(queries), size=count, replace=False)
    return [queries[i] for i in sorted(chosen)]


def first_stage(
    query: str, query_vector: np.ndarray, index: BM25Index, catalog: Catalog, k: int
) -> list[Hit]:
    """The hybrid first stage: BM25 and the bi-encoder's nearest items, fused by RRF.

    BM25 alone finds only the few items whose title holds a title word; the dense half adds
    the related ones a shopper would also be shown.
    """
    similarity = catalog.matrix @ query_vector
    nearest = np.argsort(-similarity, kind="stable")[:k]
    dense_hits = [Hit(catalog.doc_ids[i], float(similarity[i])) for i in nearest]
    return reciprocal_rank_fusion({"bm25": index.search(query, k), "dense": dense_hits}, k)


def searches(
    queries: Sequence[ShopQuery],
    index: BM25Index,
    catalog: Catalog,
    query_vectors: dict[str, np.ndarray],
    candidates: int,
    tier_vectors: dict[str, np.ndarray] | None = None,
) -> list[Search]:
    """Each query's first-stage candidates and the request that featurises them.

    A search is made a second before its purchase, so that purchase is not among the
    events its features see. ``query_vectors`` are the first stage's (no instruction, as
    ``index build`` encodes); ``tier_vectors`` the cascade's dense tier's (bge's retrieval
    instruction first), which give the ``dense`` value a worker computes (None: the same).
    """
    out = []
    for query in queries:
        query_vector = query_vectors[query.text]
        hits = first_stage(query.text, query_vector, index, catalog, candidates)
        doc_ids = [hit.doc_id for hit in hits]
        scores = np.array([hit.score for hit in hits])
        tier_vector = query_vector if tier_vectors is None else tier_vectors[query.text]
        dense = catalog.matrix[[catalog.position[d] for d in doc_ids]] @ tier_vector
        request = FeatureRequest(
            doc_ids,
            now=float(query.timestamp) - 1.0,
            query=query.text,
            user_id=query.user_id,
            values={"first_stage_score": scores, "dense": dense},
        )
        out.append(Search(query, request, scores, dense))
    return out


def judge_unseen(train: list[Search], ratings: Sequence[Rating]) -> None:
    """Judge each training search by the purchases its features have not seen yet.

    A held-out search is judged by purchases its features never saw (the feature state holds
    only the training period); a training search's own judgements also count the user's
    earlier purchases, which its features did see. Trained on those, a model would learn that
    a film the user already bought is a good answer, the opposite of what the held-out
    searches reward. So a training search keeps only the purchases made after it.
    """
    last: dict[tuple[str, str], float] = {}  # a film bought twice counts if bought again
    for rating in ratings:
        if rating.rating >= PURCHASE_RATING:
            key = (rating.user_id, rating.doc_id)
            last[key] = max(last.get(key, -np.inf), float(rating.timestamp))
    for search in train:
        user, now = search.query.user_id, search.request.now
        search.judged = {
            doc_id: grade
            for doc_id, grade in search.query.relevant.items()
            if last.get((user, doc_id), now) > now
        }


def featurise(features: FeatureSet, events: list, all_searches: list[Search]) -> MemoryState:
    """Fill each search's ``matrix`` point-in-time; returns the state after every event."""
    state = MemoryState(days=features.max_window_days)
    by_request = {id(s.request): s for s in all_searches}
    for request, matrix in point_in_time(
        features, events, [s.request for s in all_searches], state
    ):
        by_request[id(request)].matrix = matrix
    return state


def train_on(
    train: list[Search], columns: list[int], names: list[str], config: LambdaMARTConfig
) -> FinalRanker:
    """LambdaMART on the training searches that have a relevant candidate."""
    useful = [s for s in train if s.labels().any()]
    X = np.concatenate([s.matrix[:, columns] for s in useful])  # type: ignore[index]
    y = np.concatenate([s.labels() for s in useful])
    groups = [len(s.doc_ids) for s in useful]
    return train_lambdamart(X, y, groups, config, feature_names=names)


def order(doc_ids: Sequence[str], scores: np.ndarray) -> list[str]:
    """``doc_ids`` by descending score, ties in first-stage order."""
    return [doc_ids[i] for i in np.argsort(-np.asarray(scores), kind="stable")]


def figures(rankings: list[list[str]], tests: list[Search]) -> dict[str, float]:
    """Mean nDCG@10 and purchases@10 of one method's rankings of the held-out searches."""
    ndcg = [ndcg_at_k(r, s.query.relevant, K) for r, s in zip(rankings, tests, strict=True)]
    bought = [
        sum(d in s.query.relevant for d in r[:K]) for r, s in zip(rankings, tests, strict=True)
    ]
    return {
        "ndcg@10": round(float(np.mean(ndcg)), 4),
        "purchases@10": round(float(np.mean(bought)), 4),
    }


def by_kind(rankings: dict[str, list[list[str]]], tests: list[Search]) -> dict[str, Any]:
    """nDCG@10 per method on each kind of search (genre, title), and how many there are:
    taste should matter on a genre search, the query itself on a title one."""
    kinds = sorted({s.query.kind for s in tests})
    out: dict[str, Any] = {}
    for kind in kinds:
        rows = [i for i, s in enumerate(tests) if s.query.kind == kind]
        chosen = [tests[i] for i in rows]
        out[kind] = {
            m: figures([rankings[m][i] for i in rows], chosen)["ndcg@10"] for m in rankings
        } | {"searches": len(rows)}
    return out


def out_of_stock_in_top(rankings: list[list[str]], tests: list[Search], shop: Shop) -> dict:
    """The personalised rankings with the out-of-stock filter on: what the rule guarantees."""
    config = RulesConfig(out_of_stock="filter")
    shown = 0
    ndcg = []
    for ranking, search in zip(rankings, tests, strict=True):
        items = [
            RuleItem(d, -p, {"in_stock": shop.catalog[d].stock > 0}) for p, d in enumerate(ranking)
        ]
        ruled = list(apply_rules(search.query.text, items, config).doc_ids)
        shown += sum(shop.catalog[d].stock == 0 for d in ruled[:K])
        ndcg.append(ndcg_at_k(ruled, search.query.relevant, K))
    return {"out_of_stock_in_top10": shown, "ndcg@10_with_filter": round(float(np.mean(ndcg)), 4)}


def scoring_latency(
    features: FeatureSet, state: MemoryState, ranker: FinalRanker, tests: list[Search], count: int
) -> dict[str, Any]:
    """Milliseconds to featurise and score one search's candidates (the final ranker's cost
    in a worker, the feature fetch from an in-memory state included)."""
    vector = FeatureVector(features, state)
    timings, sizes = [], []
    for search in tests[:count]:
        started = time.perf_counter()
        ranker.predict_many(vector.matrix(search.request))
        timings.append(1000 * (time.perf_counter() - started))
        sizes.append(len(search.doc_ids))
    return {**latency_percentiles(timings), "candidates_median": int(np.median(sizes))}


def encode_cached(
    encode: Callable[[list[str]], np.ndarray], version: str, texts: list[str], cache_dir: Path
) -> np.ndarray:
    """``encode(texts)``, cached on disk under a hash of the encoder version and the texts."""
    digest = hashlib.sha256(json.dumps([version, texts]).encode()).hexdigest()[:16]
    path = cache_dir / f"vectors-{digest}.npy"
    if path.exists():
        return np.load(path)
    vectors = encode(texts)
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors


def one_by_one(
    encode: Callable[[list[str]], np.ndarray],
) -> Callable[[list[str]], np.ndarray]:
    """``encode`` called on one text at a time, as a worker encodes an item or a query.

    The int8 bi-encoder's vectors depend on the batch a text is encoded in (a text's vector
    alone and in a batch of others differ by up to 0.02 per coordinate), so features built
    offline from batched vectors would not be the ones a worker serves.
    """

    def encode_each(texts: list[str]) -> np.ndarray:
        return np.concatenate([encode([text]) for text in texts]) if texts else encode(texts)

    return encode_each


def evaluate_shop(
    data: MovieLens,
    shop: Shop,
    features: FeatureSet,
    catalog: Catalog,
    query_vectors: dict[str, np.ndarray],
    config: ShopEvalConfig,
    log: Callable[[str], None] = lambda message: None,
    tier_vectors: dict[str, np.ndarray] | None = None,
    streaming: Streaming | None = None,
) -> dict[str, Any]:
    """The four methods' figures on the held-out searches (see the module docstring), and
    with ``streaming`` the fifth: what it returns for a seeded sample of
    ``config.streaming_searches`` of them ranked by the personalised model, next to the
    offline figures of the same sample."""
    started = time.perf_counter()
    index = BM25Index.build([Document(i.doc_id, i.title, i.text) for i in data.items])
    train_queries = sample(shop.train_queries, config.train_queries, config.seed)
    test_queries = sample(shop.test_queries, config.test_queries, config.seed + 1)
    made = [
        searches(q, index, catalog, query_vectors, config.candidates, tier_vectors)
        for q in (train_queries, test_queries)
    ]
    train, tests = made
    judge_unseen(train, shop.train)
    log(f"featurising {len(train):,} training and {len(tests):,} held-out searches")
    state = featurise(features, shop_events(data, shop, catalog), train + tests)
    columns = features.columns
    personal = impersonal(features).columns
    general = [columns.index(c) for c in personal]
    log("training LambdaMART with and without the user's features")
    trained = time.perf_counter()
    ranker_general = train_on(train, general, personal, config.lambdamart)
    ranker_personal = train_on(train, list(range(len(columns))), columns, config.lambdamart)
    train_s = (time.perf_counter() - trained) / 2
    popularity = columns.index("popularity")
    rankings: dict[str, list[list[str]]] = {method: [] for method in METHODS}
    for s in tests:
        fused = DEFAULT_FUSION.fuse(s.first_stage, s.dense)
        rankings["cascade"].append(order(s.doc_ids, fused))
        rankings["popularity"].append(order(s.doc_ids, s.matrix[:, popularity]))  # type: ignore[index]
        general_scores = ranker_general.predict_many(s.matrix[:, general])  # type: ignore[index]
        rankings["lambdamart"].append(order(s.doc_ids, general_scores))
        rankings["personalised"].append(order(s.doc_ids, ranker_personal.predict_many(s.matrix)))
    scored = {method: figures(rankings[method], tests) for method in METHODS}
    streamed: dict[str, Any] = {}
    if streaming is not None:
        log("replaying the training period through a live worker")
        picked = sorted(
            np.random.default_rng(config.seed + 2)
            .choice(len(tests), min(config.streaming_searches, len(tests)), replace=False)
            .tolist()
        )
        subset = [tests[i] for i in picked]
        streamed = streaming(subset, ranker_personal, features)
        offline = figures([rankings["personalised"][i] for i in picked], subset)
        streamed["offline_same_searches"] = offline
        streamed["difference"] = round(streamed["ndcg@10"] - offline["ndcg@10"], 4)
        scored["streaming"] = {key: streamed[key] for key in ("ndcg@10", "purchases@10")}
    methods = [*METHODS, "streaming"] if streamed else list(METHODS)
    return {
        "ndcg@10": {m: scored[m]["ndcg@10"] for m in methods},
        "purchases@10": {m: scored[m]["purchases@10"] for m in methods},
        **({"streaming": streamed} if streamed else {}),
        "ndcg@10_by_kind": by_kind(rankings, tests),
        "latency_ms": scoring_latency(features, state, ranker_personal, tests, 300),
        "rules": out_of_stock_in_top(rankings["personalised"], tests, shop),
        "searches": {"train": len(train), "test": len(tests)},
        "features": {"personalised": len(columns), "lambdamart": len(personal)},
        "train_seconds": round(train_s, 1),
        "seconds": round(time.perf_counter() - started, 1),
        "seed": config.seed,
    }


def run_shop_eval(
    data: MovieLens,
    shop: Shop,
    encoder: Any,
    config: ShopEvalConfig,
    cache_dir: Path,
    features: FeatureSet | None = None,
    log: Callable[[str], None] = lambda message: None,
    streaming: Streaming | None = None,
) -> dict[str, Any]:
    """:func:`evaluate_shop` with the items and queries encoded by ``encoder`` (a
    :class:`~streamrank.models.scoring.bi_encoder.BiEncoder`), cached in ``cache_dir``."""
    from streamrank.models.features.defaults import default_features
    from streamrank.models.scoring.bi_encoder import QUERY_INSTRUCTION

    log(f"encoding {len(data.items):,} items and the searches (cached by content)")
    texts = [item.text for item in data.items]
    catalog = Catalog(
        [item.doc_id for item in data.items],
        encode_cached(one_by_one(encoder.encode), f"{encoder.version}|single", texts, cache_dir),
    )
    queries = sorted({q.text for q in [*shop.train_queries, *shop.test_queries]})
    vectors = encode_cached(encoder.encode_queries, f"{encoder.version}|query", queries, cache_dir)
    query_vectors = dict(zip(queries, vectors, strict=True))
    instructed = encode_cached(
        one_by_one(lambda texts: encoder.encode([QUERY_INSTRUCTION + text for text in texts])),
        f"{encoder.version}|single|query|{QUERY_INSTRUCTION}",
        queries,
        cache_dir,
    )
    tier_vectors = dict(zip(queries, instructed, strict=True))
    features = features or default_features()
    return evaluate_shop(
        data, shop, features, catalog, query_vectors, config, log, tier_vectors, streaming
    )

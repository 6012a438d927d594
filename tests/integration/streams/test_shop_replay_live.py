"""The shop replayed through a live worker computes the features the offline replay computes.

MovieLens (fetched into the cache by ``streamrank data fetch movielens``; ``deploy/test.sh``
does it) is replayed day by day through a real worker, the real broker and Redis, up to the
first held-out searches; the feature vectors the worker logged for those searches (topic
``impressions``) are compared with the offline point-in-time matrices of the same searches.
They agree column by column: the live state holds exactly the events before each search, and
the offline vectors are encoded one text at a time, as the worker encodes them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streamrank.models.assets.movielens import DEFAULT_OUT, MovieLensMissing, load_movielens
from streamrank.models.evaluation import shop_eval
from streamrank.models.evaluation.shop import build_shop
from streamrank.models.features.defaults import default_features
from streamrank.models.learning.lambdamart import LambdaMARTConfig, train_lambdamart
from streamrank.models.retrieval.bm25 import BM25Index
from streamrank.models.retrieval.corpus import Document
from streamrank.models.scoring.bi_encoder import QUERY_INSTRUCTION, load_bi_encoder
from streamrank.streams.config import Settings
from streamrank.streams.events import Impression
from streamrank.streams.shop_replay import LiveShop, replay_shop
from tests.helpers import consume

pytestmark = pytest.mark.integration
SEARCHES = 20


@pytest.fixture(scope="module")
def movielens():
    try:
        return load_movielens(DEFAULT_OUT)
    except MovieLensMissing:
        pytest.skip(f"MovieLens is not at {DEFAULT_OUT}: run `streamrank data fetch movielens`")


def test_live_features_match_the_offline_replay(
    settings: Settings, movielens, tmp_path: Path
) -> None:
    data, shop = movielens, build_shop(movielens, 0)
    encoder = load_bi_encoder(settings.model_dir)
    cache = settings.model_dir / "shop"
    texts = [item.text for item in data.items]
    catalog = shop_eval.Catalog(
        [item.doc_id for item in data.items],
        shop_eval.encode_cached(
            shop_eval.one_by_one(encoder.encode), f"{encoder.version}|single", texts, cache
        ),
    )
    queries = sorted(shop.test_queries, key=lambda q: q.timestamp)[:SEARCHES]
    words = sorted({q.text for q in queries})
    vectors = encoder.encode_queries(words)
    index = BM25Index.build([Document(i.doc_id, i.title, i.text) for i in data.items])
    instructed = shop_eval.one_by_one(encoder.encode)([QUERY_INSTRUCTION + w for w in words])
    tests = shop_eval.searches(
        queries,
        index,
        catalog,
        dict(zip(words, vectors, strict=True)),
        200,
        dict(zip(words, instructed, strict=True)),
    )
    features = default_features()
    shop_eval.featurise(features, shop_eval.shop_events(data, shop, catalog), tests)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, len(features.columns)))
    ranker = train_lambdamart(
        X, rng.integers(0, 3, 400), [20] * 20, LambdaMARTConfig(n_estimators=5),
        feature_names=features.columns,
    )  # fmt: skip

    def logged(live: LiveShop) -> list[Impression]:
        records = consume(live.settings, "impressions", count=SEARCHES, timeout_s=60, exact=False)
        events = [Impression.model_validate_json(r.value) for r in records]
        return [e for e in events if e.request_id.startswith("search-")]

    figures, impressions = replay_shop(
        settings, data, shop, tests, ranker, features, tmp_path, after=logged, feature_log=True
    )
    assert figures["sessions_replayed"] > 0 and 0.0 <= figures["ndcg@10"] <= 1.0
    assert len(impressions) == SEARCHES
    offline = {f"search-{s.query.query_id}": s for s in tests}
    live_rows, offline_rows = [], []
    for event in impressions:
        search = offline[event.request_id]
        rows = {doc_id: i for i, doc_id in enumerate(search.doc_ids)}
        for item in event.items:
            live_rows.append([np.nan if v is None else v for v in item.features])
            offline_rows.append(search.matrix[rows[item.doc_id]])  # type: ignore[index]
    live, expected = np.array(live_rows), np.array(offline_rows)
    assert live.shape == (SEARCHES * 10, len(features.columns))
    same = np.isclose(live, expected, rtol=1e-4, atol=1e-4, equal_nan=True).mean(axis=0)
    differing = {
        c: round(float(s), 3) for c, s in zip(features.columns, same, strict=True) if s < 1
    }
    assert not differing, f"share of rows whose live value matches, by column: {differing}"

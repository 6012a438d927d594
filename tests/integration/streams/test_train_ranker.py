"""``streamrank train ranker`` against the real broker and Redis: logged impressions and the
clicks after them become a registered LambdaMART version that ranks by what users chose."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from streamrank.models.features.defaults import default_features
from streamrank.models.learning.ranker_versions import load_final_ranker
from streamrank.streams.config import Settings
from streamrank.streams.events import Impression, Interaction, LoggedItem
from streamrank.streams.state.connections import redis_client, registry_for
from tests.helpers import REPO, produce, settings_env

pytestmark = pytest.mark.integration

KEY = "train-ranker-key"
INFORMATIVE = "item_ctr_30d"
LIST_SIZE = 8


@pytest.fixture
def keyed(settings: Settings) -> Settings:
    return settings.model_copy(update={"registry_key": KEY})


def train(settings: Settings, *args: str, key: str = KEY) -> subprocess.CompletedProcess:
    env = settings_env(settings) | {"STREAMRANK_REGISTRY_KEY": key, "COLUMNS": "200"}
    for name in ("STREAMRANK_TOKEN", "STREAMRANK_OPERATOR_TOKEN"):
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "streamrank.streams.cli", "train", "ranker", *args],
        env=env,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=240,
    )


def logged_traffic(n_lists: int, seed: int = 0) -> tuple[list[bytes], list[bytes]]:
    """Impressions of the default feature set where only INFORMATIVE tells what users choose
    (clicks and purchases), served in an order that ignores it."""
    features = default_features()
    column = features.columns.index(INFORMATIVE)
    rng = np.random.default_rng(seed)
    impressions, interactions = [], []
    for i in range(n_lists):
        served_at = 1_700_000_000.0 + i
        values = rng.random(LIST_SIZE)
        items = []
        for position, value in enumerate(values, 1):
            vector: list[float | None] = [None] * len(features.columns)
            vector[column] = float(value)
            vector[0] = float(rng.normal())  # noise the model must not learn
            items.append(LoggedItem(doc_id=f"d{i}-{position}", position=position, features=vector))
        impressions.append(
            Impression(
                request_id=f"r{i}",
                query="q",
                model_version="v1",
                features_digest=features.digest,
                items=items,
                served_at=served_at,
            ).to_bytes()
        )
        for position, value in enumerate(values, 1):
            kind = "purchase" if value > 0.9 else "click" if value > 0.6 else None
            if kind and rng.random() < 1.0 / position**0.5:  # fewer looks further down
                interactions.append(
                    Interaction(
                        event_id=f"e{i}-{position}",
                        request_id=f"r{i}",
                        doc_id=f"d{i}-{position}",
                        type=kind,
                        position=position,
                        timestamp=served_at + 5.0,
                    ).to_bytes()
                )
    return impressions, interactions


def test_train_ranker_registers_a_shadow_version_that_learned_the_clicks(keyed: Settings) -> None:
    client = redis_client(keyed)
    registry = registry_for(keyed, client)
    parent = registry.register(pipeline="bm25>ce:7")
    registry.activate(parent.version, reason="the serving version")
    impressions, interactions = logged_traffic(300)
    foreign = json.loads(impressions[0]) | {"request_id": "foreign", "features_digest": "0" * 16}
    short = json.loads(impressions[1]) | {"request_id": "short"}
    short["items"][0]["features"] = [1.0]  # not the feature set's width
    poison = [b"{not json", json.dumps(foreign).encode(), json.dumps(short).encode()]
    produce(keyed, "impressions", impressions + poison)
    produce(keyed, "interactions", interactions)

    done = train(keyed, "--json", "--shadow", "--debias", "position")

    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["counts"]["lists"] == 302  # the undecodable one never became a list
    assert summary["undecodable"]["impressions"] == 1
    assert summary["counts"]["foreign_digest"] == 1 and summary["counts"]["malformed"] == 1
    assert summary["valid_lists"] == pytest.approx(0.2 * summary["counts"]["joined"], abs=1)
    assert summary["metrics"]["ndcg@10_model"] > summary["metrics"]["ndcg@10_served"]
    version = registry.get(summary["version"])
    assert version.parent == parent.version and version.pipeline == "bm25>ce:7"
    assert version.training_events == summary["counts"]["joined"]
    assert version.metrics["ndcg@10_model"] == summary["metrics"]["ndcg@10_model"]
    assert summary["version"] in registry.shadows()
    assert registry.active() == parent.version  # training never switches what serves

    ranker, features = load_final_ranker(registry, summary["version"])
    rows = np.full((3, len(features.columns)), np.nan)
    rows[:, features.columns.index(INFORMATIVE)] = [0.2, 0.7, 0.95]
    rows[:, 0] = 0.0
    assert np.all(np.diff(ranker.predict_many(rows)) > 0)


def test_train_ranker_says_what_is_missing(keyed: Settings) -> None:
    no_key = train(keyed, key="")
    assert no_key.returncode == 2 and "STREAMRANK_REGISTRY_KEY" in no_key.stderr

    empty = train(keyed)
    assert empty.returncode == 2
    assert f"no impressions on {keyed.topic('impressions')}" in " ".join(empty.stderr.split())

    impressions, interactions = logged_traffic(20)
    produce(keyed, "impressions", impressions)
    produce(keyed, "interactions", interactions)
    few = train(keyed, "--min-lists", "50")
    said = " ".join(few.stderr.split())
    assert few.returncode == 2 and "logged list(s) have a click or better (need 50)" in said
    assert "--min-lists" in said

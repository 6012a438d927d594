"""The impression a ranking leaves in Redis: compact, readable by the learn path, short-lived."""

from __future__ import annotations

import json
import math

from streamrank.models.scoring.cascade import CascadeItem, CascadeResult
from streamrank.streams.config import Settings
from streamrank.streams.events import Candidate, Candidates
from streamrank.streams.serving import OnlineInfo, Reranker, rounded
from streamrank.streams.state.user_sessions import Claimed, build_impression


def served(n: int = 12) -> tuple[Candidates, CascadeResult, OnlineInfo]:
    request = Candidates(
        request_id="r1",
        query="river in russia",
        candidates=[
            Candidate(doc_id=f"d{i}", text="text", first_stage_score=10.0 - i, features={"f": 1.0})
            for i in range(n)
        ],
    )
    items = [
        CascadeItem(doc_id=f"d{i}", score=1.0 / (i + 1), position=i + 1, stage="ce")
        for i in range(n)
    ]
    features = {f"d{i}": {"ce_z": 1 / 3 + i, "first_stage_top": 0.5} for i in range(n)}
    online = OnlineInfo(features=features, explored=frozenset({"d1"}), randomized=True)
    return request, CascadeResult(items=items, model_version="ce;online"), online


def impression() -> dict:
    request, result, online = served()
    reranker = Reranker.__new__(Reranker)  # impression() reads nothing of the instance
    return reranker.impression(request, result, online)


def test_impression_keeps_what_the_joins_read_and_nothing_else() -> None:
    record = impression()
    assert len(record["items"]) == 10  # max(k, 10) shown
    assert set(record["items"][0]) == {"doc_id", "position", "ranker_features", "explored"}
    assert record["items"][1]["explored"] is True and record["items"][0]["explored"] is False
    assert record["items"][1]["ranker_features"] == {"ce_z": 1.33333, "first_stage_top": 0.5}
    assert record["query"] == "river in russia" and record["randomized"] is True


def test_the_learn_path_reads_the_compact_impression() -> None:
    record = json.loads(json.dumps(impression(), separators=(",", ":")))
    learned = build_impression(
        Claimed("r1", record, {"e1": "click|2|d1", "e2": "view|1|d0", "_learned": "1"})
    )
    assert learned is not None
    assert learned.docs == ("d0", "d1")
    assert learned.clicked == (1,)
    assert learned.features[1] == {"ce_z": 1.33333, "first_stage_top": 0.5}
    assert learned.randomized is True


def test_rounding_keeps_six_significant_digits() -> None:
    values = {"a": 1.5899486007538048, "b": -0.000123456789, "c": 12345678.9, "d": 0.0}
    out = rounded(values)
    assert out == {"a": 1.58995, "b": -0.000123457, "c": 12345700.0, "d": 0.0}
    assert all(math.isclose(out[k], v, rel_tol=1e-5) for k, v in values.items())


def test_impression_ttl_follows_the_session_windows() -> None:
    settings = Settings()
    windows = (
        settings.click_window_s
        + settings.session_close_s
        + settings.orphan_window_s
        + settings.shadow_join_window_s
    )
    assert settings.impression_ttl_s == math.ceil(windows) < 24 * 3600
    assert Settings(click_window_s=30, orphan_window_s=10).impression_ttl_s == 55
    assert Settings(impression_ttl_s=7200).impression_ttl_s == 7200  # an explicit one is kept

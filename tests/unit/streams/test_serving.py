"""The latency budget counts from the request's timestamp: a request that queued past its
budget is answered at once in the first stage's order, flagged, instead of late and good."""

from __future__ import annotations

import time

import numpy as np
import redis

from streamrank.models.scoring.cascade import Cascade
from streamrank.models.scoring.tiers import FunctionTier, TierScores
from streamrank.streams.config import Settings
from streamrank.streams.events import Candidate, Candidates
from streamrank.streams.serving import ONLINE_START_S, Reranker, waited_s
from streamrank.streams.state.feature_store import FeatureStore
from tests.helpers import free_port


def _reranker() -> Reranker:
    settings = Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0", latency_budget_ms=250)
    by_length = FunctionTier("ce", lambda query, texts: np.array([len(t) for t in texts]))
    client = redis.Redis.from_url(settings.redis_url)  # never asked: every candidate has text
    return Reranker(Cascade("ce", {"ce": by_length}), FeatureStore(client, settings), settings)


def _request(sent_at: float) -> Candidates:
    texts = {"short": "a", "long": "a much longer text", "middle": "some text"}
    candidates = [
        Candidate(doc_id=doc, text=text, first_stage_score=3.0 - i)
        for i, (doc, text) in enumerate(texts.items())
    ]
    return Candidates(request_id="r1", query="q", candidates=candidates, timestamp=sent_at)


def _served(sent_at: float):
    """Ranked as the serving path ranks: with the wait the request's timestamp shows."""
    request = _request(sent_at)
    return _reranker().rank(request, waited_s(request.timestamp, time.time()))[0]


def test_a_fresh_request_gets_the_cascade_order():
    ranking = _served(time.time())
    assert [item.doc_id for item in ranking.items] == ["long", "middle", "short"]
    assert not ranking.degraded
    assert 0 <= ranking.timings_ms["queue"] < 250


def test_a_request_that_queued_past_its_budget_keeps_the_first_stage_order_flagged():
    ranking = _served(time.time() - 2.0)
    assert [item.doc_id for item in ranking.items] == ["short", "long", "middle"]
    assert ranking.degraded and "late: waited" in ranking.degraded_reason
    assert ranking.timings_ms["queue"] >= 2000


def test_a_timestamp_from_a_wrong_clock_is_not_taken_for_a_queue():
    for sent_at in (time.time() + 30, time.time() - 3600):
        ranking = _served(sent_at)
        assert not ranking.degraded
        assert ranking.timings_ms["queue"] == 0


def test_a_caller_that_passes_no_wait_gets_the_whole_budget():
    """A shadow ranks the same request later: its lag is not the user's wait."""
    ranking, _ = _reranker().rank(_request(time.time() - 2.0))
    assert [item.doc_id for item in ranking.items] == ["long", "middle", "short"]
    assert not ranking.degraded


def _with_online_spy(reranker: Reranker) -> list[str]:
    """Record the requests ``reranker`` hands to its online ranker (which it then skips)."""
    called: list[str] = []

    def serve_online(request, result):
        called.append(request.request_id)
        return result, None

    reranker.serve_online = serve_online  # type: ignore[method-assign]
    return called


def test_the_online_ranker_is_skipped_once_the_cascade_has_used_the_budget():
    slow = FunctionTier("ce", lambda q, texts: time.sleep(0.3) or np.arange(len(texts)))
    reranker = _reranker()
    reranker.cascade = Cascade("ce", {"ce": slow})
    called = _with_online_spy(reranker)
    ranking, _ = reranker.rank(_request(time.time()), 0.0)
    assert called == []
    assert ranking.degraded and "online ranker skipped: deadline" in ranking.degraded_reason


def test_the_online_ranker_runs_while_the_budget_lasts():
    reranker = _reranker()
    called = _with_online_spy(reranker)
    ranking, _ = reranker.rank(_request(time.time()), 0.0)
    assert called == ["r1"] and not ranking.degraded


class BudgetFillingTier:
    """A tier that, like the cross-encoder's cost model, scores until its budget is spent."""

    version = "filling-1"

    name = "ce"

    def __init__(self) -> None:
        self.budgets: list[float] = []

    def score(self, query, candidates, budget_s):
        self.budgets.append(budget_s)
        time.sleep(max((budget_s or 0.0) - 0.002, 0.0))
        return TierScores(np.arange(len(candidates), dtype=float), inferred=len(candidates))


def test_a_cascade_that_fills_its_deadline_still_leaves_the_online_ranker_its_time():
    reranker, tier = _reranker(), BudgetFillingTier()
    reranker.cascade = Cascade("ce", {"ce": tier})
    reranker.online = object()  # present: its time is reserved (serve_online is the spy)
    called = _with_online_spy(reranker)
    ranking, _ = reranker.rank(_request(time.time()), 0.0)
    assert tier.budgets[0] <= 0.250 - ONLINE_START_S  # the online ranker's share kept out
    assert called == ["r1"] and not ranking.degraded

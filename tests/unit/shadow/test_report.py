"""The verdict: promote, reject or collect more, from the sequential test on the evidence."""

from __future__ import annotations

from streamrank.shadow.evidence import Snapshot
from streamrank.shadow.report import COLLECT, PROMOTE, REJECT, summarize
from tests.helpers import interleaving_outcomes


def summary(wins: int, losses: int, ties: int) -> dict:
    outcomes = interleaving_outcomes(wins, losses, ties)
    return summarize(Snapshot("v2", interleaving=outcomes), min_sessions=200)


def test_verdicts_follow_the_sequential_test() -> None:
    better = summary(170, 90, 40)
    assert better["verdict"] == PROMOTE and better["delta"] > 0
    assert better["delta_interval"][0] > 0 and better["sequential_p"] < 0.05
    assert summary(90, 170, 40)["verdict"] == REJECT
    # A clear win on too few sessions is not enough, and neither is a coin flip.
    early = summary(40, 10, 5)
    assert early["verdict"] == COLLECT and early["sequential_p"] < 0.05
    assert summary(120, 120, 60)["verdict"] == COLLECT

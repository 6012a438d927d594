"""Team-draft interleaving (Radlinski, Kurup and Joachims 2008).

Two rankers take turns, like captains picking teams: whichever has contributed fewer results
(a coin decides ties) adds its best result not yet shown. The user sees one list; each click is
credited to the ranker that contributed the clicked result, and the ranker with more clicks
wins the session. Because both rankers are shown to the same user in the same context, the
comparison needs far fewer sessions than an A/B split.

Examples
--------
>>> import numpy as np
>>> shown = team_draft(["a", "b", "c"], ["b", "d", "a"], k=4, rng=np.random.default_rng(1))
>>> shown.docs
['b', 'a', 'd', 'c']
>>> shown.outcome(clicked=["d"])
-1
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

PRIMARY, SHADOW = "primary", "shadow"


@dataclass(frozen=True)
class Interleaving:
    """The list shown to the user and which ranker contributed each result."""

    docs: list[str]
    teams: list[str]

    def credit(self, clicked: Iterable[str]) -> tuple[int, int]:
        """Clicks credited to (primary, shadow)."""
        team_of = dict(zip(self.docs, self.teams, strict=True))
        teams = [team_of[doc] for doc in clicked if doc in team_of]
        return teams.count(PRIMARY), teams.count(SHADOW)

    def outcome(self, clicked: Iterable[str]) -> int:
        """+1 if the primary won the session, -1 if the shadow did, 0 for a tie."""
        primary, shadow = self.credit(clicked)
        return int(np.sign(primary - shadow))


def team_draft(
    primary: Sequence[str], shadow: Sequence[str], k: int, rng: np.random.Generator
) -> Interleaving:
    """Interleave two rankings of the same candidates into a list of at most ``k`` results."""
    docs: list[str] = []
    teams: list[str] = []
    shown: set[str] = set()
    picks = {PRIMARY: 0, SHADOW: 0}
    lists = {PRIMARY: list(primary), SHADOW: list(shadow)}
    cursor = {PRIMARY: 0, SHADOW: 0}
    while len(docs) < k:
        if picks[PRIMARY] != picks[SHADOW]:
            team = PRIMARY if picks[PRIMARY] < picks[SHADOW] else SHADOW
        else:
            team = PRIMARY if rng.random() < 0.5 else SHADOW
        doc = next_unshown(lists[team], cursor, team, shown)
        if doc is None:  # this ranker has nothing new left: the other one fills up
            team = SHADOW if team == PRIMARY else PRIMARY
            doc = next_unshown(lists[team], cursor, team, shown)
            if doc is None:
                break
        docs.append(doc)
        teams.append(team)
        shown.add(doc)
        picks[team] += 1
    return Interleaving(docs, teams)


def next_unshown(
    ranking: list[str], cursor: dict[str, int], team: str, shown: set[str]
) -> str | None:
    while cursor[team] < len(ranking) and ranking[cursor[team]] in shown:
        cursor[team] += 1
    return ranking[cursor[team]] if cursor[team] < len(ranking) else None

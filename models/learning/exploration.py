"""Safe exploration: show users a ranking that teaches the learner, within a quality bound.

The learner only hears about documents users look at, so some impressions must go to
documents it is unsure about. :class:`SafeExplorer` does it in three steps:

1. **Which documents**: one Thompson draw from the ranker's posterior picks the ``k`` to
   show, so a document is shown about as often as it might belong there.
2. **In which order**: by what a look at each is worth to the ranking the learner will
   serve, divided by the chance that a user who looks at it stops there (``Scored.stop``,
   plus ``stop_floor``). Users who stop once satisfied look at the top results only, and a
   look is worth what it teaches times the chance the user is still looking; the ratio
   order maximises that sum (Smith's rule for a sequence of tests any of which may end the
   search). For position-based users ``stop`` is zero and the order is by worth alone.
   The worth is :func:`look_values`: the expected value of perfect information about the
   document's attractiveness for DCG@k of the exploit list. A document surely in or
   surely out of the top ``k`` is worth nothing, and neither is one of many equally good
   documents whose exact place changes little; one that may belong near the top, where
   the discount changes most, is worth the most.

   The former order, p(1 - p) with p the share of Thompson draws that put the document in
   the top ``k``, treats every place in the top ``k`` alike, so it spent a query's few looks
   on questions that change the served list little. ``stop_floor`` keeps a result nobody
   stops at from jumping ahead of everything. The comparison, the floors and the variants
   measured and dropped are in docs/notes/2026-11-26-exploration-order.md.

   The order is deterministic given the posterior, so it needs the posterior to move between
   users of a query. Where learning lags (a worker learns a session seconds after serving
   it), the next users see the same order, and the lead over the former, randomly drawn
   order shrinks; the simulator therefore serves a round's users together and learns before
   the next round, as a worker that keeps up does (docs/learning.md).
3. **The bound**: the served list's expected DCG, computed from the ranker's own posterior
   means, must stay within ``max_loss`` of the exploit list's. If it would not, the top of the
   list is taken from the exploit ranking one position at a time until it does; at worst the
   exploit list itself is served. With probability ``swap_probability`` two adjacent results
   are also swapped at random (if the bound still holds), so documents visit nearby ranks.
4. **Interventions** (only when asked, i.e. when the position-based model is in use): with
   probability ``shuffle_probability`` the exploit top ``k`` is served in a uniformly random
   order (RandTop-k, Joachims et al. 2017) and flagged ``randomized``. Those lists are exempt
   from the bound: they are what makes the position-bias estimate unbiased, because which
   document lands where no longer depends on its past clicks (every other list's order does,
   and estimators fitted on such adaptive logs are biased).

Gains for the bound are posterior mean attractiveness above the list's least attractive
candidate, so a result nobody would click counts as zero.

Examples
--------
>>> from streamrank.models.learning.online_ranker import ScoredCandidate, OnlineRanker
>>> ranker = OnlineRanker()
>>> scored = ranker.score_one("q", [ScoredCandidate(f"d{i}", ce=-i) for i in range(20)])
>>> explorer = SafeExplorer(k=5, max_loss=0.0, seed=1)
>>> served = explorer.rank_one(scored)
>>> [scored.docs[i] for i in served.order[:5]], served.loss        # no loss allowed: exploit
(['d0', 'd1', 'd2', 'd3', 'd4'], 0.0)
>>> served = SafeExplorer(k=5, max_loss=0.5, seed=1).rank_one(scored)
>>> served.explored, served.loss <= 0.5
(True, True)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from streamrank.models.learning.online_ranker import Scored


@dataclass(frozen=True)
class Served:
    """A list to serve: candidate indices in order, whether it differs from exploit in its
    top ``k``, its estimated relative DCG loss against the exploit list, and whether it is a
    randomized intervention (its top ``k`` order is a uniform shuffle)."""

    order: np.ndarray
    explored: bool
    loss: float
    randomized: bool = False


class SafeExplorer:
    """Thompson sampling for the shown set, most-informative-first order, a DCG-loss bound.

    Parameters
    ----------
    k
        How many results the user sees (exploration only rearranges these).
    max_loss
        Largest allowed relative loss of estimated DCG@k against the exploit list (0 = never
        explore, 1 = unbounded).
    swap_probability
        Chance of one random adjacent swap in the top ``k`` per served list.
    uncertainty_first
        Order the shown results by what a look at them is expected to teach (True, see the
        module docstring) or by the draw (False).
    reference
        What the bound compares with: the exploit list (``"exploit"``) or the starting
        ranker's order (``"start"``).
    shuffle_probability
        Share of lists served as a randomized intervention when interventions are asked for.
    seed
        Seed of the draws.
    stop_floor
        Added to the stop probability in the order's ratio, so a result nobody stops at does
        not jump ahead of everything however little a look at it teaches.
    """

    def __init__(
        self,
        k: int = 10,
        max_loss: float = 0.3,
        swap_probability: float = 0.1,
        uncertainty_first: bool = True,
        reference: str = "exploit",
        shuffle_probability: float = 0.5,
        seed: int | None = None,
        stop_floor: float = 0.2,
    ) -> None:
        if reference not in ("exploit", "start"):
            raise ValueError("reference must be 'exploit' or 'start'")
        if not 0.0 <= max_loss <= 1.0:
            raise ValueError("max_loss must be between 0 and 1")
        self.k = k
        self.max_loss = max_loss
        self.swap_probability = swap_probability
        self.uncertainty_first = uncertainty_first
        self.reference = reference
        self.shuffle_probability = shuffle_probability
        self.stop_floor = stop_floor
        self.rng = np.random.default_rng(seed)

    def rank_one(self, scored: Scored, interventions: bool = False) -> Served:
        """The list to serve for one request (``interventions``: allow a randomized one)."""
        exploit = scored.exploit_order()
        k = min(self.k, len(exploit))
        if interventions and k > 1 and self.rng.random() < self.shuffle_probability:
            order = np.concatenate([self.rng.permutation(exploit[:k]), exploit[k:]])
            return Served(order, True, _loss_against(scored, exploit, k)(order), randomized=True)
        if k == 0 or self.max_loss == 0.0:
            return Served(exploit, False, 0.0)
        ref = exploit if self.reference == "exploit" else np.argsort(-scored.base, kind="stable")
        loss = _loss_against(scored, ref, k)
        order = self._proposal(scored, exploit, k)
        for fixed in range(k + 1):  # repair: take the top from exploit until the bound holds
            candidate = _with_prefix(exploit[:fixed], order)
            if loss(candidate) <= self.max_loss:
                order = candidate
                break
        if self.rng.random() < self.swap_probability and k > 1:
            swapped = order.copy()
            i = int(self.rng.integers(k - 1))
            swapped[[i, i + 1]] = swapped[[i + 1, i]]
            if loss(swapped) <= self.max_loss:
                order = swapped
        return Served(order, bool((order[:k] != exploit[:k]).any()), loss(order))

    def _proposal(self, scored: Scored, exploit: np.ndarray, k: int) -> np.ndarray:
        n = len(scored.docs)
        # a sampled tie must not favour the known document: ties break at random
        chosen = np.lexsort((self.rng.random(n), -scored.sample(self.rng)))[:k]
        if self.uncertainty_first:
            stop = np.zeros(n) if scored.stop is None else scored.stop
            value = look_values(scored, k) / (stop + self.stop_floor)
            chosen = chosen[np.argsort(-value[chosen], kind="stable")]  # ties: by the draw
        return _with_prefix(chosen, exploit)


def look_values(scored: Scored, k: int) -> np.ndarray:
    """What knowing each document's attractiveness would be worth to the exploit list.

    The expected value of perfect information for DCG@k, gains being posterior mean
    attractiveness: were document i's attractiveness revealed to be level x, the list
    re-ranked with it would gain DCG@k over the current list kept as it is; the value is that
    gain averaged over i's posterior. It is zero for a document whose level is known and for
    one that could not reach the top ``k`` at any level it may have, and largest for one whose
    possible levels span places where the discount changes most.

    Examples
    --------
    >>> from streamrank.models.learning.online_ranker import ScoredCandidate, OnlineRanker
    >>> scored = OnlineRanker().score_one("q", [ScoredCandidate(f"d{i}", ce=-i) for i in range(30)])
    >>> values = look_values(scored, k=10)    # no clicks yet: the 10th is on the border
    >>> int(values.argmax()), round(float(values[9]), 4), round(float(values[29]), 4)
    (9, 0.0379, 0.0)
    """
    attract, levels = scored.attract, scored.levels
    mean = attract @ levels
    n = len(mean)
    discount = np.zeros(n + 1)  # zero below the top k, so lists of any length sum alike
    discount[: min(k, n)] = _discount(min(k, n))
    order = np.argsort(-mean, kind="stable")
    rank = np.empty(n, dtype=int)
    rank[order] = np.arange(n)
    top = mean[order[: k + 1]]
    current = float(top[:k] @ discount[: len(top[:k])])
    # a document below rank k + 1 leaves the others' top k as it is: one computation for all
    outside = _dcg_with_one_more(top[:k], levels, discount) - current
    values = attract @ np.maximum(outside, 0.0)
    for i in order[: k + 1]:
        others = np.delete(top, rank[i])[:k]
        kept = np.full(len(levels), current)
        if rank[i] < k:  # the current list keeps it where it is, at its revealed level
            kept += (levels - mean[i]) * discount[rank[i]]
        gain = _dcg_with_one_more(others, levels, discount) - kept
        values[i] = attract[i] @ np.maximum(gain, 0.0)
    return values


def _dcg_with_one_more(others: np.ndarray, levels: np.ndarray, discount: np.ndarray) -> np.ndarray:
    """DCG of ``others`` (gains, best first) with one more gain of each level put in its place."""
    m = len(others)
    slot = (others[None, :] > levels[:, None]).sum(axis=1)
    above = np.concatenate([[0.0], np.cumsum(others * discount[:m])])
    below = np.concatenate([[0.0], np.cumsum(others * discount[1 : m + 1])])  # moved down one
    return above[slot] + levels * discount[slot] + below[m] - below[slot]


def _loss_against(scored: Scored, reference: np.ndarray, k: int) -> Callable[[np.ndarray], float]:
    """The bound's measure: an order's relative DCG@k loss against ``reference``."""
    gains = np.maximum(scored.mean - scored.mean.min(), 0.0)
    discount = _discount(k)
    best = float(gains[reference[:k]] @ discount)

    def loss(order: np.ndarray) -> float:
        return 0.0 if best <= 0 else max(0.0, 1.0 - float(gains[order[:k]] @ discount) / best)

    return loss


def _discount(k: int) -> np.ndarray:
    """DCG's position discounts 1 / log2(rank + 1) for ranks 1..k."""
    return 1.0 / np.log2(np.arange(k) + 2.0)


def _with_prefix(prefix: np.ndarray, rest: np.ndarray) -> np.ndarray:
    """``prefix`` followed by the items of ``rest`` not in it, in ``rest``'s order."""
    taken = np.zeros(max(len(rest), int(prefix.max(initial=-1)) + 1), dtype=bool)
    taken[prefix] = True
    return np.concatenate([prefix, rest[~taken[rest]]]).astype(int)

"""Safe exploration: show users a ranking that teaches the learner, within a quality bound.

The learner only hears about documents users look at, so some impressions must go to
documents it is unsure about. :class:`SafeExplorer` does it in three steps:

1. **Which documents**: one Thompson draw from the ranker's posterior picks the ``k`` to
   show, so a document is shown about as often as it might belong there.
2. **In which order**: what the learner most needs to know is which documents belong in the
   top ``k``, so the shown ones are ordered by how open that question is for each, p(1 - p)
   with p the share of ``draws`` Thompson draws that put the document in the top ``k`` (a
   look at a document surely in or surely out changes no ranking), divided by the chance
   that a user who looks at it stops there (``Scored.stop``, plus ``stop_floor``). Users
   who stop once satisfied look at the top results only, and a look is worth what it
   teaches times the chance the user is still looking; the ratio order maximises that sum
   (Smith's rule for a sequence of tests any of which may end the search). For
   position-based users ``stop`` is zero and the order is by p(1 - p) alone. On DL19
   (navigational users, seeds 0-2, 200 sessions per query) this lifts nDCG@10 from 0.870
   (order by posterior standard deviation, as before) to 0.871-0.876 across runs; the
   ambiguity order without the stop ratio gave 0.874, the stop ratio on the standard
   deviation 0.868.
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
   and estimators fitted on such adaptive logs are biased by 10-25% on DL19).

Gains for the bound are posterior mean attractiveness above the list's least attractive
candidate, so a result nobody would click counts as zero.

Examples
--------
>>> from models.online_ranker import Candidate, OnlineRanker
>>> ranker = OnlineRanker()
>>> scored = ranker.score_one("q", [Candidate(f"d{i}", ce=-i) for i in range(20)])
>>> explorer = SafeExplorer(k=5, max_loss=0.0, seed=1)
>>> served = explorer.rank_one(scored)
>>> [scored.docs[i] for i in served.order[:5]], served.loss        # no loss allowed: exploit
(['d0', 'd1', 'd2', 'd3', 'd4'], 0.0)
>>> served = SafeExplorer(k=5, max_loss=0.5, seed=1).rank_one(scored)
>>> served.explored, served.loss <= 0.5
(True, True)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.online_ranker import Scored


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
    """Thompson sampling for the shown set, uncertainty-first order, a DCG-loss bound.

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
    draws
        Thompson draws that estimate each document's probability of belonging in the top
        ``k`` (the first one also picks the shown documents).
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
        draws: int = 16,
        stop_floor: float = 0.05,
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
        self.draws = max(int(draws), 1)
        self.stop_floor = stop_floor
        self.rng = np.random.default_rng(seed)

    def rank_one(self, scored: Scored, interventions: bool = False) -> Served:
        """The list to serve for one request (``interventions``: allow a randomized one)."""
        exploit = scored.exploit_order()
        k = min(self.k, len(exploit))
        if interventions and k > 1 and self.rng.random() < self.shuffle_probability:
            order = np.concatenate([self.rng.permutation(exploit[:k]), exploit[k:]])
            return Served(order, True, _loss(scored, exploit, order, k), randomized=True)
        if k == 0 or self.max_loss == 0.0:
            return Served(exploit, False, 0.0)
        gains = np.maximum(scored.mean - scored.mean.min(), 0.0)
        discount = 1.0 / np.log2(np.arange(k) + 2.0)
        ref = exploit if self.reference == "exploit" else np.argsort(-scored.base, kind="stable")
        best = float(gains[ref[:k]] @ discount)

        def loss(order: np.ndarray) -> float:
            return 0.0 if best <= 0 else max(0.0, 1.0 - float(gains[order[:k]] @ discount) / best)

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
        draws = [np.lexsort((self.rng.random(n), -scored.sample(self.rng)))]
        chosen = draws[0][:k]
        if self.uncertainty_first:
            for _ in range(self.draws - 1):
                draws.append(np.lexsort((self.rng.random(n), -scored.sample(self.rng))))
            inside = np.zeros(n)
            for order in draws:
                inside[order[:k]] += 1.0
            p = inside / len(draws)
            stop = np.zeros(n) if scored.stop is None else scored.stop
            value = p * (1.0 - p) / (stop + self.stop_floor)
            chosen = chosen[np.argsort(-value[chosen], kind="stable")]  # ties: by the draw
        return _with_prefix(chosen, exploit)


def _loss(scored: Scored, exploit: np.ndarray, order: np.ndarray, k: int) -> float:
    gains = np.maximum(scored.mean - scored.mean.min(), 0.0)
    discount = 1.0 / np.log2(np.arange(k) + 2.0)
    best = float(gains[exploit[:k]] @ discount)
    return 0.0 if best <= 0 else max(0.0, 1.0 - float(gains[order[:k]] @ discount) / best)


def _with_prefix(prefix: np.ndarray, rest: np.ndarray) -> np.ndarray:
    """``prefix`` followed by the items of ``rest`` not in it, in ``rest``'s order."""
    taken = np.zeros(max(len(rest), int(prefix.max(initial=-1)) + 1), dtype=bool)
    taken[prefix] = True
    return np.concatenate([prefix, rest[~taken[rest]]]).astype(int)

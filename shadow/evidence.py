"""A shadow version's running evidence, in Redis: what every worker adds and the report reads.

Per shadow version:

- agreement samples from mirroring (Kendall's tau, RBO, overlap@10, both latencies), the
  newest ``SAMPLES_KEPT``;
- the click-based preference: per click, whether the shadow would have put the clicked
  document higher than the primary did, lower, or at the same rank;
- interleaving outcomes, one per closed session in arrival order (the sequential test needs
  the order): +1 the shadow won, -1 the primary won, 0 a tie;
- the A/B split: per closed session, which arm served it and its click metrics (clicked at
  all, clicks in the top k, reciprocal rank of the first click).

Every write is idempotent: a request id or an event id is claimed first (``SET NX``), so a
replayed message adds nothing.

Keys: a version's aggregates (counts, samples, click preference, outcomes, A/B lists) are
``<prefix>{<version>}:<name>``; the hash tag keeps them in one slot of a Redis Cluster, so
the transactions that write two of them and the snapshot that reads them all at one moment
are allowed there. The per-request claims and rankings (``<prefix><version>:seen:...``,
``<prefix><version>:ranking:<request>``), the bulk of the keys, are written one at a time and
carry no tag, so they spread over the shards.

This module knows Redis and nothing of the deployment: the caller passes the key prefix and
the lifetimes (the streaming side derives them from its settings), so the experiment logic
can be read, tested and reused without the runtime.

Examples
--------
>>> from streamrank.models.registry import redis_from_env
>>> client = redis_from_env()  # $STREAMRANK_REDIS_URL (a cluster when so set), else local
>>> stats = ShadowStats(
...     client, "doctest-shadow.shadow:", "v2", dedupe_ttl_s=3600, ranking_ttl_s=3600
... )
>>> primary, shadow = ["d1", "d2", "d3"], ["d3", "d1"]
>>> stats.clear()  # doctest: +SKIP
>>> stats.record_click("e1", "d3", primary, shadow)  # doctest: +SKIP
True
>>> stats.record_click("e1", "d3", primary, shadow)  # a replay  # doctest: +SKIP
False
>>> stats.snapshot().click_preference  # doctest: +SKIP
{'shadow_higher': 1, 'primary_higher': 0, 'same': 0}
>>> stats.clear()  # doctest: +SKIP
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis

SAMPLES_KEPT = 10_000
"""Agreement samples kept per shadow (the report's percentiles are over these)."""


@dataclass
class Snapshot:
    """Everything the report needs about one shadow version, read at one moment."""

    version: str
    requests: int = 0
    unmatched: int = 0
    samples: list[dict[str, float | None]] = field(default_factory=list)
    click_preference: dict[str, int] = field(default_factory=dict)
    interleaving: list[int] = field(default_factory=list)
    ab: dict[str, list[dict[str, float]]] = field(default_factory=dict)


class AgreementMeasures(Protocol):
    """What :meth:`ShadowStats.record_comparison` reads of one comparison of two lists.

    The streaming side's ``Comparison`` event has these attributes and is passed as it is.
    """

    @property
    def kendall_tau(self) -> float | None: ...

    @property
    def rbo(self) -> float | None: ...

    @property
    def overlap_at_10(self) -> float | None: ...


class ShadowStats:
    """Reads and writes one shadow version's evidence under a Redis key prefix.

    Parameters
    ----------
    client
        The Redis every worker of the deployment shares.
    prefix
        Prepended to every key, before the version: keys are ``<prefix><version>:<parts>``.
    version
        The shadow version whose evidence this is.
    dedupe_ttl_s
        How long a claimed request or event id is remembered (how late a replay is still
        recognised).
    ranking_ttl_s
        How long the shadow's ranking of a request is kept for the clicks on the primary's
        list to be compared against (as long as the primary keeps its impression).
    """

    def __init__(
        self,
        client: redis.Redis,
        prefix: str,
        version: str,
        *,
        dedupe_ttl_s: int,
        ranking_ttl_s: int,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.version = version
        self.dedupe_ttl_s = dedupe_ttl_s
        self.ranking_ttl_s = ranking_ttl_s

    def _key(self, *parts: str) -> str:
        """An aggregate's key, under the version's hash tag (see the module docstring)."""
        return self.prefix + "{" + self.version + "}:" + ":".join(parts)

    def _request_key(self, *parts: str) -> str:
        """A per-request key (claim or ranking): untagged, so these spread over shards."""
        return self.prefix + ":".join((self.version, *parts))

    def _claim(self, *parts: str) -> bool:
        """True the first time these parts are claimed (within the dedupe TTL)."""
        claimed = self.client.set(
            self._request_key("seen", *parts), b"1", nx=True, ex=self.dedupe_ttl_s
        )
        return bool(claimed)

    # -- mirroring ------------------------------------------------------------------------

    def claim_request(self, request_id: str) -> bool:
        return self._claim("request", request_id)

    def remember_ranking(self, request_id: str, docs: Sequence[str]) -> None:
        self.client.set(
            self._request_key("ranking", request_id),
            json.dumps(list(docs)),
            ex=self.ranking_ttl_s,
        )

    def ranking(self, request_id: str) -> list[str] | None:
        raw = self.client.get(self._request_key("ranking", request_id))
        return json.loads(raw) if raw else None

    def count_unmatched(self) -> None:
        self.client.hincrby(self._key("counts"), "unmatched", 1)

    def record_comparison(
        self, comparison: AgreementMeasures, shadow_ms: float, primary_ms: float | None
    ) -> None:
        sample = {
            "tau": comparison.kendall_tau,
            "rbo": comparison.rbo,
            "overlap": comparison.overlap_at_10,
            "shadow_ms": shadow_ms,
            "primary_ms": primary_ms,
            "at": time.time(),
        }
        pipe = self.client.pipeline(transaction=True)  # counted and kept together
        pipe.hincrby(self._key("counts"), "requests", 1)
        pipe.rpush(self._key("samples"), json.dumps(sample))
        pipe.ltrim(self._key("samples"), -SAMPLES_KEPT, -1)
        pipe.execute()

    # -- clicks ---------------------------------------------------------------------------

    def record_click(
        self, event_id: str, doc_id: str, primary: Sequence[str], shadow: Sequence[str]
    ) -> bool:
        """Credit a click to the list that ranked ``doc_id`` higher; False for a replay.

        A document a list does not contain counts as ranked just below its end.
        """
        if not self._claim("click", event_id):
            return False
        primary_rank = _rank(doc_id, primary)
        shadow_rank = _rank(doc_id, shadow)
        if shadow_rank < primary_rank:
            field_name = "shadow_higher"
        elif shadow_rank > primary_rank:
            field_name = "primary_higher"
        else:
            field_name = "same"
        self.client.hincrby(self._key("clicks"), field_name, 1)
        return True

    # -- interleaving and A/B ---------------------------------------------------------------

    def record_interleaving(self, request_id: str, outcome: int) -> bool:
        """One closed interleaved session: +1 the shadow won, -1 the primary, 0 a tie."""
        if outcome not in (-1, 0, 1):
            raise ValueError(f"an interleaving outcome is -1, 0 or 1, not {outcome}")
        if not self._claim("interleaving", request_id):
            return False
        self.client.rpush(self._key("interleaving"), outcome)
        return True

    def record_ab(self, request_id: str, arm: str, metrics: dict[str, float]) -> bool:
        """One closed A/B session served by ``arm`` (``primary`` or ``shadow``)."""
        if arm not in ("primary", "shadow"):
            raise ValueError(f"an A/B arm is 'primary' or 'shadow', not {arm!r}")
        if not self._claim("ab", request_id):
            return False
        self.client.rpush(self._key("ab", arm), json.dumps(metrics))
        return True

    # -- reading --------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        pipe = self.client.pipeline(transaction=True)  # one moment: one MULTI
        pipe.hgetall(self._key("counts"))
        pipe.lrange(self._key("samples"), 0, -1)
        pipe.hgetall(self._key("clicks"))
        pipe.lrange(self._key("interleaving"), 0, -1)
        pipe.lrange(self._key("ab", "primary"), 0, -1)
        pipe.lrange(self._key("ab", "shadow"), 0, -1)
        counts, samples, clicks, outcomes, ab_primary, ab_shadow = pipe.execute()
        counts = {k.decode(): int(v) for k, v in counts.items()}
        clicks = {k.decode(): int(v) for k, v in clicks.items()}
        return Snapshot(
            version=self.version,
            requests=counts.get("requests", 0),
            unmatched=counts.get("unmatched", 0),
            samples=[json.loads(s) for s in samples],
            click_preference={
                name: clicks.get(name, 0) for name in ("shadow_higher", "primary_higher", "same")
            },
            interleaving=[int(o) for o in outcomes],
            ab={
                "primary": [json.loads(m) for m in ab_primary],
                "shadow": [json.loads(m) for m in ab_shadow],
            },
        )

    def clear(self) -> None:
        """Forget this version's evidence (a restarted experiment; tests)."""
        for pattern in (self._key("*"), self._request_key("*")):
            for name in self.client.scan_iter(match=pattern):
                self.client.delete(name)


def _rank(doc_id: str, docs: Sequence[str]) -> int:
    return docs.index(doc_id) if doc_id in docs else len(docs)


def session_metrics(clicked_positions: Sequence[int], k: int = 10) -> dict[str, Any]:
    """A/B metrics of one session from its clicked 1-based positions.

    >>> session_metrics([3, 1])
    {'clicked': 1.0, 'clicks_at_k': 2.0, 'reciprocal_rank': 1.0}
    """
    top = [p for p in clicked_positions if p <= k]
    return {
        "clicked": 1.0 if clicked_positions else 0.0,
        "clicks_at_k": float(len(top)),
        "reciprocal_rank": 1.0 / min(clicked_positions) if clicked_positions else 0.0,
    }

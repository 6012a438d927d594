"""All of streamrank's settings, in one place.

Every field reads from an environment variable named ``STREAMRANK_<FIELD>`` (for example
``STREAMRANK_KAFKA_BOOTSTRAP``) and, when ``STREAMRANK_CONFIG_FILE`` names one, from a
``KEY=value`` file with the same names; the environment wins over the file.

Examples
--------
>>> settings = Settings(topic_prefix="demo.")
>>> settings.topic("candidates")
'demo.candidates'
"""

from __future__ import annotations

import math
import os
import ssl
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streamrank.models.assets.model_files import default_model_dir
from streamrank.models.scoring.fusion import DEFAULT_FUSION, Fusion
from streamrank.streams.events import Limits


class Settings(BaseSettings):
    """streamrank's configuration; see the module docstring for where values come from."""

    model_config = SettingsConfigDict(
        env_prefix="STREAMRANK_",
        env_file=os.environ.get("STREAMRANK_CONFIG_FILE"),
        extra="ignore",
        protected_namespaces=(),
    )

    # Kafka
    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = None
    kafka_ssl_cafile: str | None = None
    kafka_ssl_certfile: str | None = None
    kafka_ssl_keyfile: str | None = None
    topic_prefix: str = "streamrank."
    partitions: int = Field(4, ge=1, description="partitions per topic; workers scale up to this")
    replication_factor: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto",
        description="copies of each topic streamrank creates; auto: min(3, the brokers the "
        "cluster has), resolved when topics or the worker's app are created",
    )
    app_id: str = "streamrank"
    kafka_session_timeout_s: float = Field(
        6.0,
        gt=0,
        description="a worker that stops heartbeating loses its partitions after this "
        "(the broker's group.min.session.timeout.ms, 6 s by default, is the floor)",
    )
    kafka_heartbeat_interval_s: float = Field(
        1.0, gt=0, description="how often a worker heartbeats (at most a third of the above)"
    )
    log_rate_burst: int = Field(
        5, ge=1, description="records of one logger and message template let through per interval"
    )
    log_rate_interval_s: float = Field(
        10.0, gt=0, description="after the burst, one summary line per template per interval"
    )

    # Redis
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_cluster: bool = Field(
        False,
        description="the URL names one node of a Redis Cluster (redis-py's RedisCluster client)",
    )
    redis_cluster_nodes: str = Field(
        "",
        pattern=r"^$|^[^\s,:]+:[0-9]{1,5}(,[^\s,:]+:[0-9]{1,5})*$",
        description="more host:port nodes of the Redis Cluster to start from, comma-separated "
        "(a client then starts while the URL's node is down)",
    )
    redis_wait_replicas: int = Field(
        1,
        ge=0,
        description="on a Redis Cluster, replicas that must hold what the learn path wrote "
        "before its Kafka offsets are committed (0: do not wait)",
    )
    redis_wait_timeout_s: float = Field(
        2.0, gt=0, description="how long the learn path waits for those replicas per write"
    )
    redis_password: str | None = None
    redis_ssl_ca_certs: str | None = None
    redis_timeout_s: float = Field(
        0.5,
        gt=0,
        description="timeout of each Redis call on the request path (then: ranked degraded)",
    )
    redis_slow_timeout_s: float = Field(
        30.0,
        gt=0,
        description="timeout of every other Redis call (learn scripts, registry artifacts)",
    )
    redis_breaker_failures: int = Field(
        3, ge=1, description="consecutive Redis failures that stop the request path asking it"
    )
    redis_breaker_open_s: float = Field(
        1.0, gt=0, description="how long the request path then skips Redis before one probe"
    )

    # Limits on what one message may hold
    max_candidates: int = Field(2000, ge=1)
    max_query_chars: int = Field(1000, ge=1)
    max_text_chars: int = Field(20_000, ge=1)
    max_message_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="largest Kafka message (1,000 candidates with text)"
    )

    # State kept in Redis
    dedupe_ttl_s: int = Field(
        7 * 24 * 3600, ge=1, description="how long a processed-request marker lives (replays)"
    )
    impression_backlog: int = Field(
        10_000,
        ge=0,
        description="impressions a worker keeps in memory while Redis does not take them, "
        "written when it answers so their clicks are learned (0: none)",
    )
    impression_ttl_s: int = Field(
        0,
        ge=0,
        description="how long a served ranking waits for its clicks; 0: click_window_s + "
        "session_close_s + orphan_window_s + shadow_join_window_s",
    )
    click_window_s: float = Field(
        300.0, gt=0, description="how late after serving a session's first click is still learned"
    )

    # Model registry and operators
    registry_key: str = Field(
        "", description="HMAC-SHA256 key that signs registry artifacts; required to use it"
    )
    operator_token: str = Field(
        "", description="the operator token `promote`/`rollback` callers must present (--token)"
    )
    journal_enabled: bool = Field(
        True,
        description="also write registry and checkpoint records to the compacted `state` topic, "
        "from which an emptied Redis is restored (false: Redis alone, e.g. without Kafka)",
    )
    promotion_min_sessions: int = Field(
        200, ge=1, description="interleaved sessions a shadow needs before it may be promoted"
    )
    promotion_alpha: float = Field(
        0.05, gt=0, lt=1, description="significance level of promotion (sequential test)"
    )
    control_poll_s: float = Field(
        2.0, gt=0, description="how often a worker re-reads the active pointer (missed messages)"
    )

    # Shadow rankers
    shadow_version: str | None = Field(
        None,
        description="the version a shadow worker mirrors when none is given "
        "(`streamrank shadow worker VERSION` passes its own)",
    )
    shadow_nice: bool = Field(True, description="run shadow workers at the lowest CPU priority")
    shadow_concurrency: int = Field(2, ge=1, description="requests a shadow worker ranks at once")
    shadow_join_window_s: float = Field(
        10.0, ge=0, description="how long a shadow waits for the primary's impression"
    )
    interleave_fraction: float = Field(
        0.0, ge=0, le=1, description="share of requests served as primary/shadow interleaving"
    )
    ab_fraction: float = Field(
        0.0, ge=0, le=1, description="share of users (by user-id hash) served by the shadow"
    )

    # Worker
    poison_tries: int = Field(
        3,
        ge=1,
        description="tries of a message whose handler fails (not for Redis being away) before "
        "it goes to the dead letters, so no message stalls its partition",
    )
    retry_backoff_max_s: float = Field(
        5.0, gt=0, description="longest wait between retries while Redis is unreachable"
    )
    web_port: int = 6066
    web_enabled: bool = False
    web_host: str = Field(
        "127.0.0.1",
        description="address the web pages listen on (0.0.0.0: every interface; "
        "set STREAMRANK_WEB_TOKEN then)",
    )
    web_token: str = Field(
        "",
        repr=False,
        description="bearer token `/dashboard` and `/metrics` require (empty: none; "
        "`/health` stays open)",
    )

    # Models
    model_dir: Path = Field(default_factory=default_model_dir)

    # Re-ranking
    pipeline: str = Field(
        "dense>ce:30", description="the cascade: tiers and K values (see docs/models.md)"
    )
    max_length: int = Field(256, ge=16, le=512, description="cross-encoder tokens per pair")
    latency_budget_ms: float = Field(
        250.0, gt=0, description="per request; past it, unscored candidates keep earlier order"
    )
    skip_ce_if_margin_at_least: float | None = Field(
        None, description="skip the cross-encoder when the first stage's top-1 margin is this big"
    )
    skip_ce_if_top_score_below: float | None = Field(
        None, description="skip the cross-encoder when the best first-stage score is this low"
    )
    fusion: Literal["none", "minmax", "zscore", "rrf"] = Field(
        DEFAULT_FUSION.method,
        description="how each tier's scores combine with the order it received "
        "(none: the tier's own order; see docs/models.md)",
    )
    fusion_weight: float = Field(
        DEFAULT_FUSION.weight,
        ge=0,
        le=1,
        description="the tier's share in the fusion (1: the tier alone); "
        "fit per corpus with `streamrank eval fit-fusion`",
    )
    score_cache_ttl_s: int = Field(3600, ge=1, description="cross-encoder score cache lifetime")
    vector_cache_ttl_s: int = Field(7 * 24 * 3600, ge=1, description="document vector lifetime")
    inference_threads: int = Field(
        4, ge=1, description="requests ranked at once per worker (their model calls are merged)"
    )
    batch_wait_ms: float = Field(
        2.0, ge=0, description="how long a model call waits for concurrent requests to join"
    )

    # Online learning (see docs/learning.md)
    online_learning: bool = Field(
        True,
        description="order the cascade's top by the online ranker and learn from interactions",
    )
    feature_store: bool = Field(
        True,
        description="feed the feature store's state in Redis from items, users and interactions",
    )
    feature_time: Literal["wall", "event"] = Field(
        "wall",
        description="the time a request's features are computed at: wall, when it is ranked; "
        "event, its own timestamp (a replay of history ranks as it would have then)",
    )
    feature_log: bool = Field(
        True,
        description="publish each served list's feature vectors to the `impressions` topic "
        "(the final ranker's training data; needs feature_store)",
    )
    online_top_k: int = Field(
        50, ge=1, description="how many of the cascade's top results the online ranker orders"
    )
    exploration_max_loss: float = Field(
        0.1,
        ge=0,
        le=1,
        description="largest estimated DCG@k loss exploration may cost a list (0: none)",
    )
    learner_ttl_s: int = Field(
        30 * 24 * 3600, ge=1, description="click statistics of a pair live this long after a write"
    )
    session_close_s: float = Field(
        5.0, gt=0, description="a session is learned this long after its last interaction"
    )
    orphan_window_s: float = Field(
        60.0, gt=0, description="how long an interaction waits for its impression (then: orphan)"
    )
    learn_batch_size: int = Field(
        1000, ge=1, description="most interactions the learn agent applies at once (one script)"
    )
    learn_batch_wait_ms: float = Field(
        50.0, gt=0, description="how long the learn agent waits for interactions when none are in"
    )
    learn_tick_s: float = Field(
        0.5, gt=0, description="how often a worker closes due sessions and retries orphans"
    )
    checkpoint_every_events: int = Field(
        10_000, ge=1, description="interactions between two checkpoints of the learner's model"
    )
    checkpoint_every_s: float = Field(
        300.0, gt=0, description="seconds between two checkpoints (when anything was learned)"
    )

    # First-stage retrieval (the retrieve agent runs only when an index is configured)
    index_dir: Path | None = Field(None, description="an index from `streamrank index build`")
    retrieve_method: Literal["bm25", "dense", "hybrid"] = "hybrid"
    retrieve_k: int = Field(1000, ge=1, description="K1: candidates retrieved per query")
    rrf_constant: float = Field(60.0, gt=0, description="reciprocal-rank fusion constant")
    bm25_weight: float = Field(1.0, ge=0, description="weight of BM25 in the hybrid fusion")
    dense_weight: float = Field(1.0, ge=0, description="weight of dense in the hybrid fusion")

    @model_validator(mode="after")
    def derive_impression_ttl(self) -> Settings:
        """An ``impression_ttl_s`` of 0 becomes the longest time anything may still join a
        served ranking: a first click up to ``click_window_s`` after serving, the session
        closing ``session_close_s`` after its last event, an interaction that overtook its
        impression waiting ``orphan_window_s``, and a shadow waiting ``shadow_join_window_s``
        for it. An impression costs Redis memory for as long as it lives (one per request),
        so it lives no longer than a click can use it."""
        if self.impression_ttl_s == 0:
            windows = (
                self.click_window_s
                + self.session_close_s
                + self.orphan_window_s
                + self.shadow_join_window_s
            )
            self.impression_ttl_s = max(1, math.ceil(windows))
        return self

    def cascade_fusion(self) -> Fusion:
        """The configured :class:`~streamrank.models.scoring.fusion.Fusion`."""
        return Fusion(self.fusion, self.fusion_weight)

    def topic(self, kind: str) -> str:
        """The full Kafka topic name for a kind of message, prefix included."""
        return f"{self.topic_prefix}{kind}"

    def limits(self) -> Limits:
        """The per-message size limits, as the event decoder takes them."""
        return Limits(
            max_candidates=self.max_candidates,
            max_query_chars=self.max_query_chars,
            max_text_chars=self.max_text_chars,
        )

    def kafka_client_options(self) -> dict[str, Any]:
        """Security settings in kafka-python's (and aiokafka's) keyword names."""
        options: dict[str, Any] = {"security_protocol": self.kafka_security_protocol}
        if self.kafka_security_protocol.startswith("SASL"):
            options |= {
                "sasl_mechanism": self.kafka_sasl_mechanism,
                "sasl_plain_username": self.kafka_sasl_username,
                "sasl_plain_password": self.kafka_sasl_password,
            }
        if self.kafka_security_protocol.endswith("SSL"):
            options |= {
                "ssl_cafile": self.kafka_ssl_cafile,
                "ssl_certfile": self.kafka_ssl_certfile,
                "ssl_keyfile": self.kafka_ssl_keyfile,
            }
        return options

    def aiokafka_client_options(self) -> dict[str, Any]:
        """The same security settings in aiokafka's names (it takes an SSL context, not files)."""
        options = {
            key: value
            for key, value in self.kafka_client_options().items()
            if not key.startswith("ssl_")
        }
        context = self.ssl_context()
        if context is not None:
            options["ssl_context"] = context
        return options

    def ssl_context(self) -> ssl.SSLContext | None:
        """An SSL context for Faust's broker credentials, or None on plaintext."""
        if not self.kafka_security_protocol.endswith("SSL"):
            return None
        context = ssl.create_default_context(cafile=self.kafka_ssl_cafile)
        if self.kafka_ssl_certfile:
            context.load_cert_chain(self.kafka_ssl_certfile, self.kafka_ssl_keyfile)
        return context

    def redis_startup_nodes(self) -> list[tuple[str, int]]:
        """``redis_cluster_nodes`` as ``(host, port)`` pairs.

        Examples
        --------
        >>> Settings(redis_cluster_nodes="10.0.0.2:7001,10.0.0.3:7002").redis_startup_nodes()
        [('10.0.0.2', 7001), ('10.0.0.3', 7002)]
        """
        pairs = [node.rsplit(":", 1) for node in self.redis_cluster_nodes.split(",") if node]
        return [(host, int(port)) for host, port in pairs]

    def redis_options(self, timeout_s: float | None = None) -> dict[str, Any]:
        """Password, TLS and timeout settings in redis-py's keyword names.

        ``timeout_s`` bounds connecting and each reply; the default, ``redis_slow_timeout_s``,
        leaves room for the learn path's Lua scripts and for large registry artifacts, while
        still never waiting forever on a Redis host that vanished. The request path asks for
        ``redis_timeout_s`` (see :mod:`streamrank.streams.state.breaker`).
        """
        timeout = self.redis_slow_timeout_s if timeout_s is None else timeout_s
        options: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
        if self.redis_password:
            options["password"] = self.redis_password
        if self.redis_ssl_ca_certs:
            options["ssl_ca_certs"] = self.redis_ssl_ca_certs
        return options


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()

"""The business rules in Redis, and the copy of them each worker applies.

The rules config (:class:`~streamrank.models.scoring.rules.RulesConfig`, as JSON) lives in one
Redis hash of the deployment, ``<prefix>rules``: ``config`` (the JSON text), ``sha256`` (its
hash) and ``version``, a counter every write and every clear increments. ``streamrank rules
set`` writes it and publishes a ``control`` message; each worker's :class:`LiveRules` then
re-reads it (and does so every ``control_poll_s`` as well, for a message it missed).

A worker re-reads the config only when the version or hash changed (one ``HMGET`` of two
short fields otherwise), and swaps its rules in one assignment, so a request is ruled by one
config from start to end. A stored config that does not load (someone wrote Redis by hand) is
logged once and the running rules are kept: a bad write never leaves a worker without rules.
No stored config, or a cleared one, means no rules: rankings are served as the model ordered
them.

Examples
--------
>>> live = LiveRules(store=None)
>>> live.update(StoredRules(1, "a1", '{"out_of_stock": "filter"}'))
True
>>> live.config.out_of_stock
'filter'
>>> live.update(StoredRules(2, "b2", '{"out_of_stock": "hide"}'))  # refused: kept
False
>>> live.config.out_of_stock, live.version
('filter', 1)
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import redis

from streamrank.models.scoring.rules import RulesConfig, RulesError, reload_rules
from streamrank.streams.config import Settings
from streamrank.streams.state.connections import key
from streamrank.streams.state.feature_store import RULE_FIELDS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoredRules:
    """What Redis holds: the version, the config's hash and its JSON (None: no rules)."""

    version: int
    sha256: str | None
    config: str | None = None

    @property
    def stamp(self) -> tuple[int, str | None]:
        """What identifies this state: a worker re-reads the config only when it changes."""
        return self.version, self.sha256


def config_json(config: RulesConfig) -> str:
    """A config as the JSON the store keeps: only the settings that differ from defaults.

    Examples
    --------
    >>> config_json(RulesConfig(bury=frozenset({"d2", "d1"})))
    '{"bury": ["d1", "d2"]}'
    """
    data: dict[str, Any] = config.model_dump(mode="json", exclude_defaults=True)
    if "bury" in data:
        data["bury"] = sorted(data["bury"])  # a set: sorted, so one config has one hash
    return json.dumps(data, sort_keys=True)


class RulesStore:
    """The deployment's rules config in Redis (see the module docstring)."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.client = client
        self.key = key(settings, "rules")

    def save(self, config: RulesConfig, by: str = "") -> StoredRules:
        """Store ``config`` (checked already) as the current rules; the new state."""
        text = config_json(config)
        digest = hashlib.sha256(text.encode()).hexdigest()
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(
            self.key,
            mapping={"config": text, "sha256": digest, "updated_at": repr(time.time()), "by": by},
        )
        pipe.hincrby(self.key, "version", 1)
        version = pipe.execute()[-1]
        return StoredRules(int(version), digest, text)

    def clear(self, by: str = "") -> StoredRules:
        """Remove the rules (the version still counts up, so workers see the change)."""
        pipe = self.client.pipeline(transaction=True)
        pipe.hdel(self.key, "config", "sha256")
        pipe.hset(self.key, mapping={"updated_at": repr(time.time()), "by": by})
        pipe.hincrby(self.key, "version", 1)
        return StoredRules(int(pipe.execute()[-1]), None)

    def stamp(self) -> tuple[int, str | None]:
        """The stored (version, hash), without the config."""
        version, digest = self.client.hmget(self.key, ["version", "sha256"])
        return int(version or 0), digest.decode() if digest else None

    def read(self) -> StoredRules:
        """The stored state, config included, in one read."""
        version, digest, text = self.client.hmget(self.key, ["version", "sha256", "config"])
        return StoredRules(
            int(version or 0),
            digest.decode() if digest else None,
            text.decode() if text else None,
        )


class LiveRules:
    """A worker's rules: the stored config as last loaded, shared by its serving threads.

    Parameters
    ----------
    store
        Where the rules are read (None: only :meth:`update` sets them; tests).
    known_fields
        The item fields a rule may read (:data:`RULE_FIELDS`).

    Attributes
    ----------
    config
        The rules to apply, or None for none; replaced in one assignment.
    version
        The stored version ``config`` came from (0: none loaded).
    refused
        The last stored config's error when it was refused (None once one loads).
    """

    def __init__(
        self, store: RulesStore | None, known_fields: Collection[str] = RULE_FIELDS
    ) -> None:
        self.store = store
        self.known_fields = frozenset(known_fields)
        self.config: RulesConfig | None = None
        self.version = 0
        self.refused: RulesError | None = None
        self.reloads = 0
        self._seen: tuple[int, str | None] | None = None  # the stamp last acted on

    def refresh(self) -> bool:
        """Re-read the store if its stamp changed; True when the rules changed. Redis errors
        propagate (the follower backs off and the running rules stay)."""
        assert self.store is not None
        if self.store.stamp() == self._seen:
            return False
        return self.update(self.store.read())

    def update(self, stored: StoredRules) -> bool:
        """Take a stored state: its config if it loads, else keep the running one (logged)."""
        if stored.stamp == self._seen:
            return False
        self._seen = stored.stamp
        if stored.config is None:
            changed = self.config is not None
            if changed:
                log.warning(
                    "business rules cleared (version %d); serving the model's order", stored.version
                )
            self.config, self.version, self.refused = None, stored.version, None
            return changed
        running = self.config or RulesConfig()
        config, error = reload_rules(running, stored.config, self.known_fields)
        if error is not None:
            self.refused = error
            log.error(
                "stored business rules version %d refused, keeping the running ones (%s): %s",
                stored.version,
                f"version {self.version}" if self.config is not None else "none",
                error,
            )
            return False
        self.config, self.version, self.refused = config, stored.version, None
        self.reloads += 1
        log.info("business rules version %d loaded", stored.version)
        return True

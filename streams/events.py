"""The event contracts: every message on every streamrank topic, one pydantic model each.

Messages are UTF-8 JSON objects. Each carries ``schema_version``; a consumer accepts only the
versions it knows, so a producer that changes a contract must bump it. Unknown fields are
rejected rather than ignored: a typo in a field name is an error the producer hears about
(through the dead-letter topic), not a value that silently disappears.

:func:`decode` is the one way bytes become an event. It raises :class:`ContractError` with a
short machine-readable ``reason`` and a human sentence; agents send such messages to
``deadletter`` instead of crashing.

Examples
--------
>>> event = decode("queries", b'{"request_id": "r1", "query": "river in russia"}', Limits())
>>> event.k
10
>>> try:
...     decode("queries", b'{"query": "no id"}', Limits())
... except ContractError as error:
...     print(error.reason)
contract
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

SCHEMA_VERSION = 1
Id = Field(min_length=1, max_length=256)


class Event(BaseModel):
    """Fields and behaviour that every message shares."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = SCHEMA_VERSION

    def to_bytes(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


class Query(Event):
    """A search request, before any retrieval (topic ``queries``)."""

    request_id: str = Id
    query: str
    k: int = Field(10, ge=1, le=1000, description="how many results the caller will show")
    user_id: str | None = None
    session_id: str | None = None
    context: dict[str, Any] = Field(default_factory=dict)
    timestamp: float = Field(default_factory=time.time)


class Candidate(BaseModel):
    """One first-stage hit: a document, its text (if the producer has it) and its score."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    doc_id: str = Id
    text: str | None = None
    first_stage_score: float = 0.0
    features: dict[str, float] = Field(default_factory=dict)


class Candidates(Event):
    """A query with its first-stage candidate list, in first-stage order (topic ``candidates``)."""

    request_id: str = Id
    query: str
    candidates: list[Candidate]
    k: int = Field(10, ge=1, le=1000)
    user_id: str | None = None
    session_id: str | None = None
    context: dict[str, Any] = Field(default_factory=dict)
    timestamp: float = Field(default_factory=time.time)


class RankedItem(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    doc_id: str = Id
    score: float
    position: int = Field(ge=1, description="1-based position in the served list")
    flags: list[str] = Field(
        default_factory=list,
        description="no_text: ranked by first-stage position; not_scored; explored: placed by "
        "exploration, not by the online ranker's best guess",
    )


class Ranking(Event):
    """The re-ranked list a worker served (topic ``rankings``)."""

    request_id: str = Id
    model_version: str
    items: list[RankedItem]
    timings_ms: dict[str, float] = Field(default_factory=dict, description="per stage")
    degraded: bool = False
    degraded_reason: str | None = None
    user_id: str | None = None
    session_id: str | None = None
    timestamp: float = Field(default_factory=time.time)


InteractionType = Literal["impression", "click", "add_to_cart", "purchase", "dwell"]


class Interaction(Event):
    """Something a user did with a served result (topic ``interactions``)."""

    event_id: str = Id
    request_id: str = Id
    doc_id: str = Id
    type: InteractionType
    user_id: str | None = None
    position: int | None = Field(None, ge=1)
    value: float | None = Field(None, description="dwell seconds, purchase amount, ...")
    timestamp: float = Field(default_factory=time.time)


class Item(Event):
    """A document was added, changed or deleted (topic ``items``)."""

    doc_id: str = Id
    op: Literal["upsert", "delete"] = "upsert"
    title: str | None = None
    text: str | None = None
    features: dict[str, float] = Field(default_factory=dict)
    timestamp: float = Field(default_factory=time.time)


class User(Event):
    """A user's features changed (topic ``users``)."""

    user_id: str = Id
    features: dict[str, float] = Field(default_factory=dict)
    timestamp: float = Field(default_factory=time.time)


class Control(Event):
    """An operator command every worker obeys (topic ``control``)."""

    command_id: str = Id
    action: Literal["promote", "rollback", "reload"]
    version: str | None = None
    issued_by: str | None = None
    reason: str | None = None
    timestamp: float = Field(default_factory=time.time)


class Comparison(Event):
    """How a shadow ranker's list differed from the primary's for one request
    (topic ``comparisons``; written by the shadow side, never shown to users)."""

    request_id: str = Id
    primary_version: str
    shadow_version: str
    kendall_tau: float | None = None
    rbo: float | None = None
    overlap_at_10: float | None = None
    latency_diff_ms: float | None = None
    shadow_items: list[RankedItem] = Field(default_factory=list)
    timestamp: float = Field(default_factory=time.time)


class DeadLetter(Event):
    """A message that could not be processed, kept whole with the reason (topic ``deadletter``)."""

    original_b64: str = Field(description="the original message bytes, base64")
    topic: str
    partition: int | None = None
    offset: int | None = None
    reason: str = Field(
        description="short code: not-utf8, not-json, contract, limit, orphan, late, ..."
    )
    error: str = Field(description="what was wrong, for a person")
    agent: str | None = None
    timestamp: float = Field(default_factory=time.time)

    @property
    def original(self) -> bytes:
        return base64.b64decode(self.original_b64)


EVENT_TYPES: dict[str, type[Event]] = {
    "queries": Query,
    "candidates": Candidates,
    "rankings": Ranking,
    "interactions": Interaction,
    "items": Item,
    "users": User,
    "control": Control,
    "comparisons": Comparison,
    "deadletter": DeadLetter,
}
TOPIC_KINDS = tuple(EVENT_TYPES)


class Limits(BaseModel):
    """Size limits on one message; defaults match :class:`streamrank.streams.config.Settings`."""

    max_candidates: int = 2000
    max_query_chars: int = 1000
    max_text_chars: int = 20_000


class ContractError(ValueError):
    """A message that cannot be accepted; ``reason`` is a short code, the message a sentence."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def decode(kind: str, data: bytes | str, limits: Limits) -> Event:
    """Parse one message of a topic kind, enforcing its contract and the size limits."""
    if kind not in EVENT_TYPES:
        raise ContractError("unknown-topic", f"no contract for topic kind {kind!r}")
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ContractError("not-utf8", f"message is not UTF-8: {error}") from None
    try:
        payload = json.loads(data)
    except json.JSONDecodeError as error:
        raise ContractError("not-json", f"message is not JSON: {error}") from None
    if not isinstance(payload, dict):
        raise ContractError("not-json", "message must be a JSON object")
    check_limits(payload, limits)
    try:
        return EVENT_TYPES[kind].model_validate(payload)
    except ValidationError as error:
        raise ContractError("contract", describe(error)) from None


def check_limits(payload: dict[str, Any], limits: Limits) -> None:
    """Reject oversize messages before validating them (validation of a huge list is slow)."""
    query = payload.get("query")
    if isinstance(query, str) and len(query) > limits.max_query_chars:
        raise ContractError(
            "limit", f"query has {len(query)} characters; the limit is {limits.max_query_chars}"
        )
    candidates = payload.get("candidates")
    if isinstance(candidates, list):
        if len(candidates) > limits.max_candidates:
            raise ContractError(
                "limit",
                f"{len(candidates)} candidates; the limit is {limits.max_candidates} per request",
            )
        for index, candidate in enumerate(candidates):
            text = candidate.get("text") if isinstance(candidate, dict) else None
            if isinstance(text, str) and len(text) > limits.max_text_chars:
                raise ContractError(
                    "limit",
                    f"candidates[{index}].text has {len(text)} characters; "
                    f"the limit is {limits.max_text_chars}",
                )
    text = payload.get("text")
    if isinstance(text, str) and len(text) > limits.max_text_chars:
        raise ContractError(
            "limit", f"text has {len(text)} characters; the limit is {limits.max_text_chars}"
        )


def describe(error: ValidationError) -> str:
    """One line per problem, with the field's path: 'candidates.0.doc_id: Field required'."""
    problems = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "message"
        problems.append(f"{where}: {item['msg']}")
    return "; ".join(problems)

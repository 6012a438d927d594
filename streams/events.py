"""The event contracts: every message on every streamrank topic, one pydantic model each.

Messages are UTF-8 JSON objects. Each carries ``schema_version``; a consumer accepts only the
versions it knows, so a producer that changes a contract must bump it. Unknown fields are
rejected rather than ignored: a typo in a field name is an error the producer hears about
(through the dead-letter topic), not a value that silently disappears.

:func:`decode` is the one way bytes become an event. It raises :class:`ContractError` with a
short machine-readable ``reason`` and a human sentence; agents send such messages to
``deadletter`` instead of crashing. Nothing else ever escapes it: bytes that are not UTF-8,
text that is not JSON, nesting deeper than :data:`MAX_NESTING` (refused by a scan of the raw
text, before the parser would recurse), integers longer than :data:`MAX_INTEGER_DIGITS`,
``NaN`` and ``Infinity`` (Python's json accepts them; a non-finite score or click value would
poison every statistic it touches), duplicate candidate ids and anything else that goes wrong
while decoding all become a :class:`ContractError` with their own reason.

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
import math
import re
import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

SCHEMA_VERSION = 1
Id = Field(min_length=1, max_length=256)
MAX_NESTING = 32
"""Deepest nesting of arrays and objects a message may have (``context`` is free-form)."""
MAX_INTEGER_DIGITS = 100
"""Longest integer literal accepted; far beyond any real field, far below Python's own limit."""
MAX_PROBLEMS = 20
MAX_INTERACTION_VALUE = 1e15
"""The largest dwell time or purchase amount an interaction may carry, either sign."""
MAX_TIMESTAMP = 1e11
"""Epoch seconds of the year 5138: beyond it a timestamp is a unit mistake (ms, ns)."""
"""Contract problems named in one error; a list of a thousand bad candidates names the first."""
# Every contract refuses NaN and Infinity in its float fields (nested dicts of floats included).
FINITE = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Event(BaseModel):
    """Fields and behaviour that every message shares."""

    model_config = FINITE

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

    model_config = FINITE

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
    model_config = FINITE

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
    rules_fired: dict[str, list[str]] | None = Field(
        None,
        description="business rule -> the doc ids it fired on (streamrank rules); absent when "
        "no rules are configured",
    )
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
    position: int | None = Field(None, ge=1, le=1_000_000)
    # Bounded, so that pydantic's own JSON parser (the learn path's fast path) refuses what
    # decode() refuses: an integer too long for decode() is far beyond these bounds.
    value: float | None = Field(
        None,
        ge=-MAX_INTERACTION_VALUE,
        le=MAX_INTERACTION_VALUE,
        description="dwell seconds, purchase amount, ...",
    )
    timestamp: float = Field(default_factory=time.time, ge=0, le=MAX_TIMESTAMP)


class Item(Event):
    """A document was added, changed or deleted (topic ``items``).

    The commerce fields are optional; the business rules after the model read them
    (:mod:`streamrank.models.scoring.rules`). ``in_stock`` is derived from ``stock`` when only
    the count is sent, and refused when it contradicts it; a negative count or price is
    refused, so the message goes to the dead letters with the reason.

    Examples
    --------
    >>> Item(doc_id="sku-1", stock=0).in_stock
    False
    >>> Item(doc_id="sku-2", stock=3, brand="acme").in_stock
    True
    """

    doc_id: str = Id
    op: Literal["upsert", "delete"] = "upsert"
    title: str | None = None
    text: str | None = None
    features: dict[str, float] = Field(default_factory=dict)
    price: float | None = Field(None, ge=0)
    stock: int | None = Field(None, ge=0, description="units available; 0: out of stock")
    in_stock: bool | None = Field(None, description="derived from stock when absent")
    promoted: bool | None = None
    brand: str | None = Field(None, max_length=256)
    category: str | None = Field(None, max_length=256, description="the main category")
    categories: list[Annotated[str, Field(min_length=1, max_length=256)]] | None = Field(
        None, max_length=64, description="every category of the item (its genres, say)"
    )
    created_at: float | None = Field(
        None,
        ge=-MAX_TIMESTAMP,
        le=MAX_TIMESTAMP,
        description="epoch seconds (before 1970 is negative: a film from 1950, say)",
    )
    timestamp: float = Field(default_factory=time.time)

    @model_validator(mode="after")
    def _stock_flag(self) -> Item:
        if self.stock is None:
            return self
        if self.in_stock is None:
            # frozen model: set once, while it is being built
            object.__setattr__(self, "in_stock", self.stock > 0)
        elif self.in_stock != (self.stock > 0):
            raise ValueError(
                f"in_stock is {str(self.in_stock).lower()} but stock is {self.stock}; "
                "send one of them, or both in agreement"
            )
        return self


class User(Event):
    """A user's features changed (topic ``users``)."""

    user_id: str = Id
    features: dict[str, float] = Field(default_factory=dict)
    timestamp: float = Field(default_factory=time.time)


class Control(Event):
    """An operator command every worker obeys (topic ``control``)."""

    command_id: str = Id
    action: Literal["promote", "rollback", "reload", "rules"]
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


class LoggedItem(BaseModel):
    """One shown result as the final ranker saw it (see :class:`Impression`)."""

    model_config = FINITE

    doc_id: str = Id
    position: int = Field(ge=1, description="served (post-rule) position, 1-based")
    features: list[float | None] = Field(
        description="the feature vector it was ranked with, in the feature set's column "
        "order; null where the value was missing (NaN)"
    )
    score: float | None = Field(None, description="the final ranker's pre-rule score, if any")


class Impression(Event):
    """What one ranking showed, with each shown item's feature vector (topic ``impressions``).

    The point-in-time training log of the final ranker: ``streamrank train ranker`` joins it
    with the interactions that follow (by ``request_id`` and ``doc_id``), so a model is
    trained on exactly the values it would have seen when serving. ``features_digest`` names
    the feature set (its content hash): vectors of another feature set are never mixed in.
    """

    request_id: str = Id
    query: str
    user_id: str | None = None
    session_id: str | None = None
    model_version: str
    features_digest: str = Field(min_length=1, max_length=64)
    items: list[LoggedItem]
    served_at: float = Field(ge=0, le=MAX_TIMESTAMP)
    timestamp: float = Field(default_factory=time.time)


class DeadLetter(Event):
    """A message that could not be processed, kept whole with the reason (topic ``deadletter``)."""

    original_b64: str = Field(
        description="the original message bytes, base64 (only their start when truncated)"
    )
    topic: str
    partition: int | None = None
    offset: int | None = None
    reason: str = Field(
        description="short code: not-utf8, not-json, too-deep, number-too-large, non-finite, "
        "contract, duplicate-candidate, limit, handler-error, orphan, late, ..."
    )
    error: str = Field(description="what was wrong, for a person")
    agent: str | None = None
    truncated: bool = Field(
        False,
        description="the original was too large for the topic: only its start is kept, with "
        "its hash and size; topic, partition and offset point to the whole message",
    )
    original_sha256: str | None = Field(None, description="hex sha256 of the whole original")
    original_size: int | None = Field(None, ge=0, description="the whole original's bytes")
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
    "impressions": Impression,
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


def decode_interaction(raw: bytes, limits: Limits) -> Interaction:
    """An interaction from its bytes: pydantic's JSON parser first (the learn path's hot
    path); anything it refuses goes through :func:`decode` for the precise reason.

    Both accept the same messages (the contract's bounds see to it), so a message the fast
    path took is never refused later when a stored copy is decoded again.
    """
    try:
        return Interaction.model_validate_json(raw)
    except ValueError:
        event = decode("interactions", raw, limits)
        assert isinstance(event, Interaction)
        return event


def decode(kind: str, data: bytes | str | None, limits: Limits) -> Event:
    """Parse one message of a topic kind, enforcing its contract and the size limits.

    Raises :class:`ContractError` and nothing else, whatever ``data`` holds: an exception
    that escaped would crash the agent that reads the message instead of dead-lettering it.
    """
    if kind not in EVENT_TYPES:
        raise ContractError("unknown-topic", f"no contract for topic kind {kind!r}")
    try:
        return parse(kind, data, limits)
    except ContractError:
        raise
    except RecursionError:
        raise ContractError("too-deep", "message is nested too deeply to parse") from None
    except Exception as error:  # anything unforeseen is still the message's fault, not ours
        raise ContractError(
            "invalid", f"message cannot be decoded: {describe_any(error)}"
        ) from None


def parse(kind: str, data: bytes | str | None, limits: Limits) -> Event:
    """:func:`decode`'s steps, each refusing with its own reason."""
    if data is None:
        raise ContractError("not-json", "message has no value (a null record)")
    if isinstance(data, bytes | bytearray | memoryview):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError as error:
            raise ContractError("not-utf8", f"message is not UTF-8: {error}") from None
    try:
        payload = json.loads(
            data, parse_int=bounded_int, parse_float=finite_float, parse_constant=refuse_constant
        )
    except (ContractError, json.JSONDecodeError, RecursionError) as error:
        # Only text that failed to parse pays for the scan of its brackets: too deep is the
        # reason it gives first, whatever else is wrong with it.
        check_nesting(data, MAX_NESTING)
        if isinstance(error, json.JSONDecodeError):
            raise ContractError("not-json", f"message is not JSON: {error}") from None
        raise
    check_depth(payload, MAX_NESTING)
    if not isinstance(payload, dict):
        raise ContractError("not-json", "message must be a JSON object")
    if SURROGATE_ESCAPE.search(data):
        check_encodable(payload)
    check_limits(payload, limits)
    try:
        event = EVENT_TYPES[kind].model_validate(payload)
    except ValidationError as error:
        raise ContractError(contract_reason(error), describe(error)) from None
    if isinstance(event, Candidates):
        check_unique_candidates(event)
    return event


# A JSON string, or a quote never closed with all the text after it: both removed. Possessive
# quantifiers, and no second try from inside an unclosed string: linear, whatever the text.
# (Brackets after an unclosed quote go uncounted; the parser stops at that quote anyway.)
STRINGS = re.compile(r'"[^"\\]*+(?:\\.[^"\\]*+)*+"|"[\s\S]*')
NOT_BRACKET = re.compile(r"[^\[\]{}]++")
INNER_PAIR = re.compile(r"\[\]|\{\}")


def check_depth(payload: Any, max_depth: int) -> None:
    """Refuse a parsed message whose containers nest deeper than ``max_depth``.

    For text that parsed, this is the depth :func:`check_nesting` reads from its brackets,
    found by walking the containers alone (no pass over the strings, which are most of a
    large request's bytes).
    """
    pending: list[tuple[Any, int]] = [(payload, 1)] if isinstance(payload, dict | list) else []
    while pending:
        value, depth = pending.pop()
        if depth > max_depth:
            raise ContractError("too-deep", f"message is nested more than {max_depth} levels deep")
        children = value.values() if isinstance(value, dict) else value
        pending += [(child, depth + 1) for child in children if isinstance(child, dict | list)]


def check_nesting(text: str, max_depth: int) -> None:
    """Refuse text nested deeper than ``max_depth`` before a recursive parser sees it.

    Brackets inside strings do not count. Text with fewer opening brackets than
    ``max_depth`` cannot be too deep, so most small messages are checked by two counts; the
    others by stripping strings and everything but brackets, then removing innermost pairs
    (``[]``, ``{}``) once per level, all in C. Brackets that never close are counted too: the
    parser would recurse into them before it finds the error.
    """
    if text.count("[") + text.count("{") <= max_depth:
        return
    brackets = NOT_BRACKET.sub("", STRINGS.sub("", text))
    # max_depth + 1 openers in a row are that deep, closed or not (the parser recurses into
    # them before it finds a closer missing); pairs are removed innermost first, one level a
    # pass, until such a run shows or nothing changes.
    openers_in_a_row = re.compile(f"[\\[{{]{{{max_depth + 1}}}")
    for _ in range(max_depth + 1):
        if openers_in_a_row.search(brackets):
            break
        inner_removed = INNER_PAIR.sub("", brackets)  # one level: matches in the old text
        if inner_removed == brackets:
            return
        brackets = inner_removed
    raise ContractError("too-deep", f"message is nested more than {max_depth} levels deep")


# A \\uD800-\\uDFFF escape: JSON allows it, but alone it is no character, and text holding it
# cannot be encoded again (a ranking, an impression in Redis) without an exception.
SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def check_encodable(payload: dict[str, Any]) -> None:
    """Refuse strings with a lone surrogate (only run when the text has such an escape)."""
    try:
        json.dumps(payload, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ContractError(
            "not-utf8", "a string holds a lone surrogate (\\uD800-\\uDFFF)"
        ) from None


def bounded_int(digits: str) -> int:
    """json's ``parse_int``: integers longer than :data:`MAX_INTEGER_DIGITS` are refused."""
    if len(digits.lstrip("-")) > MAX_INTEGER_DIGITS:
        raise ContractError(
            "number-too-large",
            f"an integer has {len(digits.lstrip('-'))} digits; the limit is {MAX_INTEGER_DIGITS}",
        )
    return int(digits)


def finite_float(literal: str) -> float:
    """json's ``parse_float``: a literal too large for a float (``1e999``) is refused, not
    turned into infinity."""
    value = float(literal)
    if not math.isfinite(value):
        raise ContractError("non-finite", f"{literal[:40]} is beyond the range of a float")
    return value


def refuse_constant(name: str) -> float:
    """json's ``parse_constant``: ``NaN``, ``Infinity`` and ``-Infinity`` are not numbers."""
    raise ContractError("non-finite", f"{name} is not a finite number")


def contract_reason(error: ValidationError) -> str:
    """``non-finite`` when a float was out of range (``1e999`` parses as infinity), else
    ``contract``."""
    kinds = {item["type"] for item in error.errors()}
    return "non-finite" if kinds == {"finite_number"} else "contract"


def check_unique_candidates(event: Candidates) -> None:
    """Refuse a candidate list that names a document twice.

    Refused rather than merged: which of two scores, texts or feature sets is meant cannot be
    known, and a ranking that shows one document twice would be a bug in front of users.
    """
    seen: set[str] = set()
    for index, candidate in enumerate(event.candidates):
        if candidate.doc_id in seen:
            raise ContractError(
                "duplicate-candidate",
                f"candidates[{index}].doc_id {candidate.doc_id!r} appears more than once",
            )
        seen.add(candidate.doc_id)


def describe_any(error: BaseException, max_chars: int = 500) -> str:
    """An exception as one short line: its type and the start of its message."""
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= max_chars else text[: max_chars - 3] + "..."


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
    items = error.errors()
    for item in items[:MAX_PROBLEMS]:
        where = ".".join(str(part) for part in item["loc"]) or "message"
        problems.append(f"{where}: {item['msg']}")
    if len(items) > MAX_PROBLEMS:
        problems.append(f"and {len(items) - MAX_PROBLEMS} more")
    return "; ".join(problems)

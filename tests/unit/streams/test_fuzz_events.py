"""A fuzzer for the event decoder: generated bad messages for every topic kind, through
:func:`~streamrank.streams.events.decode`. Whatever the bytes, only a ``ContractError``
escapes, and what is accepted encodes again and decodes to the same event.

Two generators: hypothesis (random bytes, random JSON values with huge integers, NaN,
Infinity and nesting, valid messages with a field replaced or a raw token spliced in, nesting
around the limit, cut messages, oversize values), which shrinks what it finds to a minimal
message; and the seeded corpus of :mod:`tests.poison`, thousands per kind in a second or two,
since hypothesis costs milliseconds an example.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamrank.streams.events import EVENT_TYPES, MAX_NESTING, ContractError, Event, Limits, decode
from tests.poison import FAMILIES, NASTY_TOKENS, VALID, corpus

LIMITS = Limits(max_candidates=20, max_query_chars=200, max_text_chars=500)
EXAMPLES_PER_KIND = 200  # hypothesis costs milliseconds an example; the corpus test is wider
CORPUS_PER_KIND = 2000

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**99, max_value=10**120),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["", "d1", "click", "promote", "\x00", "\ud7ff"]),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def raw_json(value: object) -> str:
    return json.dumps(value, allow_nan=True)


def nested(depth: int, core: str, opener: str) -> str:
    if opener == "[":
        return "[" * depth + core + "]" * depth
    return '{"a":' * depth + core + "}" * depth


@st.composite
def bad_messages(draw: st.DrawFn, kind: str) -> bytes | str | None:
    valid = VALID[kind]
    family = draw(st.integers(min_value=0, max_value=6))
    if family == 0:
        return draw(st.one_of(st.none(), st.binary(max_size=200)))
    if family == 1:
        return raw_json(draw(json_values))
    if family == 2:  # one field replaced, removed or added
        field = draw(st.sampled_from([*valid, "unknown_field"]))
        changed = dict(valid)
        if draw(st.booleans()) and field in changed:
            del changed[field]
        else:
            changed[field] = draw(json_values)
        return raw_json(changed)
    if family == 3:  # a raw token spliced in as a field's value, or deep in a list
        field = draw(st.sampled_from([*valid, "schema_version", "features", "position"]))
        token = draw(st.sampled_from(NASTY_TOKENS))
        text = raw_json({k: v for k, v in valid.items() if k != field})
        return text[:-1] + f', "{field}": {token}' + "}"
    if family == 4:  # nesting around the limit, as the message or inside a field
        depth = draw(st.integers(min_value=MAX_NESTING - 3, max_value=MAX_NESTING * 4))
        opener = draw(st.sampled_from("[{"))
        if draw(st.booleans()):
            return nested(depth, "1", opener)
        text = raw_json(valid)
        return text[:-1] + f', "context": {nested(depth, "1", opener)}' + "}"
    if family == 5:  # the valid message cut, or with bytes spliced in
        text = raw_json(valid).encode()
        cut = draw(st.integers(min_value=0, max_value=len(text)))
        return text[:cut] + draw(st.binary(max_size=8)) + text[cut + draw(st.integers(0, 3)) :]
    # huge values where sizes are limited
    big = draw(st.sampled_from(["q" * 1000, "x" * 10_000]))
    field = draw(st.sampled_from(["query", "text", "request_id", "doc_id"]))
    return raw_json(valid | {field: big})


@pytest.mark.parametrize("kind", sorted(EVENT_TYPES))
def test_only_contract_errors_escape_decode(kind: str) -> None:
    @settings(
        max_examples=EXAMPLES_PER_KIND,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(raw=bad_messages(kind))
    def decode_only_refuses(raw: bytes | str | None) -> None:
        accepts_or_refuses(kind, raw)

    decode_only_refuses()


def accepts_or_refuses(kind: str, raw: bytes | str | None) -> str:
    """The reason ``raw`` was refused, or "accepted" (after checking the event re-encodes)."""
    try:
        event = decode(kind, raw, LIMITS)
    except ContractError as error:
        assert error.reason and str(error)
        return error.reason
    assert isinstance(event, Event)
    assert decode(kind, event.to_bytes(), LIMITS) == event
    return "accepted"


@pytest.mark.parametrize("kind", sorted(EVENT_TYPES))
def test_a_corpus_of_thousands_per_kind_only_gets_contract_errors(kind: str) -> None:
    outcomes = {family: set() for family in FAMILIES}
    for family, raw in corpus(kind, CORPUS_PER_KIND, seed=1):
        outcomes[family].add(accepts_or_refuses(kind, raw))
    refused = set().union(*outcomes.values()) - {"accepted"}
    assert {"not-json", "too-deep", "number-too-large", "non-finite", "limit"} <= refused
    assert "accepted" not in outcomes["big"]
    assert "too-deep" in outcomes["deep"]


@pytest.mark.parametrize("kind", sorted(EVENT_TYPES))
def test_the_valid_examples_are_accepted(kind: str) -> None:
    assert isinstance(decode(kind, json.dumps(VALID[kind]), LIMITS), Event)

"""The event contracts: what is accepted, what is rejected, and why."""

from __future__ import annotations

import json

import pytest

from streamrank.streams.events import (
    EVENT_TYPES,
    Candidates,
    ContractError,
    Interaction,
    Limits,
    decode,
)

LIMITS = Limits(max_candidates=3, max_query_chars=20, max_text_chars=50)


def candidates_payload(**overrides: object) -> dict:
    payload = {
        "request_id": "r1",
        "query": "river in russia",
        "candidates": [{"doc_id": "d1", "text": "The Volga", "first_stage_score": 3.5}],
    }
    return payload | overrides


def test_a_valid_candidates_message_round_trips() -> None:
    event = decode("candidates", json.dumps(candidates_payload()).encode(), LIMITS)
    assert isinstance(event, Candidates)
    assert event.candidates[0].first_stage_score == 3.5
    assert decode("candidates", event.to_bytes(), LIMITS) == event


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff\xfe not utf-8", "not-utf8"),
        (b"{not json", "not-json"),
        (b"[1, 2]", "not-json"),
        (json.dumps({"query": "no request id", "candidates": []}).encode(), "contract"),
        (json.dumps(candidates_payload(schema_version=2)).encode(), "contract"),
        (json.dumps(candidates_payload(unexpected_field=1)).encode(), "contract"),
        (json.dumps(candidates_payload(query="q" * 21)).encode(), "limit"),
        (json.dumps(candidates_payload(candidates=[{"doc_id": "d"}] * 4)).encode(), "limit"),
        (
            json.dumps(candidates_payload(candidates=[{"doc_id": "d", "text": "t" * 51}])).encode(),
            "limit",
        ),
    ],
)
def test_bad_messages_are_rejected_with_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(ContractError) as caught:
        decode("candidates", raw, LIMITS)
    assert caught.value.reason == reason
    assert str(caught.value)


def test_contract_errors_name_the_field() -> None:
    payload = candidates_payload(candidates=[{"text": "no id"}])
    with pytest.raises(ContractError, match=r"candidates\.0\.doc_id"):
        decode("candidates", json.dumps(payload), LIMITS)


def test_interaction_types_are_a_closed_set() -> None:
    good = {"event_id": "e1", "request_id": "r1", "doc_id": "d1", "type": "click", "position": 2}
    assert isinstance(decode("interactions", json.dumps(good), LIMITS), Interaction)
    with pytest.raises(ContractError, match="type"):
        decode("interactions", json.dumps(good | {"type": "hover"}), LIMITS)


def test_every_topic_kind_has_a_contract_with_a_schema_version() -> None:
    assert set(EVENT_TYPES) == {
        "queries",
        "candidates",
        "rankings",
        "interactions",
        "items",
        "users",
        "control",
        "comparisons",
        "impressions",
        "deadletter",
    }
    for model in EVENT_TYPES.values():
        assert "schema_version" in model.model_fields


def test_unknown_topic_kind() -> None:
    with pytest.raises(ContractError) as caught:
        decode("nonsense", b"{}", LIMITS)
    assert caught.value.reason == "unknown-topic"


def test_every_example_in_docs_events_md_obeys_its_contract() -> None:
    import re

    from tests.helpers import REPO

    doc = (REPO / "docs" / "events.md").read_text()
    examples = re.findall(r"## `(\w+)`.*?```json\n(.*?)```", doc, re.DOTALL)
    assert {kind for kind, _ in examples} == set(EVENT_TYPES)
    for kind, example in examples:
        decode(kind, example, Limits())


GOOD_INTERACTION = '{"event_id": "e1", "request_id": "r1", "doc_id": "d1", "type": "dwell"'
ONE_CANDIDATE = b'{"request_id": "r", "query": "q", "candidates": [{"doc_id": "d", '


@pytest.mark.parametrize(
    ("kind", "raw", "reason"),
    [
        ("candidates", None, "not-json"),  # a null record (tombstone)
        ("candidates", b"null", "not-json"),
        ("candidates", b"[" * 100_000 + b"]" * 100_000, "too-deep"),
        (
            "candidates",
            b'{"request_id": "r", "query": "q", "candidates": [], "context": '
            + b'{"a": ' * 100_000
            + b"1"
            + b"}" * 100_001,
            "too-deep",
        ),
        ("candidates", b'{"request_id": "r", "k": ' + b"9" * 5000 + b"}", "number-too-large"),
        (
            "interactions",
            GOOD_INTERACTION.encode() + b', "position": ' + b"7" * 5000 + b"}",
            "number-too-large",
        ),
        (
            "candidates",
            ONE_CANDIDATE + b'"first_stage_score": NaN}]}',
            "non-finite",
        ),
        (
            "candidates",
            ONE_CANDIDATE + b'"first_stage_score": 1e999}]}',
            "non-finite",
        ),
        (
            "candidates",
            ONE_CANDIDATE + b'"features": {"f": Infinity}}]}',
            "non-finite",
        ),
        ("items", b'{"doc_id": "d", "features": {"f": -Infinity}}', "non-finite"),
        ("users", b'{"user_id": "u", "features": {"f": NaN}}', "non-finite"),
        ("interactions", GOOD_INTERACTION.encode() + b', "value": NaN}', "non-finite"),
        ("interactions", GOOD_INTERACTION.encode() + b', "value": Infinity}', "non-finite"),
        (
            "candidates",
            b'{"request_id": "r", "query": "q", "candidates": [{"doc_id": "d"}, {"doc_id": "d"}]}',
            "duplicate-candidate",
        ),
        ("candidates", json.dumps(candidates_payload(query="q" * 1_000_000)).encode(), "limit"),
        ("candidates", b'["' + b"[" * 50 + b'"', "not-json"),
        ("candidates", b"[" * 20 + b'"\\"' * 10_000, "not-json"),
        ("candidates", b"[" * 40 + b'"\\"' * 10_000, "too-deep"),
    ],
    ids=lambda value: value if isinstance(value, str) and len(value) < 30 else None,
)
def test_every_kind_of_poison_is_a_contract_error(
    kind: str, raw: bytes | None, reason: str
) -> None:
    with pytest.raises(ContractError) as caught:
        decode(kind, raw, LIMITS)
    assert caught.value.reason == reason
    assert str(caught.value)


def test_brackets_in_strings_do_not_count_as_nesting() -> None:
    payload = candidates_payload(query="[{" * 10, context={"note": "]" * 200 + "[" * 200})
    assert isinstance(decode("candidates", json.dumps(payload), Limits()), Candidates)


def test_nesting_up_to_the_limit_is_accepted() -> None:
    from streamrank.streams.events import MAX_NESTING

    nested: object = 1
    for _ in range(MAX_NESTING - 1):  # the message object itself is the first level
        nested = {"a": nested}
    decode("candidates", json.dumps(candidates_payload(context=nested)), Limits())
    with pytest.raises(ContractError, match="nested"):
        decode("candidates", json.dumps(candidates_payload(context={"a": nested})), Limits())


def test_an_unforeseen_exception_is_still_a_contract_error(monkeypatch) -> None:
    from streamrank.streams import events

    def explode(*args: object, **kwargs: object) -> None:
        raise TypeError("something nobody thought of")

    monkeypatch.setattr(events, "check_limits", explode)
    with pytest.raises(ContractError) as caught:
        decode("candidates", json.dumps(candidates_payload()), LIMITS)
    assert caught.value.reason == "invalid"
    assert "TypeError" in str(caught.value)


@pytest.mark.parametrize("digits", [20, 50, 120])
def test_the_fast_and_the_strict_interaction_decoders_refuse_the_same_values(digits: int) -> None:
    from streamrank.streams.events import decode_interaction

    raw = (
        b'{"event_id": "e1", "request_id": "r1", "doc_id": "d1", "type": "purchase", '
        b'"value": ' + b"9" * digits + b"}"
    )
    with pytest.raises(ContractError):
        decode_interaction(raw, Limits())
    with pytest.raises(ContractError):
        decode("interactions", raw, Limits())


def test_an_orphan_stored_by_an_older_decoder_is_parsed_for_the_dead_letters() -> None:
    from streamrank.streams.state.user_sessions import parse_orphan

    raw = b'{"event_id": "e1", "request_id": "r1", "doc_id": "d1", "type": "click", "value": ' + (
        b"9" * 120 + b"}"
    )
    orphan = parse_orphan("e1", b"0|7|interactions|" + raw, first_seen=1.0)
    assert orphan.request_id == "" and orphan.raw == raw and orphan.offset == 7

"""The click simulator's streaming mode without a broker: sessions as interaction events.

A session's events are checked against the ``interactions`` contract in-process; the runs
through the real broker are tests/integration/streams/test_streaming_simulator.py.
"""

from __future__ import annotations

from streamrank.streams.events import Limits, decode
from streamrank.streams.streaming_simulator import to_interactions


def test_sessions_become_valid_interaction_events_with_stable_ids() -> None:
    events = to_interactions("req-1", ["a", "b", "c"], [1], user_id="u")
    assert [(e.type, e.doc_id, e.position) for e in events] == [
        ("impression", "a", 1),
        ("impression", "b", 2),
        ("impression", "c", 3),
        ("click", "b", 2),
    ]
    assert [e.event_id for e in to_interactions("req-1", ["a", "b", "c"], [1])] == [
        e.event_id for e in events
    ]
    assert len({e.event_id for e in events}) == 4
    for event in events:  # each one passes the topic's contract
        assert decode("interactions", event.to_bytes(), Limits()) == event

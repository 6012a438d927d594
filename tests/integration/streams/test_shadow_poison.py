"""A shadow worker under the poison policy, through the real broker and Redis.

A click whose stored shadow ranking is corrupt makes the shadow's ``clicks`` handler fail on
every try: after ``poison_tries`` it is dead-lettered under the shadow's name and the click
after it is credited, so no message stalls the shadow's partitions. Bad bytes, which the
primary dead-letters, the shadow skips without a second letter.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from streamrank.streams.config import Settings
from streamrank.streams.events import DeadLetter, Interaction
from streamrank.streams.state.connections import redis_client, registry_for, shadow_stats_for
from streamrank.streams.state.feature_store import FeatureStore
from tests.helpers import consume, produce, settings_env

pytestmark = pytest.mark.integration

SHADOW_ENV = {
    "STREAMRANK_REGISTRY_KEY": "shadow-poison-key",
    "STREAMRANK_POISON_TRIES": "2",
    "STREAMRANK_RETRY_BACKOFF_MAX_S": "0.2",
    "STREAMRANK_ONLINE_LEARNING": "false",
}
DOCS = ["d0", "d1", "d2"]


def served(feature_store: FeatureStore, request_id: str) -> None:
    """The primary's impression of ``request_id``: DOCS in order."""
    items = [{"doc_id": doc, "position": i + 1} for i, doc in enumerate(DOCS)]
    feature_store.record_impression(request_id, {"items": items, "model_version": "v1"})


def click(request_id: str, doc_id: str) -> Interaction:
    return Interaction(
        event_id=uuid.uuid4().hex, request_id=request_id, doc_id=doc_id, type="click"
    )


def test_a_click_the_shadow_keeps_failing_on_is_dead_lettered_and_the_next_is_credited(
    settings: Settings, tmp_path: Path
) -> None:
    settings = settings.model_copy(update={"registry_key": SHADOW_ENV["STREAMRANK_REGISTRY_KEY"]})
    client = redis_client(settings)
    version = registry_for(settings, client).register(pipeline="first-stage").version
    stats = shadow_stats_for(settings, client, version)
    feature_store = FeatureStore(client, settings)
    poisoned, good = f"poisoned-{uuid.uuid4().hex[:6]}", f"good-{uuid.uuid4().hex[:6]}"
    for request_id in (poisoned, good):
        served(feature_store, request_id)
    stats.remember_ranking(good, list(reversed(DOCS)))
    client.set(stats._request_key("ranking", poisoned), b"{not json")  # what the handler trips on

    log_path = tmp_path / "shadow.log"
    shadow = subprocess.Popen(
        [sys.executable, "-m", "streamrank.streams.cli", "shadow", "worker", version],
        env=settings_env(settings) | SHADOW_ENV,
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        produce(settings, "interactions", [b"\xff not an event"])
        produce(
            settings,
            "interactions",
            [click(poisoned, "d2").to_bytes(), click(good, "d2").to_bytes()],
        )
        credited = wait_for(lambda: counted(stats.snapshot().click_preference), timeout_s=120)
        assert credited == {"shadow_higher": 1}, log_path.read_text()[-3000:]
        letters = [
            DeadLetter.model_validate_json(record.value)
            for record in consume(settings, "deadletter", 2, timeout_s=30, exact=False)
        ]  # one letter: the bad bytes are the primary's to dead-letter
        assert [letter.agent for letter in letters] == [f"shadow-{version}.clicks"]
        assert letters[0].reason == "handler-error" and "after 2 tries" in letters[0].error
        assert shadow.poll() is None, "the shadow worker exited"
    finally:
        shadow.terminate()
        shadow.wait(timeout=30)


def counted(counts: dict[str, int]) -> dict[str, int]:
    return {name: count for name, count in counts.items() if count}


def wait_for(read, timeout_s: float):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = read()
        if value:
            return value
        time.sleep(0.5)
    return read()

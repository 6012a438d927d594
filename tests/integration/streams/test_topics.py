"""Topics on the real broker are created with their settings, and a differing one is mended."""

from __future__ import annotations

import subprocess
import sys

import pytest
from kafka.admin import ConfigResource, ConfigResourceType

from streamrank.streams.config import Settings
from streamrank.streams.events import TOPIC_KINDS
from streamrank.streams.kafka.topics import (
    admin_client,
    check_topics,
    create_topics,
    topic_configs,
)
from tests.helpers import REPO, settings_env

pytestmark = pytest.mark.integration


def described(settings: Settings) -> dict[str, dict[str, str]]:
    """Each topic's settings as the broker reports them."""
    admin = admin_client(settings)
    try:
        resources = [
            ConfigResource(ConfigResourceType.TOPIC, settings.topic(kind), configs=None)
            for kind in TOPIC_KINDS
        ]
        answer = admin.describe_configs(resources, config_filter="all")["topic"]
    finally:
        admin.close()
    return {
        topic: {key: entry["value"] for key, entry in entries.items()}
        for topic, entries in answer.items()
    }


def test_topics_are_created_with_their_documented_settings(settings: Settings) -> None:
    broker = described(settings)
    for kind in TOPIC_KINDS:
        configs = broker[settings.topic(kind)]
        assert configs["max.message.bytes"] == str(settings.max_message_bytes), kind
        compacted = kind in ("items", "users")
        assert configs["cleanup.policy"] == ("compact" if compacted else "delete"), kind
        for key, value in topic_configs(kind, settings).items():
            assert configs[key] == value, (kind, key)
    assert check_topics(settings) == []


def alter_by_hand(settings: Settings) -> tuple[str, str]:
    """Give ``items`` and ``candidates`` the broker's defaults, as a topic made by hand has."""
    items, candidates = settings.topic("items"), settings.topic("candidates")
    admin = admin_client(settings)
    try:
        admin.alter_configs(
            [
                ConfigResource(ConfigResourceType.TOPIC, items, {"cleanup.policy": "delete"}),
                ConfigResource(
                    ConfigResourceType.TOPIC, candidates, {"max.message.bytes": "1048588"}
                ),
            ]
        )
    finally:
        admin.close()
    return items, candidates


def test_a_topic_altered_by_hand_is_reported_and_fixed(settings: Settings) -> None:
    items, candidates = alter_by_hand(settings)
    found = {(m.topic, m.setting, m.actual) for m in check_topics(settings)}
    assert found == {
        (items, "cleanup.policy", "delete"),
        (candidates, "max.message.bytes", "1048588"),
    }
    results = {result.name: result for result in create_topics(settings, fix=True)}
    assert results[items].fixed and results[candidates].fixed
    assert check_topics(settings) == []
    assert described(settings)[items]["cleanup.policy"] == "compact"


def test_topics_create_lists_the_differences_and_fix_sets_them(settings: Settings) -> None:
    alter_by_hand(settings)

    def topics_create(*options: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "streamrank.streams.cli", "topics", "create", *options],
            env=settings_env(settings) | {"COLUMNS": "200"},
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    listed = topics_create()
    assert "differs: cleanup.policy is delete, should be compact" in listed
    assert "topics create --fix" in listed
    fixed = topics_create("--fix")
    assert "fixed: max.message.bytes is 1048588, should be 16777216" in fixed
    assert check_topics(settings) == []

"""Topic settings: what each kind is created with, and how a differing topic is reported.

The broker is replaced by a stand-in admin client that answers ``describe_configs`` from a
dict; tests/integration/streams/test_topics.py checks the same against the real broker.
"""

from __future__ import annotations

import logging

import pytest

from streamrank.streams.config import Settings
from streamrank.streams.events import TOPIC_KINDS
from streamrank.streams.kafka import topics


class StandInAdmin:
    """Answers like kafka-python's admin client, from per-topic settings held in a dict."""

    def __init__(self, configs: dict[str, dict[str, str]]) -> None:
        self.configs = configs
        self.altered: dict[str, dict[str, str]] = {}

    def list_topics(self) -> list[str]:
        return list(self.configs)

    def describe_configs(self, resources, config_filter: str) -> dict:
        return {
            "topic": {
                resource.name: {
                    key: {"value": value} for key, value in self.configs[resource.name].items()
                }
                for resource in resources
            }
        }

    def alter_configs(self, resources) -> None:
        for resource in resources:
            self.altered[resource.name] = dict(resource.configs)
            self.configs[resource.name].update(resource.configs)

    def close(self) -> None:
        pass


def as_created(settings: Settings) -> dict[str, dict[str, str]]:
    kinds = topics.MANAGED_KINDS
    return {settings.topic(kind): topics.topic_configs(kind, settings) for kind in kinds}


def test_every_topic_takes_the_workers_message_limit_and_state_topics_are_compacted() -> None:
    settings = Settings()
    for kind in TOPIC_KINDS:
        configs = topics.topic_configs(kind, settings)
        assert configs["max.message.bytes"] == str(settings.max_message_bytes) == "16777216"
        compacted = kind in ("items", "users")
        assert configs["cleanup.policy"] == ("compact" if compacted else "delete")


def test_topics_as_created_pass_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings()
    admin = StandInAdmin(as_created(settings))
    monkeypatch.setattr(topics, "admin_client", lambda *args, **kwargs: admin)
    assert topics.check_topics(settings) == []


def test_a_differing_topic_is_named_with_its_setting_value_and_target(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings()
    configs = as_created(settings)
    configs[settings.topic("items")]["cleanup.policy"] = "delete"
    configs[settings.topic("candidates")]["max.message.bytes"] = "1048588"
    monkeypatch.setattr(topics, "admin_client", lambda *args, **kwargs: StandInAdmin(configs))
    with caplog.at_level(logging.WARNING, logger=topics.__name__):
        mismatches = topics.check_topics(settings)
    assert {(m.topic, m.setting, m.actual, m.expected) for m in mismatches} == {
        ("streamrank.items", "cleanup.policy", "delete", "compact"),
        ("streamrank.candidates", "max.message.bytes", "1048588", "16777216"),
    }
    assert "topic streamrank.items: cleanup.policy is delete, should be compact" in caplog.text


def test_a_missing_topic_is_reported(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings()
    configs = as_created(settings)
    del configs[settings.topic("control")]
    monkeypatch.setattr(topics, "admin_client", lambda *args, **kwargs: StandInAdmin(configs))
    with caplog.at_level(logging.WARNING, logger=topics.__name__):
        assert topics.check_topics(settings) == []
    assert "topic streamrank.control does not exist" in caplog.text


def test_create_with_fix_alters_only_the_differing_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = Settings()
    configs = as_created(settings)
    configs[settings.topic("users")]["cleanup.policy"] = "delete"
    admin = StandInAdmin(configs)
    monkeypatch.setattr(topics, "admin_client", lambda *args, **kwargs: admin)
    results = {result.name: result for result in topics.create_topics(settings)}
    assert results["streamrank.users"].mismatches and not results["streamrank.users"].fixed
    assert admin.altered == {}
    results = {result.name: result for result in topics.create_topics(settings, fix=True)}
    assert results["streamrank.users"].fixed
    assert admin.altered == {"streamrank.users": {"cleanup.policy": "compact"}}
    assert topics.check_topics(settings) == []


def test_an_unreachable_broker_only_warns(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def unreachable(*args, **kwargs):
        raise topics.KafkaTimeoutError("Unable to bootstrap")

    monkeypatch.setattr(topics, "admin_client", unreachable)
    with caplog.at_level(logging.WARNING, logger=topics.__name__):
        assert topics.check_topics(Settings()) == []
    assert "could not check the topics' settings" in caplog.text

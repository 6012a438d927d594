"""Topic settings: what each kind is created with, and how a differing topic is reported.

The broker is replaced by a stand-in admin client that answers ``describe_configs`` from a
dict and ``describe_cluster`` with a given number of brokers;
tests/integration/streams/test_topics.py checks the same against the real broker.
"""

from __future__ import annotations

import logging

import pytest
from kafka.errors import KafkaTimeoutError

from streamrank.streams.config import Settings
from streamrank.streams.events import TOPIC_KINDS
from streamrank.streams.kafka import topics
from streamrank.streams.kafka.replication import ReplicationError


class StandInAdmin:
    """Answers like kafka-python's admin client, from per-topic settings held in a dict, on a
    cluster of ``brokers`` brokers; records the topics it is asked to create."""

    def __init__(
        self, configs: dict[str, dict[str, str]], brokers: int = 1, replication: int = 1
    ) -> None:
        self.configs = configs
        self.brokers = brokers
        self.replication = dict.fromkeys(configs, replication)
        self.altered: dict[str, dict[str, str]] = {}
        self.created: dict[str, tuple[int, int, dict[str, str]]] = {}

    def list_topics(self) -> list[str]:
        return list(self.configs)

    def describe_cluster(self) -> dict:
        brokers = [
            {"broker_id": n, "host": "127.0.0.1", "port": 9192 + n} for n in range(self.brokers)
        ]
        return {"brokers": brokers}

    def create_topics(self, new_topics) -> None:
        for topic in new_topics:
            configs = dict(topic.topic_configs)
            self.created[topic.name] = (topic.num_partitions, topic.replication_factor, configs)
            self.configs[topic.name] = configs
            self.replication[topic.name] = topic.replication_factor

    def describe_topics(self, names: list[str]) -> list[dict]:
        return [
            {"name": name, "partitions": [{"replica_nodes": list(range(self.replication[name]))}]}
            for name in names
        ]

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


def serve(monkeypatch: pytest.MonkeyPatch, admin: StandInAdmin) -> None:
    """Make ``admin`` the client every topics function opens."""
    monkeypatch.setattr(topics, "admin_client", lambda *args, **kwargs: admin)


def as_created(settings: Settings, replication: int = 1) -> dict[str, dict[str, str]]:
    kinds = topics.MANAGED_KINDS
    return {
        settings.topic(kind): topics.topic_configs(kind, settings, replication) for kind in kinds
    }


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
        raise KafkaTimeoutError("Unable to bootstrap")

    monkeypatch.setattr(topics, "admin_client", unreachable)
    with caplog.at_level(logging.WARNING, logger=topics.__name__):
        assert topics.check_topics(Settings()) == []
    assert "could not check the topics' settings" in caplog.text


def test_auto_replication_follows_the_cluster_up_to_three_copies(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = Settings()
    assert settings.replication_factor == "auto"
    for brokers, copies in ((1, 1), (2, 2), (3, 3), (5, 3)):
        admin = StandInAdmin({}, brokers=brokers)
        serve(monkeypatch, admin)
        results = topics.create_topics(settings)
        assert all(result.created for result in results)
        assert {created[1] for created in admin.created.values()} == {copies}


def test_three_copies_make_acks_all_wait_for_two_and_fewer_keep_the_broker_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for brokers, min_insync in ((3, "2"), (2, None), (1, None)):
        admin = StandInAdmin({}, brokers=brokers)
        serve(monkeypatch, admin)
        topics.create_topics(Settings())
        for _, _, configs in admin.created.values():
            assert configs.get("min.insync.replicas") == min_insync


def test_an_explicit_factor_wins_but_not_beyond_the_brokers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    admin = StandInAdmin({}, brokers=3)
    serve(monkeypatch, admin)
    topics.create_topics(Settings(replication_factor=2))
    assert {created[1] for created in admin.created.values()} == {2}
    single = StandInAdmin({}, brokers=1)
    serve(monkeypatch, single)
    with pytest.raises(ReplicationError, match=r"REPLICATION_FACTOR is 3, .* has 1 live broker,"):
        topics.create_topics(Settings(replication_factor=3))
    assert single.created == {}


def test_the_check_on_a_cluster_asks_three_copies_for_min_insync_replicas(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Topics of three copies whose min.insync.replicas was left to the broker: the check names
    it, and --fix sets it."""
    settings = Settings()
    configs = as_created(settings, replication=1)  # no min.insync.replicas
    admin = StandInAdmin(configs, brokers=3, replication=3)
    serve(monkeypatch, admin)
    mismatches = topics.check_topics(settings)
    assert {(m.setting, m.actual, m.expected) for m in mismatches} == {
        ("min.insync.replicas", None, "2")
    }
    assert len(mismatches) == len(topics.MANAGED_KINDS)
    topics.create_topics(settings, fix=True)
    assert topics.check_topics(settings) == []


def test_a_topic_with_fewer_copies_is_named_but_never_set_to_wait_for_more(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A topic of one copy on a three-broker cluster (created before it grew): requiring two
    in-sync copies would refuse every acks=all write to it, so --fix leaves it; the check
    warns that it has fewer copies than streamrank would give it."""
    settings = Settings()
    admin = StandInAdmin(as_created(settings, replication=1), brokers=3, replication=1)
    serve(monkeypatch, admin)
    with caplog.at_level(logging.WARNING, logger=topics.__name__):
        assert topics.check_topics(settings) == []
    assert "topic streamrank.candidates keeps 1 copies of each message, streamrank creates 3" in (
        caplog.text
    )
    topics.create_topics(settings, fix=True)
    assert admin.altered == {}


def test_a_check_that_cannot_resolve_the_replication_only_warns(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(replication_factor=3)
    admin = StandInAdmin(as_created(settings, replication=3), brokers=1)
    serve(monkeypatch, admin)
    with caplog.at_level(logging.WARNING, logger=topics.__name__):
        assert topics.check_topics(settings) == []
    assert "REPLICATION_FACTOR is 3" in caplog.text

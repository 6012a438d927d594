"""docker-compose.yml cannot run here (no Docker engine), so it is checked against the local
scripts and the settings it must agree with."""

from __future__ import annotations

import re

import pytest

from streamrank.streams.config import Settings
from tests.helpers import REPO

yaml = pytest.importorskip("yaml", reason="PyYAML is needed to read docker-compose.yml")


def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_compose_runs_the_same_kafka_version_as_the_local_script() -> None:
    pom = (REPO / "deploy" / "kafka" / "pom.xml").read_text()
    version = re.search(r"<kafka.version>(.+)</kafka.version>", pom).group(1)
    assert compose()["services"]["kafka"]["image"] == f"apache/kafka:{version}"


def test_compose_uses_the_default_topic_names_and_partitions() -> None:
    services = compose()["services"]
    defaults = Settings()
    for name in ("topics", "worker"):
        env = services[name]["environment"]
        assert env["STREAMRANK_TOPIC_PREFIX"] == defaults.topic_prefix
        assert int(env["STREAMRANK_PARTITIONS"]) == defaults.partitions
        assert env["STREAMRANK_KAFKA_BOOTSTRAP"] == "kafka:9092"


def test_compose_kafka_settings_match_the_local_broker() -> None:
    script = (REPO / "deploy" / "kafka.sh").read_text()
    env = compose()["services"]["kafka"]["environment"]
    for key in ("auto.create.topics.enable", "offsets.topic.num.partitions", "num.partitions"):
        local = re.search(rf"^{re.escape(key)}=(.+)$", script, re.MULTILINE).group(1)
        assert str(env["KAFKA_" + key.upper().replace(".", "_")]).lower() == local.lower()

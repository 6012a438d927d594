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


def redis_script_flags() -> dict[str, str]:
    script = (REPO / "deploy" / "redis.sh").read_text()
    command = re.search(r"^\s*redis-server (.+?)\n\s*\n", script, re.MULTILINE | re.DOTALL).group(1)
    flags = re.findall(r'--([a-z-]+) ("[^"]*"|\S+)', command.replace("\\\n", " "))
    return {name: value.strip('"') for name, value in flags}


def test_compose_redis_is_as_durable_and_bounded_as_the_local_script() -> None:
    command = compose()["services"]["redis"]["command"]
    assert command[0] == "redis-server"
    flags = dict(zip(command[1::2], command[2::2], strict=True))
    local = redis_script_flags()
    for name in ("save", "appendonly", "appendfsync", "maxmemory-policy"):
        assert str(flags[f"--{name}"]) == local[name], name
    assert local["appendonly"] == "yes" and local["appendfsync"] == "everysec"
    script = (REPO / "deploy" / "redis.sh").read_text()
    default = re.search(r"STREAMRANK_REDIS_MAXMEMORY:-(\w+)", script).group(1)
    assert flags["--maxmemory"] == f"${{STREAMRANK_REDIS_MAXMEMORY:-{default}}}"
    assert "/data" in " ".join(compose()["services"]["redis"]["volumes"])

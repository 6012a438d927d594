"""Configuration: environment variables, the optional file, and pass-through of security."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from streamrank.streams.config import Settings


def test_environment_variables_use_the_streamrank_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMRANK_KAFKA_BOOTSTRAP", "broker-a:9092,broker-b:9092")
    monkeypatch.setenv("STREAMRANK_PARTITIONS", "12")
    monkeypatch.setenv("STREAMRANK_TOPIC_PREFIX", "prod.")
    settings = Settings()
    assert settings.kafka_bootstrap == "broker-a:9092,broker-b:9092"
    assert settings.partitions == 12
    assert settings.topic("rankings") == "prod.rankings"


def test_a_config_file_is_read_and_the_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "streamrank.env"
    config.write_text("STREAMRANK_MAX_CANDIDATES=500\nSTREAMRANK_REDIS_URL=redis://file:6379/1\n")
    monkeypatch.setenv("STREAMRANK_REDIS_URL", "redis://env:6379/2")
    settings = Settings(_env_file=config)
    assert settings.max_candidates == 500
    assert settings.limits().max_candidates == 500
    assert settings.redis_url == "redis://env:6379/2"


def test_sasl_ssl_settings_pass_through_to_the_kafka_clients() -> None:
    settings = Settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="svc",
        kafka_sasl_password="secret",
        kafka_ssl_cafile="/etc/ca.pem",
    )
    options = settings.kafka_client_options()
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "svc"
    assert options["sasl_plain_password"] == "secret"
    assert options["ssl_cafile"] == "/etc/ca.pem"
    assert Settings().kafka_client_options() == {"security_protocol": "PLAINTEXT"}


def test_redis_password_and_tls_pass_through() -> None:
    settings = Settings(redis_password="pw", redis_ssl_ca_certs="/etc/redis-ca.pem")
    options = settings.redis_options()
    assert options["password"] == "pw"
    assert options["ssl_ca_certs"] == "/etc/redis-ca.pem"


def test_redis_timeouts_are_short_on_request_and_bounded_elsewhere() -> None:
    settings = Settings(redis_timeout_s=0.2, redis_slow_timeout_s=20)
    assert settings.redis_options(settings.redis_timeout_s)["socket_timeout"] == 0.2
    assert settings.redis_options()["socket_timeout"] == 20
    assert settings.redis_options()["socket_connect_timeout"] == 20


def test_invalid_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMRANK_PARTITIONS", "0")
    with pytest.raises(ValueError, match="partitions"):
        Settings()


def test_fusion_settings_make_a_fusion_and_bad_ones_are_refused_at_load(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from streamrank.models.scoring.fusion import DEFAULT_FUSION, Fusion

    assert Settings().cascade_fusion() == DEFAULT_FUSION
    monkeypatch.setenv("STREAMRANK_FUSION", "rrf")
    monkeypatch.setenv("STREAMRANK_FUSION_WEIGHT", "0.7")
    assert Settings().cascade_fusion() == Fusion("rrf", 0.7)
    monkeypatch.setenv("STREAMRANK_FUSION_WEIGHT", "1.5")
    with pytest.raises(ValueError, match="fusion_weight"):
        Settings()
    monkeypatch.setenv("STREAMRANK_FUSION_WEIGHT", "0.5")
    monkeypatch.setenv("STREAMRANK_FUSION", "linear")
    with pytest.raises(ValueError, match="fusion"):
        Settings()


def test_every_setting_is_documented() -> None:
    from tests.helpers import REPO

    doc = (REPO / "docs" / "configuration.md").read_text()
    missing = [name for name in Settings.model_fields if f"STREAMRANK_{name.upper()}" not in doc]
    assert missing == []


def test_the_worker_keeps_its_data_directory_out_of_the_working_directory() -> None:
    """Faust makes a data directory even for in-memory tables; a worker started in a checkout
    must not leave ``<app id>-data`` folders there."""
    import tempfile

    from streamrank.streams.app import create_app

    app = create_app(Settings(app_id="streamrank-datadir-check", replication_factor=1))
    datadir = Path(app.conf.datadir)
    assert datadir.is_absolute()
    assert datadir.is_relative_to(tempfile.gettempdir())
    assert datadir.name == "streamrank-datadir-check-data"


def test_redis_cluster_nodes_are_parsed_and_a_malformed_list_is_refused_at_load() -> None:
    settings = Settings(redis_cluster_nodes="redis-0.redis:6379,10.0.0.3:7002")
    assert settings.redis_startup_nodes() == [("redis-0.redis", 6379), ("10.0.0.3", 7002)]
    assert Settings().redis_startup_nodes() == []
    for bad in ("10.0.0.3", "10.0.0.3:7002,", "a:1, b:2", "redis://a:1"):
        with pytest.raises(ValidationError, match="redis_cluster_nodes"):
            Settings(redis_cluster_nodes=bad)

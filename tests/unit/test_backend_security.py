"""The backends' security settings: what the client builders make of the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from chronos.config import ConfigError
from chronos.kafka_client import KafkaSecurity, kafka_client_config
from chronos.read_model.client import ElasticsearchSecurity


def test_kafka_defaults_to_plaintext() -> None:
    security = KafkaSecurity.from_env({})
    assert security.protocol == "PLAINTEXT"
    assert kafka_client_config("h:1", security) == {
        "bootstrap.servers": "h:1",
        "security.protocol": "plaintext",
    }


def test_kafka_user_and_password_file_mean_sasl_ssl(tmp_path: Path) -> None:
    password_file = tmp_path / "password"
    password_file.write_text("s3cret\n")
    security = KafkaSecurity.from_env(
        {
            "CHRONOS_KAFKA_SASL_USERNAME": "chronos",
            "CHRONOS_KAFKA_SASL_PASSWORD_FILE": str(password_file),
            "CHRONOS_KAFKA_CA_FILE": "/ca.pem",
        }
    )
    config = kafka_client_config("h:1", security, **{"group.id": "g"})
    assert config == {
        "bootstrap.servers": "h:1",
        "security.protocol": "sasl_ssl",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "chronos",
        "sasl.password": "s3cret",
        "ssl.endpoint.identification.algorithm": "https",
        "ssl.ca.location": "/ca.pem",
        "group.id": "g",
    }
    assert "s3cret" not in repr(security)


def test_kafka_ca_alone_means_ssl() -> None:
    security = KafkaSecurity.from_env({"CHRONOS_KAFKA_CA_FILE": "/ca.pem"})
    assert security.protocol == "SSL"
    assert "sasl.username" not in security.settings()


def test_kafka_sasl_without_a_password_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="CHRONOS_KAFKA_SASL_PASSWORD_FILE"):
        KafkaSecurity.from_env({"CHRONOS_KAFKA_SASL_USERNAME": "chronos"})


def test_a_secret_from_both_a_file_and_the_environment_is_refused(tmp_path: Path) -> None:
    (tmp_path / "password").write_text("one")
    with pytest.raises(ConfigError, match="not both"):
        KafkaSecurity.from_env(
            {
                "CHRONOS_KAFKA_SASL_USERNAME": "chronos",
                "CHRONOS_KAFKA_SASL_PASSWORD_FILE": str(tmp_path / "password"),
                "CHRONOS_KAFKA_SASL_PASSWORD": "two",
            }
        )


def test_an_unreadable_or_empty_secret_file_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="CHRONOS_ES_PASSWORD_FILE: cannot read"):
        ElasticsearchSecurity.from_env(
            {
                "CHRONOS_ES_USERNAME": "chronos",
                "CHRONOS_ES_PASSWORD_FILE": str(tmp_path / "missing"),
            }
        )
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        ElasticsearchSecurity.from_env(
            {"CHRONOS_ES_USERNAME": "chronos", "CHRONOS_ES_PASSWORD_FILE": str(tmp_path / "empty")}
        )


def test_elasticsearch_basic_auth_and_ca(tmp_path: Path) -> None:
    (tmp_path / "password").write_text("pw\n")
    security = ElasticsearchSecurity.from_env(
        {
            "CHRONOS_ES_CA_FILE": "/ca.pem",
            "CHRONOS_ES_USERNAME": "chronos",
            "CHRONOS_ES_PASSWORD_FILE": str(tmp_path / "password"),
        }
    )
    assert security.client_options("https://es:9200") == {
        "ca_certs": "/ca.pem",
        "basic_auth": ("chronos", "pw"),
    }
    assert "pw'" not in repr(security)
    with pytest.raises(ConfigError, match="is not https"):
        security.client_options("http://es:9200")


def test_elasticsearch_api_key_from_the_environment() -> None:
    security = ElasticsearchSecurity.from_env({"CHRONOS_ES_API_KEY": "a2V5"})
    assert security.client_options("http://es:9200") == {"api_key": "a2V5"}


def test_elasticsearch_user_and_api_key_together_are_refused() -> None:
    with pytest.raises(ConfigError, match="not both"):
        ElasticsearchSecurity.from_env(
            {"CHRONOS_ES_USERNAME": "u", "CHRONOS_ES_PASSWORD": "p", "CHRONOS_ES_API_KEY": "k"}
        )

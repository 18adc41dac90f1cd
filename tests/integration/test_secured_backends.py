"""The secured backends: each refuses plaintext and unauthenticated clients, and each
service stops at start with one clear line when a backend refuses its credentials.

These run against the servers the session has (``tests/conftest.py``); on servers
without security (an external plaintext stack) the refusal tests are skipped, since
there is nothing to refuse.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from elastic_transport import ConnectionError as TransportConnectionError
from elasticsearch import AuthenticationException
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from chronos.backend_access import BackendRefused
from chronos.event_store.login_check import check_postgres_login
from chronos.kafka_client import KafkaSecurity, check_kafka_login, kafka_client_config
from chronos.read_model.client import (
    ElasticsearchSecurity,
    check_elasticsearch_login,
    elasticsearch_client,
)
from tests.conftest import Infrastructure

PROJECT_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_SECONDS = 120
WRONG_PASSWORD = "not-the-password"


def _require_secured(infrastructure: Infrastructure) -> None:
    if (
        "passfile" not in conninfo_to_dict(infrastructure.pg_dsn)
        or not infrastructure.kafka_security.protocol.startswith("SASL_")
        or not infrastructure.es_security.username
    ):
        pytest.skip("the servers of this session are not secured")


@pytest.fixture
def secured(infrastructure: Infrastructure) -> Infrastructure:
    _require_secured(infrastructure)
    return infrastructure


def _dsn_with(dsn: str, **params: str) -> str:
    values = conninfo_to_dict(dsn)
    values.update(params)
    return make_conninfo("", **values)


def _wrong_passfile(tmp_path: Path, dsn: str) -> str:
    params = conninfo_to_dict(dsn)
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"*:*:*:{params['user']}:{WRONG_PASSWORD}\n")
    passfile.chmod(0o600)
    return _dsn_with(dsn, passfile=str(passfile))


def _free_address() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


def _run_service(
    module: str, overrides: Mapping[str, str | None]
) -> subprocess.CompletedProcess[str]:
    """Starts ``python -m module`` with the session's settings and ``overrides`` (None
    removes a variable); waits for it to exit on its own."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    for name in ("COMMAND", "QUERY", "POLLER", "PROJECTOR"):
        env[f"CHRONOS_{name}_METRICS_PORT"] = "0"
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return subprocess.run(
        [sys.executable, "-m", module],
        env=env,
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_SECONDS,
        cwd=PROJECT_ROOT,
    )


def _assert_one_clear_line(
    result: subprocess.CompletedProcess[str], service: str, *fragments: str
) -> None:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert WRONG_PASSWORD not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.startswith(f"{service}: ")]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], result.stderr


# PostgreSQL


def test_postgres_refuses_plaintext_connections(secured: Infrastructure) -> None:
    with pytest.raises(psycopg.OperationalError, match=r"no pg_hba\.conf entry"):
        psycopg.connect(_dsn_with(secured.pg_dsn, sslmode="disable"), connect_timeout=10)


def test_postgres_refuses_a_wrong_password(secured: Infrastructure, tmp_path: Path) -> None:
    with pytest.raises(BackendRefused, match="refused the password of user 'chronos'"):
        check_postgres_login(_wrong_passfile(tmp_path, secured.pg_dsn))


def test_command_server_stops_at_start_on_a_wrong_postgres_password(
    secured: Infrastructure, tmp_path: Path
) -> None:
    dsn = _wrong_passfile(tmp_path, secured.pg_dsn)
    params = conninfo_to_dict(dsn)
    result = _run_service(
        "command_server", {"CHRONOS_PG_DSN": dsn, "CHRONOS_COMMAND_ADDR": _free_address()}
    )
    _assert_one_clear_line(
        result,
        "command-server",
        f"PostgreSQL at {params['host']}:{params['port']}",
        "refused the password of user 'chronos'",
        "CHRONOS_PG_DSN",
    )


# Kafka


def test_kafka_refuses_plaintext_clients(secured: Infrastructure) -> None:
    admin = AdminClient(
        kafka_client_config(secured.kafka_bootstrap, KafkaSecurity(), **{"socket.timeout.ms": 3000})
    )
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=5)


def test_kafka_refuses_wrong_scram_credentials(secured: Infrastructure) -> None:
    wrong = KafkaSecurity(
        protocol="SASL_SSL",
        mechanism=secured.kafka_security.mechanism,
        username=secured.kafka_security.username,
        password=WRONG_PASSWORD,
        ca_file=secured.kafka_security.ca_file,
    )
    with pytest.raises(BackendRefused, match="Kafka refused the SASL credentials for user"):
        check_kafka_login(secured.kafka_bootstrap, wrong)


def test_outbox_poller_stops_at_start_on_wrong_kafka_credentials(
    secured: Infrastructure,
) -> None:
    result = _run_service(
        "outbox_poller",
        {
            "CHRONOS_KAFKA_SASL_PASSWORD_FILE": None,
            "CHRONOS_KAFKA_SASL_PASSWORD": WRONG_PASSWORD,
        },
    )
    _assert_one_clear_line(
        result,
        "outbox-poller",
        f"Kafka refused the SASL credentials for user 'chronos' at {secured.kafka_bootstrap}",
        "CHRONOS_KAFKA_SASL_USERNAME",
    )


# Elasticsearch


def test_elasticsearch_refuses_plaintext_http(secured: Infrastructure) -> None:
    plaintext_url = secured.es_url.replace("https://", "http://")
    client = elasticsearch_client(
        plaintext_url, ElasticsearchSecurity(), request_timeout=10, max_retries=0
    )
    with pytest.raises(TransportConnectionError):
        client.cluster.health()
    client.close()


def test_elasticsearch_refuses_anonymous_clients(secured: Infrastructure) -> None:
    anonymous = ElasticsearchSecurity(ca_file=secured.es_security.ca_file)
    client = elasticsearch_client(secured.es_url, anonymous, request_timeout=10, max_retries=0)
    with pytest.raises(AuthenticationException):
        client.cluster.health()
    client.close()


def test_elasticsearch_refuses_a_wrong_password(secured: Infrastructure) -> None:
    wrong = ElasticsearchSecurity(
        ca_file=secured.es_security.ca_file,
        username=secured.es_security.username,
        password=WRONG_PASSWORD,
    )
    with pytest.raises(BackendRefused, match="Elasticsearch refused the credentials of user"):
        check_elasticsearch_login(secured.es_url, wrong)


def test_query_server_stops_at_start_on_a_wrong_elasticsearch_password(
    secured: Infrastructure,
) -> None:
    result = _run_service(
        "query_server",
        {
            "CHRONOS_ES_PASSWORD_FILE": None,
            "CHRONOS_ES_PASSWORD": WRONG_PASSWORD,
            "CHRONOS_QUERY_ADDR": _free_address(),
        },
    )
    _assert_one_clear_line(
        result,
        "query-server",
        f"Elasticsearch refused the credentials of user 'chronos' at {secured.es_url}",
        "CHRONOS_ES_PASSWORD_FILE",
    )


def test_projector_stops_at_start_on_a_wrong_elasticsearch_password(
    secured: Infrastructure,
) -> None:
    result = _run_service(
        "projector",
        {"CHRONOS_ES_PASSWORD_FILE": None, "CHRONOS_ES_PASSWORD": WRONG_PASSWORD},
    )
    _assert_one_clear_line(
        result, "projector", "Elasticsearch refused the credentials of user 'chronos'"
    )


def test_elasticsearch_refuses_a_wrong_api_key_with_a_clear_error(
    secured: Infrastructure,
) -> None:
    # The local stack's integ-test distribution cannot create API keys (it lacks the
    # analysis module the .security index needs), so this checks the refusal path: a key
    # Elasticsearch does not know is refused at the login check, with a message naming
    # the credential kind and without the key.
    wrong_key = "Y2hyb25vcy10ZXN0Ondyb25nLWtleQ=="
    key = ElasticsearchSecurity(ca_file=secured.es_security.ca_file, api_key=wrong_key)
    with pytest.raises(BackendRefused, match="refused the credentials of the API key") as error:
        check_elasticsearch_login(secured.es_url, key)
    assert wrong_key not in str(error.value)

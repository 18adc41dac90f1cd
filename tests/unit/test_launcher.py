"""The launcher's pure parts: ports handed out once, the services' environment."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from chronos.security import config as security
from chronos_dev.launcher import (
    INSECURE_SETTINGS,
    PLAINTEXT,
    PROJECT_ROOT,
    SERVER_MODULES,
    SERVER_SECURITY_VARIABLES,
    TRACING_VARIABLES,
    Backends,
    PortAllocator,
    Services,
    service_environment,
)
from chronos_dev.pki import LocalPki, ensure_local_pki
from tests.unit.test_dev_client_security import stack_environment

BACKENDS = Backends(
    pg_dsn="postgresql://db",
    kafka_bootstrap="127.0.0.1:9092",
    es_url="http://127.0.0.1:9200",
    events_topic="topic",
    index_prefix="prefix",
    projector_group="group",
)


def test_the_allocator_never_hands_out_a_port_twice() -> None:
    ports = PortAllocator()
    taken = [ports.take() for _ in range(50)]
    assert len(set(taken)) == len(taken)
    assert all(1024 <= port <= 65535 for port in taken)
    host, port = ports.address().rsplit(":", 1)
    assert host == "127.0.0.1"
    assert int(port) not in taken


def test_the_environment_puts_the_repository_first_and_drops_what_it_is_told(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    monkeypatch.setenv("CHRONOS_TRACE_FILE", "/tmp/spans.jsonl")
    monkeypatch.setenv("CHRONOS_PG_DSN", "postgresql://inherited")
    env = service_environment({"CHRONOS_PG_DSN": "postgresql://mine"}, without=TRACING_VARIABLES)
    assert env["PYTHONPATH"].split(os.pathsep) == [str(PROJECT_ROOT), "/elsewhere"]
    assert env["CHRONOS_PG_DSN"] == "postgresql://mine"
    assert "CHRONOS_TRACE_FILE" not in env
    assert env["PATH"] == os.environ["PATH"]


def test_backends_name_every_variable_a_service_set_needs() -> None:
    assert BACKENDS.environment() == {
        "CHRONOS_PG_DSN": "postgresql://db",
        "CHRONOS_KAFKA_BOOTSTRAP": "127.0.0.1:9092",
        "CHRONOS_ES_URL": "http://127.0.0.1:9200",
        "CHRONOS_EVENTS_TOPIC": "topic",
        "CHRONOS_INDEX_PREFIX": "prefix",
        "CHRONOS_PROJECTOR_GROUP": "group",
    }


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> LocalPki:
    return ensure_local_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def secured_environment(pki: LocalPki, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in (*INSECURE_SETTINGS, *SERVER_SECURITY_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    for name, value in stack_environment(pki).items():
        monkeypatch.setenv(name, value)
    yield


@pytest.mark.usefixtures("secured_environment")
def test_a_set_serves_as_the_environment_says_and_its_clients_follow(pki: LocalPki) -> None:
    services = Services(BACKENDS, log_dir=Path("/nonexistent"))
    env = services.environment()
    assert env[security.TLS_CERT_FILE.name] == str(pki.server_cert)
    assert env[security.AUTH_JWKS_FILE.name] == str(pki.jwks)
    assert not set(INSECURE_SETTINGS) & set(env)
    client = services.services.security
    assert client.ca_pem == pki.ca_cert.read_bytes()
    assert client.token is not None and client.token.count(".") == 2
    # The token stays out of the set's repr, which error messages may show.
    assert client.token not in repr(services.services)


@pytest.mark.usefixtures("secured_environment")
def test_an_insecure_set_runs_plaintext_without_authentication() -> None:
    services = Services(
        BACKENDS, log_dir=Path("/nonexistent"), modules=SERVER_MODULES, insecure=True
    )
    env = services.environment()
    assert {name: env[name] for name in INSECURE_SETTINGS} == INSECURE_SETTINGS
    assert not set(SERVER_SECURITY_VARIABLES) & set(env)
    assert services.services.security == PLAINTEXT


def test_a_set_needs_both_servers() -> None:
    with pytest.raises(AssertionError):
        Services(BACKENDS, log_dir=Path("/nonexistent"), modules=("command_server",))

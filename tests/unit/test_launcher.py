"""The launcher's pure parts: ports handed out once, the services' environment."""

from __future__ import annotations

import os

import pytest

from chronos_dev.launcher import (
    PROJECT_ROOT,
    TRACING_VARIABLES,
    Backends,
    PortAllocator,
    service_environment,
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
    backends = Backends(
        pg_dsn="postgresql://db",
        kafka_bootstrap="127.0.0.1:9092",
        es_url="http://127.0.0.1:9200",
        events_topic="topic",
        index_prefix="prefix",
        projector_group="group",
    )
    assert backends.environment() == {
        "CHRONOS_PG_DSN": "postgresql://db",
        "CHRONOS_KAFKA_BOOTSTRAP": "127.0.0.1:9092",
        "CHRONOS_ES_URL": "http://127.0.0.1:9200",
        "CHRONOS_EVENTS_TOPIC": "topic",
        "CHRONOS_INDEX_PREFIX": "prefix",
        "CHRONOS_PROJECTOR_GROUP": "group",
    }

"""Shared fixtures: real PostgreSQL, Kafka and Elasticsearch for the integration tests.

Where the servers come from, in order:

1. ``CHRONOS_TEST_INFRA=docker`` and a reachable Docker engine: testcontainers.
2. ``CHRONOS_PG_DSN``, ``CHRONOS_KAFKA_BOOTSTRAP`` and ``CHRONOS_ES_URL`` all set
   (``scripts/test`` does this after ``chronos-dev infra up``): those servers, with the
   security settings in the environment (``CHRONOS_KAFKA_*``, ``CHRONOS_ES_*``; the
   DSN carries PostgreSQL's).
3. Otherwise the local stack (:mod:`chronos_dev.stack`), started in-process; any of the
   three variables that is set still names an external server. Servers this session
   started are stopped at its end; ones that were already running are left running.
   The stack's variables (``chronos-dev infra env``) are put into this process's
   environment, so the services the tests start and the client builders' defaults
   (:func:`chronos.kafka_client.kafka_client_config`,
   :func:`chronos.read_model.client.elasticsearch_client`) use the same security.

Tests build every Kafka client with ``kafka_client_config`` and every Elasticsearch
client with ``elasticsearch_client``, as the services do.

Tests under ``tests/integration`` are marked ``integration``, under ``tests/e2e``
``e2e``, so ``-m "not integration and not e2e"`` runs the unit tests alone.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from elasticsearch import Elasticsearch

from chronos.kafka_client import KafkaSecurity
from chronos.read_model.client import ElasticsearchSecurity, elasticsearch_client

TESTS_DIR = Path(__file__).resolve().parent
INFRA_ENV_VARS = ("CHRONOS_PG_DSN", "CHRONOS_KAFKA_BOOTSTRAP", "CHRONOS_ES_URL")

# Images for the Docker route, matching the local stack's major versions.
POSTGRES_IMAGE = "postgres:18"
KAFKA_IMAGE = "confluentinc/cp-kafka:7.9.0"
ELASTICSEARCH_IMAGE = "docker.elastic.co/elasticsearch/elasticsearch:8.19.21"

_MARKS_BY_DIRECTORY = {"integration": pytest.mark.integration, "e2e": pytest.mark.e2e}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        try:
            relative = item.path.resolve().relative_to(TESTS_DIR)
        except ValueError:
            continue
        mark = _MARKS_BY_DIRECTORY.get(relative.parts[0])
        if mark is not None:
            item.add_marker(mark)


@dataclass(frozen=True)
class Infrastructure:
    """Addresses of the three servers and how to authenticate to them, as the Chronos
    services take them (the DSN carries PostgreSQL's TLS and passfile settings)."""

    pg_dsn: str
    kafka_bootstrap: str
    es_url: str
    kafka_security: KafkaSecurity
    es_security: ElasticsearchSecurity


@pytest.fixture(scope="session")
def infrastructure() -> Iterator[Infrastructure]:
    if os.environ.get("CHRONOS_TEST_INFRA") == "docker" and _docker_is_reachable():
        yield from _docker_infrastructure()
    elif all(os.environ.get(name) for name in INFRA_ENV_VARS):
        yield _from_environment(os.environ)
    else:
        yield from _local_stack_infrastructure()


@pytest.fixture(scope="session")
def pg_dsn(infrastructure: Infrastructure) -> str:
    return infrastructure.pg_dsn


@pytest.fixture(scope="session")
def kafka_bootstrap(infrastructure: Infrastructure) -> str:
    return infrastructure.kafka_bootstrap


@pytest.fixture(scope="session")
def es_url(infrastructure: Infrastructure) -> str:
    return infrastructure.es_url


@pytest.fixture(scope="session")
def pg_conn(pg_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """A psycopg connection in autocommit mode, shared by the session."""
    with psycopg.connect(pg_dsn, autocommit=True) as connection:
        yield connection


@pytest.fixture(scope="session")
def es_client(infrastructure: Infrastructure) -> Iterator[Elasticsearch]:
    """A client for ``es_url``, built as the services build theirs."""
    client = elasticsearch_client(
        infrastructure.es_url, infrastructure.es_security, request_timeout=30
    )
    try:
        yield client
    finally:
        client.close()


def _local_stack_infrastructure() -> Iterator[Infrastructure]:
    from chronos_dev.stack.stack import Stack

    def progress(message: str) -> None:
        print(f"chronos-dev infra: {message}", file=sys.stderr, flush=True)

    stack = Stack()
    started = stack.up(progress=progress)
    try:
        values = stack.environment()
        os.environ.update(values)
        yield _from_environment(values)
    finally:
        if started:
            stack.down(only=started, progress=progress)


def _from_environment(values: Mapping[str, str]) -> Infrastructure:
    return Infrastructure(
        pg_dsn=values["CHRONOS_PG_DSN"],
        kafka_bootstrap=values["CHRONOS_KAFKA_BOOTSTRAP"],
        es_url=values["CHRONOS_ES_URL"],
        kafka_security=KafkaSecurity.from_env(values),
        es_security=ElasticsearchSecurity.from_env(values),
    )


def _docker_is_reachable() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        # No engine, no socket, no permission: all mean "not reachable".
        return False


def _docker_infrastructure() -> Iterator[Infrastructure]:
    from testcontainers.community.elasticsearch import ElasticSearchContainer
    from testcontainers.community.kafka import KafkaContainer
    from testcontainers.community.postgres import PostgresContainer

    postgres = PostgresContainer(
        POSTGRES_IMAGE, username="postgres", password="postgres", dbname="chronos", driver=None
    ).with_command("postgres -c track_commit_timestamp=on")
    kafka = KafkaContainer(KAFKA_IMAGE).with_kraft()
    elasticsearch = ElasticSearchContainer(ELASTICSEARCH_IMAGE, mem_limit="2G").with_env(
        "discovery.type", "single-node"
    )
    with postgres, kafka, elasticsearch:
        host = elasticsearch.get_container_host_ip()
        port = elasticsearch.get_exposed_port(elasticsearch.port)
        # The containers run without security (testcontainers' defaults); this route
        # exercises the plaintext settings only.
        yield Infrastructure(
            pg_dsn=postgres.get_connection_url(),
            kafka_bootstrap=kafka.get_bootstrap_server(),
            es_url=f"http://{host}:{port}",
            kafka_security=KafkaSecurity(),
            es_security=ElasticsearchSecurity(),
        )

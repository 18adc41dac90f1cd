"""Fixtures for the write side: a fresh, migrated database per test module."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from elasticsearch import Elasticsearch
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from chronos.event_store.migrate import migrate
from chronos.read_model.indices import IndexNames


def database_dsn(server_dsn: str, database: str) -> str:
    """``server_dsn`` pointing at another database of the same server."""
    params = conninfo_to_dict(server_dsn)
    params["dbname"] = database
    return make_conninfo(**params)


def create_database(server_dsn: str) -> tuple[str, str]:
    """Creates and migrates a uniquely named database; returns (name, dsn)."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    dsn = database_dsn(server_dsn, name)
    migrate(dsn)
    return name, dsn


def drop_database(server_dsn: str, name: str) -> None:
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def ledger_dsn(pg_dsn: str) -> Iterator[str]:
    """DSN of a fresh database with the current schema, dropped after the module."""
    name, dsn = create_database(pg_dsn)
    try:
        yield dsn
    finally:
        drop_database(pg_dsn, name)


@pytest.fixture
def ledger_conn(ledger_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(ledger_dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture
def names(es_client: Elasticsearch) -> Iterator[IndexNames]:
    """A unique index prefix; every index under it is deleted afterwards."""
    from tests.integration.readside_support import index_prefix

    with index_prefix(es_client) as value:
        yield value


@pytest.fixture
def topic(kafka_bootstrap: str) -> Iterator[str]:
    """A new events topic (3 partitions), deleted afterwards."""
    from tests.integration.readside_support import kafka_topic

    with kafka_topic(kafka_bootstrap) as value:
        yield value

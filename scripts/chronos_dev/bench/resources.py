"""The servers a bench uses and the fresh, uniquely named things it creates on them.

The local stack (``chronos-dev infra``) is used as it is when it runs; when it does not, the
bench starts it and stops afterwards exactly the servers it started. On those servers a
run gets its own database ``bench_<timestamp>_<tag>`` (migrated), events topic, consumer
group and index prefix, so it neither sees nor disturbs anybody else's data; they are
removed at the end unless ``--keep``. A run killed before its end leaves them behind;
:func:`leftover_resources` finds them by that naming, ``--remove-leftovers`` removes them.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from chronos.event_store.migrate import migrate
from chronos.kafka_client import kafka_client_config
from chronos_dev.launcher import Backends
from chronos_dev.stack import InfraError
from chronos_dev.stack.stack import Stack

PG_CONNECT_TIMEOUT_SECONDS = 10
CLEANUP_TIMEOUT_SECONDS = 30.0


class BenchError(Exception):
    """The bench could not run (servers unreachable, a tool missing, a stage broke)."""


def _progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


@dataclass(slots=True)
class Infrastructure:
    """Addresses of PostgreSQL, Kafka and Elasticsearch, and their pids when local."""

    pg_server_dsn: str
    kafka_bootstrap: str
    es_url: str
    # Server name ("postgres", "kafka", "elasticsearch") -> pid, for the local stack.
    pids: dict[str, int] = field(default_factory=dict)
    # Servers this run started, stopped again by :func:`release_stack`.
    started: list[str] = field(default_factory=list)


def acquire_stack() -> Infrastructure:
    """The running local stack, started first when any of its servers is down.

    Raises:
        BenchError: the stack cannot be read or started.
    """
    stack = Stack()
    try:
        rows = stack.status()
        started: list[str] = []
        if not all(row.is_usable for row in rows):
            _progress("the local stack is not (fully) running: chronos-dev infra up")
            started = stack.up(progress=_progress)
            rows = stack.status()
        if not all(row.is_usable for row in rows):
            states = ", ".join(f"{row.name} {row.state}" for row in rows)
            raise BenchError(f"the local stack is not usable: {states}")
        environment = stack.environment()
        # The security settings (CA, users, password files) reach the clients built here
        # and the services the bench starts through the environment, as after
        # `eval "$(chronos-dev infra env)"`; what the caller set wins.
        for name, value in environment.items():
            os.environ.setdefault(name, value)
    except InfraError as error:
        raise BenchError(f"local stack: {error}") from error
    return Infrastructure(
        pg_server_dsn=environment["CHRONOS_PG_DSN"],
        kafka_bootstrap=environment["CHRONOS_KAFKA_BOOTSTRAP"],
        es_url=environment["CHRONOS_ES_URL"],
        pids={row.name: row.pid for row in rows if row.pid},
        started=started,
    )


def release_stack(infrastructure: Infrastructure) -> None:
    """Stops the servers :func:`acquire_stack` started (none when it found them running)."""
    if not infrastructure.started:
        return
    _progress(f"stopping the servers this run started: {', '.join(infrastructure.started)}")
    try:
        Stack().down(only=infrastructure.started, progress=_progress)
    except InfraError as error:
        _progress(f"warning: could not stop the stack: {error}")


def database_dsn(server_dsn: str, database: str) -> str:
    """``server_dsn`` pointing at another database of the same server."""
    params = conninfo_to_dict(server_dsn)
    params["dbname"] = database
    return make_conninfo("", **params)


@dataclass(frozen=True, slots=True, kw_only=True)
class BenchResources:
    """The names a run owns on the shared servers."""

    database: str
    pg_dsn: str
    topic: str
    index_prefix: str
    consumer_group: str

    def to_json(self) -> dict[str, str]:
        return {
            "database": self.database,
            "topic": self.topic,
            "index_prefix": self.index_prefix,
            "consumer_group": self.consumer_group,
        }

    def backends(self, infrastructure: Infrastructure) -> Backends:
        """These names on ``infrastructure``'s servers, for the launcher."""
        return Backends(
            pg_dsn=self.pg_dsn,
            kafka_bootstrap=infrastructure.kafka_bootstrap,
            es_url=infrastructure.es_url,
            events_topic=self.topic,
            index_prefix=self.index_prefix,
            projector_group=self.consumer_group,
        )


# bench_<yyyymmdd>_<hhmmss>_<6 hex>: the database name create_resources gives a run.
_DATABASE_NAME = re.compile(r"bench_\d{8}_\d{6}_[0-9a-f]{6}")


def _named(database: str, dsn: str) -> BenchResources:
    """The names of a run's things, all derived from its database name."""
    dashed = database.removeprefix("bench_").replace("_", "-")
    return BenchResources(
        database=database,
        pg_dsn=dsn,
        topic=f"chronos-bench-{dashed}",
        index_prefix=f"bench-{dashed}",
        consumer_group=f"chronos-bench-{dashed}",
    )


def _server_session(infrastructure: Infrastructure) -> psycopg.Connection[Any]:
    """A session on the server's own database, for creating and dropping databases."""
    return psycopg.connect(
        infrastructure.pg_server_dsn, autocommit=True, connect_timeout=PG_CONNECT_TIMEOUT_SECONDS
    )


def create_resources(infrastructure: Infrastructure) -> BenchResources:
    """Creates and migrates a fresh database; the topic, group and indices are only
    named here (the outbox poller creates the topic, the projector the indices)."""
    database = f"bench_{time.strftime('%Y%m%d_%H%M%S')}_{uuid.uuid4().hex[:6]}"
    try:
        with _server_session(infrastructure) as conn:
            conn.execute(f'CREATE DATABASE "{database}"')
        dsn = database_dsn(infrastructure.pg_server_dsn, database)
        migrate(dsn)
    except psycopg.Error as error:
        raise BenchError(f"cannot create the bench database: {error}") from error
    return _named(database, dsn)


def leftover_resources(infrastructure: Infrastructure) -> list[BenchResources]:
    """The databases (and with them the names of the topics, groups and indices) of
    earlier runs that were stopped before removing them, oldest first.

    Raises:
        BenchError: PostgreSQL cannot be read.
    """
    try:
        with _server_session(infrastructure) as conn:
            rows = conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE 'bench\\_%' ORDER BY datname"
            ).fetchall()
    except psycopg.Error as error:
        raise BenchError(f"cannot list the bench databases: {error}") from error
    return [
        _named(name, database_dsn(infrastructure.pg_server_dsn, name))
        for (name,) in rows
        if _DATABASE_NAME.fullmatch(name)
    ]


def remove_resources(infrastructure: Infrastructure, resources: BenchResources) -> None:
    """Drops the database, indices, topic and consumer group; reports, never raises."""
    _progress(f"removing {resources.database}, topic, consumer group and indices")
    try:
        with _server_session(infrastructure) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{resources.database}" WITH (FORCE)')
    except psycopg.Error as error:
        _progress(f"warning: could not drop {resources.database}: {error}")
    _delete_indices(infrastructure.es_url, resources.index_prefix)
    _delete_kafka_objects(infrastructure.kafka_bootstrap, resources)


def _delete_indices(es_url: str, prefix: str) -> None:
    # Imported here: only the clean-up needs the Elasticsearch client.
    from chronos.read_model.client import elasticsearch_client

    es = elasticsearch_client(es_url, request_timeout=CLEANUP_TIMEOUT_SECONDS)
    try:
        es.options(ignore_status=404).indices.delete(index=f"{prefix}-*", expand_wildcards="all")
    except Exception as error:  # clean-up is best effort: report, keep going
        _progress(f"warning: could not delete the indices {prefix}-*: {error}")
    finally:
        es.close()


def _delete_kafka_objects(bootstrap: str, resources: BenchResources) -> None:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(kafka_client_config(bootstrap))
    futures: dict[str, Any] = {}
    futures.update(admin.delete_topics([resources.topic], operation_timeout=30))
    futures.update(
        admin.delete_consumer_groups(
            [resources.consumer_group], request_timeout=CLEANUP_TIMEOUT_SECONDS
        )
    )
    for future in futures.values():
        # The topic exists only once the poller created it, the group once the projector
        # joined: a failure here usually means there was nothing to delete.
        with contextlib.suppress(Exception):
            future.result(timeout=CLEANUP_TIMEOUT_SECONDS)


def postgres_settings(pg_dsn: str) -> dict[str, str]:
    """The server settings that decide what a commit costs, as the server has them."""
    names = (
        "fsync",
        "synchronous_commit",
        "wal_sync_method",
        "full_page_writes",
        "commit_delay",
        "wal_level",
        "shared_buffers",
        "max_connections",
        "server_version",
    )
    settings: dict[str, str] = {}
    with psycopg.connect(pg_dsn, autocommit=True, connect_timeout=PG_CONNECT_TIMEOUT_SECONDS) as c:
        for name in names:
            row = c.execute(f"SHOW {name}").fetchone()
            assert row is not None, f"SHOW {name} returned no row"
            settings[name] = str(row[0])
    return settings

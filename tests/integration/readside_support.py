"""Helpers for the read-side tests (projector, rebuild, reconcile, query server).

They act as the parts of the system that are not under test: a fresh event store
written through the real ``LedgerWriter``, and a stand-in for the outbox poller that
publishes envelopes and watermark markers exactly as ``chronos.outbox.contract`` says.
Every object they create has a unique name and is removed again.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from elasticsearch import Elasticsearch

from chronos.domain import validation
from chronos.domain.commands import Command
from chronos.event_store import mapper
from chronos.event_store.mapper import StoredEvent, envelope
from chronos.event_store.reader import iter_events
from chronos.event_store.results import CommandResult
from chronos.event_store.writer import CommandContext, LedgerWriter, WriterSettings, writer_pool
from chronos.kafka_client import kafka_client_config
from chronos.outbox import contract
from chronos.read_model.es_writer import EsWriter
from chronos.read_model.history import EventStoreHistory, StreamHistory
from chronos.read_model.indices import IndexNames, ensure_indices
from chronos.read_model.watermark import WatermarkReader
from projector.config import ProjectorConfig
from projector.consumer import Projector
from tests.integration.conftest import create_database, drop_database

KAFKA_TIMEOUT_SECONDS = 30.0
PARTITIONS = 3


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@contextmanager
def fresh_database(pg_dsn: str) -> Iterator[str]:
    """A new, migrated database; yields its DSN and drops it afterwards."""
    name, dsn = create_database(pg_dsn)
    try:
        yield dsn
    finally:
        drop_database(pg_dsn, name)


@contextmanager
def index_prefix(es: Elasticsearch) -> Iterator[IndexNames]:
    """A unique index prefix; deletes every index under it afterwards."""
    names = IndexNames(prefix=unique("t"))
    try:
        yield names
    finally:
        es.options(ignore_status=404).indices.delete(
            index=f"{names.prefix}-*", expand_wildcards="all"
        )


@contextmanager
def kafka_topic(bootstrap: str, partitions: int = PARTITIONS) -> Iterator[str]:
    """A new topic; deleted afterwards."""
    name = unique("chronos-test-events")
    admin = AdminClient(kafka_client_config(bootstrap))
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions)])
    futures[name].result(timeout=KAFKA_TIMEOUT_SECONDS)
    try:
        yield name
    finally:
        admin.delete_topics([name])[name].result(timeout=KAFKA_TIMEOUT_SECONDS)


def execute(dsn: str, commands: Sequence[Command], *, validate: bool = True) -> list[CommandResult]:
    """Runs commands one after the other through the real group-commit writer
    (``validate=False``: as a ledger written by an older, laxer version would have)."""

    async def run() -> list[CommandResult]:
        pool = writer_pool(dsn, min_size=1, max_size=2)
        await pool.open(wait=True)
        writer = LedgerWriter(pool, WriterSettings(lanes=1))
        writer.start()
        try:
            results = []
            for command in commands:
                if validate:
                    validation.validate(command)
                canonical = validation.canonicalize(command)
                results.append(
                    await writer.execute(
                        canonical,
                        validation.fingerprint(canonical),
                        CommandContext(request_id=canonical.request_id),
                    )
                )
            return results
        finally:
            await writer.close()
            await pool.close()

    return asyncio.run(run())


def stored_events(dsn: str, after_position: int = 0) -> list[StoredEvent]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return list(iter_events(conn, after_position=after_position))


def _headers(stored: StoredEvent) -> dict[str, str]:
    # The headers the writer stores with each outbox row (chronos.outbox.contract).
    return {
        **stored.metadata,
        contract.HEADER_EVENT_ID: stored.event_id,
        contract.HEADER_EVENT_TYPE: stored.event_type,
        contract.HEADER_SCHEMA: f"{mapper.PROTO_PACKAGE}.{stored.event_type}",
        contract.HEADER_SCHEMA_VERSION: str(stored.schema_version),
        contract.HEADER_STREAM_VERSION: str(stored.stream_version),
        contract.HEADER_POSITION: str(stored.position),
        contract.HEADER_RECORDED_AT: stored.recorded_at.isoformat(),
    }


class FakePoller:
    """Publishes stored events and markers in the poller's format, but in whatever order
    and as often as a test says: redelivery, reordering and partial markers on purpose.
    (The real poller's own behaviour is tested in test_outbox_poller.py.)"""

    def __init__(self, bootstrap: str, topic: str, partitions: int = PARTITIONS) -> None:
        self.topic = topic
        self.partitions = partitions
        self._producer = Producer(
            kafka_client_config(bootstrap, **{"enable.idempotence": True, "acks": "all"})
        )

    def publish(self, events: Sequence[StoredEvent], *, markers: bool = True) -> None:
        for stored in events:
            self.publish_event(stored)
        if markers and events:
            self.publish_markers(events[-1].position)
        self.flush()

    def publish_event(self, stored: StoredEvent, partition: int | None = None) -> None:
        kwargs: dict[str, Any] = {}
        if partition is not None:
            kwargs["partition"] = partition
        self._producer.produce(
            self.topic,
            key=stored.stream_id.encode(),
            value=envelope(stored).SerializeToString(),
            headers=list(_headers(stored).items()),
            **kwargs,
        )

    def publish_markers(self, position: int, partitions: Sequence[int] | None = None) -> None:
        for partition in range(self.partitions) if partitions is None else partitions:
            self._producer.produce(
                self.topic,
                value=b"",
                partition=partition,
                headers=[
                    (contract.HEADER_EVENT_TYPE, contract.MARKER_EVENT_TYPE),
                    (contract.HEADER_POSITION, str(position)),
                ],
            )

    def flush(self) -> None:
        remaining = self._producer.flush(KAFKA_TIMEOUT_SECONDS)
        assert remaining == 0, "the broker did not acknowledge every message"


def projector_config(
    bootstrap: str, es_url: str, topic: str, names: IndexNames, group: str
) -> ProjectorConfig:
    return ProjectorConfig(
        kafka_bootstrap=bootstrap,
        es_url=es_url,
        topic=topic,
        group_id=group,
        index_prefix=names.prefix,
        batch_size_max=500,
        poll_timeout_seconds=0.2,
        retries_max=3,
        retry_backoff_seconds_max=0.5,
        topic_wait_seconds_max=30,
    )


class NoHistory:
    """The history of a test whose events are made by hand and never reach an event
    store: any gap in them is a failure of the test's own setup."""

    def events(self, stream_id: str, *, after_version: int, up_to_version: int) -> list[Any]:
        raise AssertionError(f"unexpected gap in {stream_id}: {after_version}..{up_to_version}")


def history_for(pg_dsn: str | None) -> StreamHistory:
    return NoHistory() if pg_dsn is None else EventStoreHistory(pg_dsn)


def build_projector(
    es: Elasticsearch, config: ProjectorConfig, *, pg_dsn: str | None = None
) -> Projector:
    from confluent_kafka import Consumer

    ensure_indices(es, config.index_names)
    projector = Projector(
        Consumer(config.consumer_settings()),
        EsWriter(es, config.index_names),
        config,
        history=history_for(pg_dsn),
    )
    projector.start()
    return projector


def project_until_visible(
    projector: Projector,
    es: Elasticsearch,
    names: IndexNames,
    position: int,
    *,
    timeout_seconds: float = 60.0,
) -> None:
    """Steps the projector until ``position`` is visible (bounded)."""
    reader = WatermarkReader(es, names)
    deadline = time.monotonic() + timeout_seconds
    while reader.read().visible_position < position:
        assert time.monotonic() < deadline, f"position {position} never became visible"
        projector.step()


class BackgroundProjector:
    """Runs a projector loop on a thread (for tests that need it live)."""

    def __init__(
        self, es: Elasticsearch, config: ProjectorConfig, *, pg_dsn: str | None = None
    ) -> None:
        self._stop = threading.Event()
        from confluent_kafka import Consumer

        ensure_indices(es, config.index_names)
        self.projector = Projector(
            Consumer(config.consumer_settings()),
            EsWriter(es, config.index_names),
            config,
            history=history_for(pg_dsn),
            stop=self._stop,
        )
        self.projector.start()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="test-projector", daemon=True)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.projector.step()
        except BaseException as error:
            self.error = error
        finally:
            self.projector.close()

    def __enter__(self) -> BackgroundProjector:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        assert not self._thread.is_alive(), "projector thread did not stop"
        assert self.error is None, f"projector failed: {self.error!r}"


def all_sources(es: Elasticsearch, index: str) -> dict[str, dict[str, Any]]:
    """Every document of an index (or alias) by id, after a refresh."""
    es.indices.refresh(index=index)
    response = es.search(index=index, size=10_000, query={"match_all": {}})
    assert response["hits"]["total"]["value"] < 10_000
    return {hit["_id"]: hit["_source"] for hit in response["hits"]["hits"]}

"""The events index (``chronos.read_model.event_documents``) against real PostgreSQL,
Kafka and Elasticsearch: the document of each kind of event, the projector filling the
index (redelivery a no-op, the chain hash header kept), the index created on start in a
read model an older version made, and rebuild and reconcile covering it.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from elasticsearch import Elasticsearch

from chronos.event_store.mapper import StoredEvent, envelope
from chronos.outbox import contract
from chronos.read_model.event_documents import source_from_stored
from chronos.read_model.event_reconcile import check_event_log
from chronos.read_model.indices import IndexNames, alias_targets, ensure_indices, index_settings
from chronos.read_model.rebuild import rebuild
from chronos.read_model.reconcile import format_report, reconcile
from projector.consumer import Projector
from tests.integration.readside_support import (
    FakePoller,
    _headers,
    all_sources,
    build_projector,
    execute,
    fresh_database,
    project_until_visible,
    projector_config,
    stored_events,
    unique,
)
from tests.integration.test_rebuild_reconcile import ACCOUNTS, history

CHAIN_HASH = "ab" * 32


@pytest.fixture
def dsn(pg_dsn: str) -> Iterator[str]:
    with fresh_database(pg_dsn) as value:
        execute(value, history())
        yield value


def by_type(events: list[StoredEvent], event_type: str) -> list[StoredEvent]:
    return [event for event in events if event.event_type == event_type]


def test_each_event_becomes_a_document_with_its_derived_fields(dsn: str) -> None:
    events = stored_events(dsn)
    a, b, _, d = ACCOUNTS
    opened = source_from_stored(by_type(events, "AccountOpened")[1])
    assert opened["stream_id"] == b and opened["account_ids"] == [b]
    assert opened["payload"]["owner_name"] == "Bob Marley"
    assert opened["payload"]["metadata"] == {"segment": "retail"}
    assert "entry_id" not in opened and "chain_hash" not in opened

    rent = next(e for e in by_type(events, "FundsTransferred") if e.stream_id == a)
    source = source_from_stored(rent, chain_hash=CHAIN_HASH)
    assert source["position"] == rent.position and source["event_id"] == rent.event_id
    assert source["event_type"] == "FundsTransferred" and source["schema_version"] == 1
    assert source["stream_version"] == rent.stream_version
    assert source["account_ids"] == [a, b]
    line = source["payload"]["line"]
    assert line["description"] == "rent" and line["amount"]["minor_units"] == "2500"
    assert source["entry_id"] == line["entry_id"]
    assert source["request_id"] == rent.metadata["request_id"]
    assert source["metadata"] == dict(sorted(rent.metadata.items()))
    assert source["chain_hash"] == CHAIN_HASH
    # Full text covers the payload's values and the metadata's.
    for word in ("rent", "a-17", rent.metadata["request_id"]):
        assert word in source["words"]
    # The documents of the two sides of one entry share its id.
    twin = next(e for e in by_type(events, "FundsTransferred") if e.stream_id == b)
    assert source_from_stored(twin)["entry_id"] == source["entry_id"]

    journal = [source_from_stored(e) for e in by_type(events, "JournalEntryPosted")]
    assert {tuple(s["account_ids"]) for s in journal} == {(a,), (d,)}
    assert len({s["entry_id"] for s in journal}) == 1
    # A document is JSON that Elasticsearch takes as it is.
    assert json.loads(json.dumps(source)) == source


def publish_with_chain_hash(poller: FakePoller, stored: StoredEvent) -> None:
    headers = {**_headers(stored), contract.HEADER_CHAIN_HASH: CHAIN_HASH}
    poller._producer.produce(
        poller.topic,
        key=stored.stream_id.encode(),
        value=envelope(stored).SerializeToString(),
        headers=list(headers.items()),
    )


@dataclass
class Live:
    """A stand-in poller and a real projector, stepped by the test."""

    poller: FakePoller
    projector: Projector
    es: Elasticsearch
    names: IndexNames

    def project(self, position: int) -> None:
        project_until_visible(self.projector, self.es, self.names, position)


@pytest.fixture
def live(
    es_client: Elasticsearch,
    kafka_bootstrap: str,
    es_url: str,
    dsn: str,
    names: IndexNames,
    topic: str,
) -> Iterator[Live]:
    config = projector_config(kafka_bootstrap, es_url, topic, names, unique("g"))
    projector = build_projector(es_client, config, pg_dsn=dsn)
    try:
        yield Live(FakePoller(kafka_bootstrap, topic), projector, es_client, names)
    finally:
        projector.close()


def test_the_projector_fills_the_index_once_per_event_with_the_chain_hash(
    es_client: Elasticsearch, dsn: str, names: IndexNames, live: Live
) -> None:
    events = stored_events(dsn)
    publish_with_chain_hash(live.poller, events[0])
    live.poller.publish(events[1:])
    live.project(events[-1].position)
    first = all_sources(es_client, names.events)
    # Delivered again (a poller retry): every create is refused as a duplicate.
    live.poller.publish(events)
    written = duplicate = consumed = 0
    deadline = time.monotonic() + 60
    while consumed < len(events):
        assert time.monotonic() < deadline, f"only {consumed} events arrived again"
        report = live.projector.step()
        consumed += report.events
        written += report.write.events_written
        duplicate += report.write.events_duplicate
    assert (written, duplicate) == (0, len(events))
    assert set(first) == {str(event.position) for event in events}
    for event in events:
        document = first[str(event.position)]
        assert (document["event_id"], document["event_type"]) == (event.event_id, event.event_type)
        assert document == source_from_stored(
            event, chain_hash=CHAIN_HASH if event is events[0] else ""
        )
    assert all_sources(es_client, names.events) == first


def test_an_older_read_model_gains_the_events_index_on_start(
    es_client: Elasticsearch, names: IndexNames
) -> None:
    # As a version before the event log left it: the other data indices and their aliases.
    for alias, index, mapping in names.data_versions(1)[:3]:
        es_client.indices.create(
            index=index,
            mappings=mapping,
            settings=index_settings(),
            aliases={alias: {"is_write_index": True}},
        )
    assert alias_targets(es_client, names.events) == []
    assert ensure_indices(es_client, names) == 1
    assert alias_targets(es_client, names.events) == [names.events_version(1)]


def documents_by_position(es: Elasticsearch, index: str) -> dict[int, dict[str, Any]]:
    return {int(key): value for key, value in all_sources(es, index).items()}


def test_rebuild_refills_the_index_and_reconcile_reports_a_deleted_document(
    es_client: Elasticsearch, dsn: str, names: IndexNames, live: Live
) -> None:
    events = stored_events(dsn)
    live.poller.publish(events)
    live.project(events[-1].position)
    live = documents_by_position(es_client, names.events)
    with psycopg.connect(dsn, autocommit=True) as conn:
        clean = reconcile(conn, es_client, names, wait_seconds=10)
        assert clean.ok and clean.event_log is not None
        assert clean.event_log.store_events == clean.event_log.indexed_events == len(events)

        victim = events[5].position
        es_client.delete(index=names.events, id=str(victim), refresh=True)
        drifted = reconcile(conn, es_client, names, wait_seconds=10)
        assert not drifted.ok
        assert drifted.event_log is not None
        assert drifted.event_log.differences_total == 1
        assert drifted.event_log.differences[0].startswith(f"position {victim}: missing")
        assert f"position {victim}: missing from the events index" in format_report(drifted)

        report = rebuild(conn, es_client, names, batch_size=4)
        assert report.new_version == 2
        assert alias_targets(es_client, names.events) == [names.events_version(2)]
        rebuilt = documents_by_position(es_client, names.events)
        # The rebuild reads each event's chain hash from the store, as the live
        # projector reads it from the message's headers.
        assert {p: d["chain_hash"] for p, d in rebuilt.items()} == {
            e.position: e.chain_hash.hex() for e in events
        }
        assert all(e.chain_hash for e in events)
        assert {p: {**d, "chain_hash": ""} for p, d in rebuilt.items()} == {
            p: {**d, "chain_hash": ""} for p, d in live.items()
        }
        assert check_event_log(conn, es_client, names, events[-1].position).ok


def test_reconcile_reports_changed_documents(
    es_client: Elasticsearch, dsn: str, names: IndexNames
) -> None:
    events = stored_events(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        rebuild(conn, es_client, names)
        changed = events[2]
        es_client.update(
            index=names.events,
            id=str(changed.position),
            doc={"event_id": str(uuid.uuid4())},
            refresh=True,
        )
        # Another event's document in the place of the last but one.
        replaced = events[-2].position
        stray = dict(source_from_stored(events[0]), position=replaced)
        es_client.index(index=names.events, id=str(replaced), document=stray, refresh=True)
        found = check_event_log(conn, es_client, names, events[-1].position)
    assert found.differences_total == 2
    assert found.differences[0].startswith(f"position {changed.position}: the event store has")
    assert found.differences[1] == (
        f"position {replaced}: the event store has {events[-2].event_type} "
        f"{events[-2].event_id}, the events index AccountOpened {events[0].event_id}"
    )

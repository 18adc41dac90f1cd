"""The projector against real Kafka and Elasticsearch: idempotence, order safety,
redelivery after a crash, and watermarks.

Envelopes are built with ``mapper.encode`` + ``mapper.envelope`` from hand-made domain
events and published to a unique topic; the indices live under a unique prefix.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]
from elasticsearch import Elasticsearch

from chronos.domain.commands import Side
from chronos.domain.events import (
    AccountFrozen,
    AccountKind,
    AccountOpened,
    DomainEvent,
    FundsDeposited,
    FundsTransferred,
)
from chronos.event_store import mapper
from chronos.kafka_client import kafka_client_config
from chronos.read_model.indices import IndexNames
from chronos.read_model.watermark import APPLIED, SEARCHABLE, WatermarkReader
from projector.consumer import Projector
from projector.errors import ProjectorError
from tests.integration.readside_support import (
    FakePoller,
    all_sources,
    build_projector,
    project_until_visible,
    projector_config,
    unique,
)

ALICE = "a11ce000-0000-4000-8000-000000000001"
BOB = "b0b00000-0000-4000-8000-000000000002"
T0 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)
STEP_SECONDS_MAX = 60.0


def stored(event: DomainEvent, stream_id: str, version: int, position: int) -> mapper.StoredEvent:
    event_type, schema_version, payload = mapper.encode(event)
    return mapper.StoredEvent(
        position=position,
        event_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{stream_id}/{version}")),
        stream_id=stream_id,
        stream_version=version,
        event_type=event_type,
        schema_version=schema_version,
        payload=payload,
        metadata={"request_id": f"r{position}"},
        recorded_at=T0 + timedelta(milliseconds=position),
    )


def line(
    kind: type[FundsDeposited] | type[FundsTransferred],
    account_id: str,
    side: Side,
    amount: int,
    balance_after: int,
    counterparty: str,
    entry_id: str,
) -> DomainEvent:
    return kind(
        entry_id=entry_id,
        account_id=account_id,
        side=side,
        currency="EUR",
        amount_minor=amount,
        balance_after_minor=balance_after,
        counterparty_account_id=counterparty,
        description=f"{kind.__name__} {amount}",
    )


def opened(account_id: str, owner: str) -> AccountOpened:
    return AccountOpened(
        account_id=account_id,
        owner_name=owner,
        currency="EUR",
        overdraft_limit_minor=0,
        kind=AccountKind.USER,
    )


def ledger_history() -> list[mapper.StoredEvent]:
    """Two accounts, a deposit, a transfer both ways (two lines), a freeze."""
    return [
        stored(opened(ALICE, "Alice Liddell"), ALICE, 1, 1),
        stored(opened(BOB, "Bob Dylan"), BOB, 1, 2),
        stored(line(FundsDeposited, ALICE, Side.CREDIT, 1000, 1000, BOB, "e1"), ALICE, 2, 3),
        stored(line(FundsTransferred, ALICE, Side.DEBIT, 300, 700, BOB, "e2"), ALICE, 3, 4),
        stored(line(FundsTransferred, BOB, Side.CREDIT, 300, 300, ALICE, "e2"), BOB, 2, 5),
        stored(AccountFrozen(account_id=BOB, reason="kyc"), BOB, 3, 6),
        stored(line(FundsTransferred, BOB, Side.CREDIT, 25, 325, ALICE, "e3"), BOB, 4, 7),
    ]


LINES = 4


def consume_events(
    projector: Projector, count: int, *, markers: int = 0, commit: bool = True
) -> dict[str, int]:
    """Steps until ``count`` events (and ``markers`` markers) were consumed; returns the
    summed write counts."""
    totals = {
        "events": 0,
        "markers": 0,
        "accounts_stale": 0,
        "lines_duplicate": 0,
        "lines_written": 0,
    }
    deadline = time.monotonic() + STEP_SECONDS_MAX
    while totals["events"] < count or totals["markers"] < markers:
        assert time.monotonic() < deadline, f"only {totals} of {count} events arrived"
        report = projector.step(commit=commit)
        totals["events"] += report.events
        totals["markers"] += report.markers
        totals["accounts_stale"] += report.write.accounts_stale
        totals["lines_duplicate"] += report.write.transactions_duplicate
        totals["lines_written"] += report.write.transactions_written
    return totals


def snapshot(es: Elasticsearch, names: IndexNames) -> dict[str, Any]:
    accounts = es.mget(index=names.accounts, ids=[ALICE, BOB])["docs"]
    return {
        "accounts": {doc["_id"]: (doc["_version"], doc["_source"]) for doc in accounts},
        "lines": all_sources(es, names.transactions),
    }


@contextlib.contextmanager
def projected_history(
    es_client: Elasticsearch, kafka_bootstrap: str, es_url: str, names: IndexNames, topic: str
) -> Iterator[tuple[FakePoller, Projector]]:
    """Publishes ``ledger_history()``, projects it until visible, yields the poller and the
    still-running projector, and closes the projector afterwards."""
    events = ledger_history()
    poller = FakePoller(kafka_bootstrap, topic)
    poller.publish(events)
    projector = build_projector(
        es_client, projector_config(kafka_bootstrap, es_url, topic, names, unique("g"))
    )
    try:
        project_until_visible(projector, es_client, names, events[-1].position)
        yield poller, projector
    finally:
        projector.close()


def test_projects_the_history(
    es_client: Elasticsearch, kafka_bootstrap: str, es_url: str, names: IndexNames, topic: str
) -> None:
    events = ledger_history()
    with projected_history(es_client, kafka_bootstrap, es_url, names, topic):
        pass

    state = snapshot(es_client, names)
    alice_version, alice = state["accounts"][ALICE]
    bob_version, bob = state["accounts"][BOB]
    assert (alice["balance_minor"], alice["version"], alice_version) == (700, 3, 3)
    assert (bob["balance_minor"], bob["status"], bob["version"], bob_version) == (
        325,
        "FROZEN",
        4,
        4,
    )
    assert bob["last_position"] == 7
    lines = state["lines"]
    assert len(lines) == LINES
    assert {event.event_id for event in events if "Funds" in event.event_type} == set(lines)
    # Searchable as soon as the watermark says so: the bulk used refresh=wait_for.
    hits = es_client.search(
        index=names.transactions, query={"term": {"account_id": BOB}}, sort=[{"position": "desc"}]
    )["hits"]["hits"]
    assert [hit["_source"]["balance_after_minor"] for hit in hits] == [325, 300]


def test_duplicates_and_out_of_order_delivery_change_nothing(
    es_client: Elasticsearch, kafka_bootstrap: str, es_url: str, names: IndexNames, topic: str
) -> None:
    events = ledger_history()
    with projected_history(es_client, kafka_bootstrap, es_url, names, topic) as (
        poller,
        projector,
    ):
        before = snapshot(es_client, names)
        # Everything again, newest first (out of order within each stream), twice.
        replay = list(reversed(events)) * 2
        poller.publish(replay)
        totals = consume_events(projector, len(replay))

    assert totals["lines_written"] == 0
    assert totals["lines_duplicate"] == 2 * LINES
    after = snapshot(es_client, names)
    assert after == before


def test_cached_documents_yield_to_another_writer(
    es_client: Elasticsearch, kafka_bootstrap: str, es_url: str, names: IndexNames, topic: str
) -> None:
    # The projector folds most batches onto the documents it wrote last. If another
    # process projected the next event meanwhile, its document must win and be read back.
    with projected_history(es_client, kafka_bootstrap, es_url, names, topic) as (
        poller,
        projector,
    ):
        # Another writer applies ALICE's version 4 (a deposit of 50) before this projector.
        deposit = stored(line(FundsDeposited, ALICE, Side.CREDIT, 50, 750, BOB, "e4"), ALICE, 4, 8)
        alice = es_client.get(index=names.accounts, id=ALICE)["_source"]
        es_client.index(
            index=names.accounts,
            id=ALICE,
            document={
                **alice,
                "owner_name": "Alice, as the other writer left her",
                "balance_minor": 750,
                "version": 4,
                "last_position": 8,
            },
            version=4,
            version_type="external",
            refresh=True,
        )
        poller.publish([deposit])
        first = consume_events(projector, 1)
        # Version 5 follows the other writer's document, which must be read back.
        withdrawal = stored(
            line(FundsDeposited, ALICE, Side.DEBIT, 150, 600, BOB, "e5"), ALICE, 5, 9
        )
        poller.publish([withdrawal])
        consume_events(projector, 1)

    assert first["accounts_stale"] == 1
    version, source = snapshot(es_client, names)["accounts"][ALICE]
    assert (version, source["version"], source["balance_minor"]) == (5, 5, 600)
    assert source["owner_name"] == "Alice, as the other writer left her"


def test_crash_between_bulk_and_commit_redelivers_harmlessly(
    es_client: Elasticsearch, kafka_bootstrap: str, es_url: str, names: IndexNames, topic: str
) -> None:
    events = ledger_history()
    FakePoller(kafka_bootstrap, topic).publish(events)
    config = projector_config(kafka_bootstrap, es_url, topic, names, unique("g"))

    crashed = build_projector(es_client, config)
    try:
        consume_events(crashed, len(events), commit=False)
    finally:
        crashed.close()  # no commit: as if the process died after the bulk writes
    before = snapshot(es_client, names)
    assert before["accounts"][ALICE][1]["balance_minor"] == 700
    assert committed_offsets(kafka_bootstrap, config.group_id, topic) == [None] * 3

    restarted = build_projector(es_client, config)
    try:
        # Every marker too: the commit below counts them, and the last event can arrive
        # in a step before its partition's marker does.
        totals = consume_events(restarted, len(events), markers=3)
    finally:
        restarted.close()

    assert totals["events"] == len(events), "the uncommitted batch is delivered again"
    assert totals["lines_duplicate"] == LINES and totals["lines_written"] == 0
    assert snapshot(es_client, names) == before
    offsets = committed_offsets(kafka_bootstrap, config.group_id, topic)
    assert sum(offset or 0 for offset in offsets) == len(events) + 3  # events + 1 marker each


def committed_offsets(bootstrap: str, group: str, topic: str) -> list[int | None]:
    consumer = Consumer(kafka_client_config(bootstrap, **{"group.id": group}))
    try:
        partitions = consumer.committed(
            [TopicPartition(topic, partition) for partition in range(3)], timeout=30
        )
    finally:
        consumer.close()
    return [p.offset if p.offset >= 0 else None for p in partitions]


_NON_LINE_EVENTS = {"AccountOpened", "AccountFrozen", "AccountUnfrozen", "AccountClosed"}


def test_watermark_needs_every_partition(
    es_client: Elasticsearch, kafka_bootstrap: str, es_url: str, names: IndexNames, topic: str
) -> None:
    events = ledger_history()[:3]
    poller = FakePoller(kafka_bootstrap, topic)
    for event in events:
        poller.publish_event(event, partition=0)
    poller.flush()
    projector = build_projector(
        es_client, projector_config(kafka_bootstrap, es_url, topic, names, unique("g"))
    )
    reader = WatermarkReader(es_client, names, APPLIED)
    try:
        consume_events(projector, len(events))
        # Events move no watermark, not even their own partition's: only a marker says
        # that every event up to its position has arrived before it.
        assert reader.read().positions == {}
        assert reader.read().visible_position == 0

        poller.publish_markers(3, partitions=[0])
        poller.flush()
        wait_for_watermarks(projector, reader, {0: 3})
        assert reader.read().partition_count == 3
        assert reader.read().visible_position == 0, "partitions 1 and 2 have not reached 3"

        poller.publish_markers(3, partitions=[1])
        poller.publish_markers(2, partitions=[2])
        poller.flush()
        wait_for_watermarks(projector, reader, {0: 3, 1: 3, 2: 2})
        assert reader.read().visible_position == 2

        # Markers never move a watermark back.
        poller.publish_markers(1, partitions=[0, 1, 2])
        poller.flush()
        consume_events(projector, 0, markers=3)
        assert reader.read().positions == {0: 3, 1: 3, 2: 2}

        poller.publish_markers(9, partitions=[2])
        poller.flush()
        wait_for_watermarks(projector, reader, {0: 3, 1: 3, 2: 9})
        assert reader.read().visible_position == 3
        assert reader.read().visible(3) and not reader.read().visible(4)

        # An idle step refreshes the indices and brings the searchable watermarks up to
        # the applied ones; the statement lines are then found by search.
        searchable = WatermarkReader(es_client, names, SEARCHABLE)
        wait_for_watermarks(projector, searchable, {0: 3, 1: 3, 2: 9})
        found = es_client.search(index=names.transactions, size=10)["hits"]["total"]["value"]
        assert found == sum(1 for e in events if e.event_type not in _NON_LINE_EVENTS)
    finally:
        projector.close()


def wait_for_watermarks(
    projector: Projector, reader: WatermarkReader, expected: dict[int, int]
) -> None:
    deadline = time.monotonic() + STEP_SECONDS_MAX
    while reader.read().positions != expected:
        assert time.monotonic() < deadline, f"watermarks {reader.read().positions} != {expected}"
        projector.step()


def test_events_deleted_by_retention_before_they_were_projected_stop_the_projector(
    es_client: Elasticsearch, kafka_bootstrap: str, es_url: str, names: IndexNames, topic: str
) -> None:
    events = ledger_history()
    poller = FakePoller(kafka_bootstrap, topic)
    for event in events[:2]:
        poller.publish_event(event, partition=0)
    poller.publish_markers(events[1].position)
    poller.flush()
    config = projector_config(kafka_bootstrap, es_url, topic, names, unique("g"))
    first = build_projector(es_client, config)
    try:
        consume_events(first, 2, markers=3)
    finally:
        first.close()
    # While the projector is down, two more events arrive and retention deletes the
    # first of them before anything consumed it.
    for event in (events[2], events[4]):
        poller.publish_event(event, partition=0)
    poller.flush()
    admin = AdminClient(kafka_client_config(kafka_bootstrap))
    # Partition 0 holds events[0], events[1], a marker (offsets 0-2, projected and
    # committed), then events[2] and events[4]: deleting up to offset 4 loses events[2].
    deleted_before = 4
    (future,) = admin.delete_records([TopicPartition(topic, 0, deleted_before)]).values()
    future.result(timeout=30)

    restarted = build_projector(es_client, config)
    try:
        with pytest.raises(ProjectorError, match="deleted"):
            deadline = time.monotonic() + STEP_SECONDS_MAX
            while time.monotonic() < deadline:
                restarted.step()
    finally:
        restarted.close()
    assert committed_offsets(kafka_bootstrap, config.group_id, topic)[0] == 3

    # After a rebuild the operator lets it start at the oldest offset Kafka holds.
    rebuilt = build_projector(es_client, dataclasses.replace(config, start_after_retention=True))
    try:
        consume_events(rebuilt, 1)
    finally:
        rebuilt.close()
    assert committed_offsets(kafka_bootstrap, config.group_id, topic)[0] == 5

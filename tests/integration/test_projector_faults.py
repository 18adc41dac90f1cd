"""Out-of-order delivery within and across partitions, against real Kafka, Elasticsearch
and PostgreSQL.

librdkafka can fail a message on ``message.timeout.ms`` while a later one to the same
partition is written; the relay then publishes the failed one and everything after it
again. Adding partitions moves an account's later events to another partition, which
may be consumed first. The fake poller publishes real stored events in exactly those
orders; the projector must neither claim a position it has not applied nor fold an
event across a version gap.
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
from elasticsearch import Elasticsearch

from chronos.domain.commands import Deposit, FreezeAccount, Money, OpenAccount, UnfreezeAccount
from chronos.event_store.mapper import StoredEvent
from chronos.read_model.indices import IndexNames
from chronos.read_model.rebuild import rebuild
from chronos.read_model.watermark import APPLIED, WatermarkReader
from projector.consumer import Projector
from tests.integration.readside_support import (
    FakePoller,
    build_projector,
    execute,
    project_until_visible,
    projector_config,
    stored_events,
    unique,
)
from tests.integration.test_projector import consume_events


def deposited_then_frozen(dsn: str) -> tuple[str, StoredEvent, StoredEvent, StoredEvent]:
    """Opens an account, deposits into it and freezes it; returns the account and its
    three events (versions 1, 2 and 3)."""
    account = str(uuid.uuid4())
    execute(
        dsn,
        [
            OpenAccount(
                request_id=unique("open"), account_id=account, owner_name="Ada", currency="EUR"
            ),
            Deposit(
                request_id=unique("dep"),
                account_id=account,
                amount=Money(currency="EUR", minor_units=500),
            ),
            FreezeAccount(request_id=unique("frz"), account_id=account, reason="kyc"),
        ],
    )
    opened, deposited, frozen = [e for e in stored_events(dsn) if e.stream_id == account]
    assert [e.stream_version for e in (opened, deposited, frozen)] == [1, 2, 3]
    return account, opened, deposited, frozen


def account_source(es: Elasticsearch, names: IndexNames, account: str) -> dict[str, Any]:
    return dict(es.get(index=names.accounts, id=account)["_source"])


def assert_deposited_then_frozen(es: Elasticsearch, names: IndexNames, account: str) -> None:
    """The account's document and statement equal the fold of its whole stream."""
    source = account_source(es, names, account)
    assert (source["status"], source["balance_minor"], source["version"]) == ("FROZEN", 500, 3)
    lines = es.search(index=names.transactions, query={"term": {"account_id": account}})
    assert [hit["_source"]["stream_version"] for hit in lines["hits"]["hits"]] == [2]


def publish_visible(
    poller: FakePoller,
    projector: Projector,
    es: Elasticsearch,
    names: IndexNames,
    event: StoredEvent,
) -> None:
    """Publishes ``event`` with its markers and projects it until it is visible."""
    poller.publish_event(event, partition=0)
    poller.publish_markers(event.position)
    poller.flush()
    project_until_visible(projector, es, names, event.position)


def projector_for(
    es: Elasticsearch, kafka_bootstrap: str, es_url: str, names: IndexNames, topic: str, dsn: str
) -> Projector:
    return build_projector(
        es, projector_config(kafka_bootstrap, es_url, topic, names, unique("g")), pg_dsn=dsn
    )


def test_a_redelivered_run_after_a_timeout_is_neither_overstated_nor_lost(
    ledger_dsn: str,
    es_client: Elasticsearch,
    kafka_bootstrap: str,
    es_url: str,
    names: IndexNames,
    topic: str,
) -> None:
    account, opened, deposited, frozen = deposited_then_frozen(ledger_dsn)
    poller = FakePoller(kafka_bootstrap, topic)
    projector = projector_for(es_client, kafka_bootstrap, es_url, names, topic, ledger_dsn)
    reader = WatermarkReader(es_client, names, APPLIED)
    try:
        publish_visible(poller, projector, es_client, names, opened)

        # The deposit timed out in the producer while the freeze after it was written: no
        # marker covers either yet (the relay marks only the acknowledged prefix).
        poller.publish_event(frozen, partition=0)
        poller.flush()
        consume_events(projector, 1)
        assert reader.read().positions.get(0, 0) < deposited.position, (
            "the watermark passed the deposit, which was never applied"
        )

        # The relay publishes the failed message and everything after it again.
        poller.publish_event(deposited, partition=0)
        poller.publish_event(frozen, partition=0)
        poller.publish_markers(frozen.position)
        poller.flush()
        project_until_visible(projector, es_client, names, frozen.position)
    finally:
        projector.close()

    assert_deposited_then_frozen(es_client, names, account)


def test_a_later_version_consumed_first_from_another_partition_is_healed_from_the_store(
    ledger_dsn: str,
    es_client: Elasticsearch,
    kafka_bootstrap: str,
    es_url: str,
    names: IndexNames,
    topic: str,
) -> None:
    # Partitions were added: the account's freeze went to a new partition and is
    # consumed before the deposit still waiting in the old one, and is never sent again.
    account, opened, deposited, frozen = deposited_then_frozen(ledger_dsn)
    poller = FakePoller(kafka_bootstrap, topic)
    projector = projector_for(es_client, kafka_bootstrap, es_url, names, topic, ledger_dsn)
    try:
        publish_visible(poller, projector, es_client, names, opened)

        poller.publish_event(frozen, partition=1)
        poller.flush()
        consume_events(projector, 1)
        source = account_source(es_client, names, account)
        # Either not applied yet, or applied with everything before it: never a fold
        # across the missing deposit.
        assert (source["version"], source["balance_minor"]) in ((1, 0), (3, 500))

        poller.publish_event(deposited, partition=0)
        poller.publish_markers(frozen.position)
        poller.flush()
        project_until_visible(projector, es_client, names, frozen.position)
    finally:
        projector.close()

    assert_deposited_then_frozen(es_client, names, account)


def test_the_next_event_after_a_rebuild_continues_the_rebuilt_document(
    ledger_dsn: str,
    es_client: Elasticsearch,
    kafka_bootstrap: str,
    es_url: str,
    names: IndexNames,
    topic: str,
) -> None:
    # The projector folds the next event onto the document it cached. Had it cached a
    # document folded across a gap, the next event would overwrite the rebuild's correct
    # one with that wrong state.
    account, opened, _deposited, frozen = deposited_then_frozen(ledger_dsn)
    poller = FakePoller(kafka_bootstrap, topic)
    projector = projector_for(es_client, kafka_bootstrap, es_url, names, topic, ledger_dsn)
    try:
        poller.publish_event(opened, partition=0)
        poller.publish_event(frozen, partition=0)
        poller.publish_markers(opened.position)
        poller.flush()
        consume_events(projector, 2)
        with psycopg.connect(ledger_dsn, autocommit=True) as conn:
            rebuild(conn, es_client, names)
        execute(
            ledger_dsn, [UnfreezeAccount(request_id=unique("unf"), account_id=account, reason="ok")]
        )
        (unfrozen,) = [
            e for e in stored_events(ledger_dsn, frozen.position) if e.stream_id == account
        ]
        poller.publish_event(unfrozen, partition=0)
        poller.publish_markers(unfrozen.position)
        poller.flush()
        project_until_visible(projector, es_client, names, unfrozen.position)
    finally:
        projector.close()

    source = account_source(es_client, names, account)
    assert (source["status"], source["balance_minor"], source["version"]) == ("ACTIVE", 500, 4)

"""The outbox poller against real PostgreSQL and Kafka."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer

from chronos.domain.commands import TransferFunds
from chronos.kafka_client import kafka_client_config
from chronos.outbox import contract
from outbox_poller.config import PollerConfig
from outbox_poller.relay import OutboxRelay
from tests.integration.conftest import create_database, drop_database
from tests.integration.writer_helpers import eur, new_id, open_funded, run, with_writers


@dataclass(frozen=True)
class Received:
    partition: int
    offset: int
    key: str | None
    headers: dict[str, str]


def poller_config(dsn: str, bootstrap: str, topic: str) -> PollerConfig:
    return PollerConfig(
        pg_dsn=dsn,
        kafka_bootstrap=bootstrap,
        topic=topic,
        partitions=3,
        replication_factor=1,
        batch_size_max=50,
        idle_wait_seconds_min=0.005,
        idle_wait_seconds_max=0.1,
        kafka_backoff_seconds_max=1.0,
        flush_timeout_seconds=20.0,
        retention_seconds=3600,
        prune_interval_seconds=3600,
        standby_check_seconds=0.1,
        session_idle_timeout_seconds=10.0,
        marker_interval_seconds=0.2,
        partition_refresh_seconds=0.5,
    )


def consume_all(
    bootstrap: str, topic: str, *, until: Any, timeout_seconds: float = 60
) -> list[Received]:
    """Reads the topic from the start until ``until(messages)`` holds (bounded)."""
    consumer = Consumer(
        kafka_client_config(
            bootstrap,
            **{
                "group.id": f"test-{uuid.uuid4().hex}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            },
        )
    )
    consumer.subscribe([topic])
    received: list[Received] = []
    deadline = time.monotonic() + timeout_seconds
    try:
        while time.monotonic() < deadline and not until(received):
            for message in consumer.consume(num_messages=500, timeout=0.5):
                if message.error():
                    continue
                key = message.key()
                received.append(
                    Received(
                        partition=message.partition(),
                        offset=message.offset(),
                        key=key.decode() if key else None,
                        headers=contract.headers_dict(message.headers()),
                    )
                )
    finally:
        consumer.close()
    return received


def events_of(received: list[Received]) -> list[Received]:
    return [
        m for m in received if m.headers[contract.HEADER_EVENT_TYPE] != contract.MARKER_EVENT_TYPE
    ]


def positions_of(received: list[Received]) -> set[int]:
    return {int(m.headers[contract.HEADER_POSITION]) for m in events_of(received)}


def drain(relay: OutboxRelay, conn: psycopg.Connection[Any]) -> int:
    total = 0
    for _ in range(1000):
        published = relay.publish_batch(conn)
        if not published:
            return total
        total += published
    raise AssertionError("the outbox never drained")


def unpublished_positions(conn: psycopg.Connection[Any]) -> list[int]:
    return [
        row[0]
        for row in conn.execute(
            "SELECT position FROM outbox WHERE published_at IS NULL ORDER BY position"
        ).fetchall()
    ]


def all_positions(conn: psycopg.Connection[Any]) -> set[int]:
    return {row[0] for row in conn.execute("SELECT position FROM outbox").fetchall()}


def write_some_transfers(dsn: str, transfers: int) -> None:
    async def body(writers: list[Any]) -> None:
        a = await open_funded(writers[0], 10_000)
        b = await open_funded(writers[0], 10_000)
        await asyncio.gather(
            *(
                run(
                    writers[0],
                    TransferFunds(
                        request_id=new_id(),
                        from_account_id=a if i % 2 else b,
                        to_account_id=b if i % 2 else a,
                        amount=eur(1 + i),
                    ),
                )
                for i in range(transfers)
            )
        )

    asyncio.run(with_writers(dsn, body))


@pytest.fixture
def ledger_dsn(pg_dsn: str) -> Any:
    """A fresh database per test: each test checks the whole outbox."""
    name, dsn = create_database(pg_dsn)
    try:
        yield dsn
    finally:
        drop_database(pg_dsn, name)


@pytest.fixture
def topic() -> str:
    return f"test.events.{uuid.uuid4().hex[:10]}"


def test_publishes_every_row_in_per_account_order_with_headers_and_markers(
    ledger_dsn: str, ledger_conn: psycopg.Connection[Any], kafka_bootstrap: str, topic: str
) -> None:
    write_some_transfers(ledger_dsn, 30)
    relay = OutboxRelay(poller_config(ledger_dsn, kafka_bootstrap, topic))
    relay.ensure_topic()
    expected = set(unpublished_positions(ledger_conn))
    assert drain(relay, ledger_conn) == len(expected)
    assert unpublished_positions(ledger_conn) == []

    last = max(expected)
    received = consume_all(
        kafka_bootstrap,
        topic,
        until=lambda got: (
            positions_of(got) >= expected
            and {
                m.partition
                for m in got
                if m.headers.get(contract.HEADER_POSITION) == str(last)
                and m.headers[contract.HEADER_EVENT_TYPE] == contract.MARKER_EVENT_TYPE
            }
            == {0, 1, 2}
        ),
    )
    assert positions_of(received) == expected
    versions_by_key: dict[str, list[int]] = defaultdict(list)
    for message in sorted(events_of(received), key=lambda m: (m.partition, m.offset)):
        assert message.key is not None
        assert set(message.headers) >= {
            "event_id",
            "event_type",
            "schema",
            "stream_version",
            "position",
            "recorded_at",
        }
        assert message.headers["schema"] == f"chronos.v1.{message.headers['event_type']}"
        versions_by_key[message.key].append(int(message.headers["stream_version"]))
    for key, versions in versions_by_key.items():
        assert versions == sorted(versions), f"account {key} out of order"
    marker_partitions = {
        m.partition
        for m in received
        if m.headers[contract.HEADER_EVENT_TYPE] == contract.MARKER_EVENT_TYPE
        and int(m.headers[contract.HEADER_POSITION]) == last
    }
    assert marker_partitions == {0, 1, 2}


def _insert_outbox_row(conn: psycopg.Connection[Any], position: int) -> None:
    """An outbox row as the writer would write it, without going through the writer:
    only this lets a test choose positions that commit out of order."""
    headers = {
        "event_id": str(uuid.uuid4()),
        "event_type": "AccountFrozen",
        "schema": "chronos.v1.AccountFrozen",
        "schema_version": "1",
        "stream_version": "1",
        "position": str(position),
        "recorded_at": "2026-11-22T00:00:00.000000+00:00",
        "request_id": f"late-commit-{position}",
    }
    conn.execute(
        """INSERT INTO outbox (position, event_id, topic, key, payload, headers, created_at)
           VALUES (%s, %s, 'ignored', %s, '\\x', %s, now())""",
        (position, headers["event_id"], str(uuid.uuid4()), psycopg.types.json.Jsonb(headers)),
    )


def test_a_row_that_commits_late_is_not_skipped(
    ledger_dsn: str, ledger_conn: psycopg.Connection[Any], kafka_bootstrap: str, topic: str
) -> None:
    relay = OutboxRelay(poller_config(ledger_dsn, kafka_bootstrap, topic))
    relay.ensure_topic()
    drain(relay, ledger_conn)
    # Force the interleaving that loses events in position-cursor pollers: the lower
    # position's transaction is still open while a higher position commits and is
    # published; only then does the lower one commit.
    low, high = 10_000_001, 10_000_002
    with psycopg.connect(ledger_dsn) as slow:
        _insert_outbox_row(slow, low)  # open transaction, not committed yet
        _insert_outbox_row(ledger_conn, high)  # autocommit: visible at once
        assert drain(relay, ledger_conn) == 1
        assert unpublished_positions(ledger_conn) == []
        slow.commit()
    assert unpublished_positions(ledger_conn) == [low]
    assert drain(relay, ledger_conn) == 1
    received = consume_all(
        kafka_bootstrap, topic, until=lambda got: {low, high} <= positions_of(got)
    )
    assert {low, high} <= positions_of(received)


def test_crash_between_publish_and_mark_republishes_without_loss(
    ledger_dsn: str,
    ledger_conn: psycopg.Connection[Any],
    kafka_bootstrap: str,
    topic: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    write_some_transfers(ledger_dsn, 5)
    pending = set(unpublished_positions(ledger_conn))
    assert pending

    crashing = OutboxRelay(poller_config(ledger_dsn, kafka_bootstrap, topic))
    crashing.ensure_topic()

    def crash(*_: Any) -> None:
        raise psycopg.OperationalError("simulated crash after the broker acknowledged")

    monkeypatch.setattr(crashing, "mark_published", crash)
    with pytest.raises(psycopg.OperationalError):
        crashing.publish_batch(ledger_conn)
    assert set(unpublished_positions(ledger_conn)) == pending, "nothing marked"

    restarted = OutboxRelay(poller_config(ledger_dsn, kafka_bootstrap, topic))
    restarted.ensure_topic()
    drain(restarted, ledger_conn)
    assert unpublished_positions(ledger_conn) == []
    first_batch = set(sorted(pending)[:50])

    def done(got: list[Received]) -> bool:
        counts: dict[int, int] = defaultdict(int)
        for m in events_of(got):
            counts[int(m.headers[contract.HEADER_POSITION])] += 1
        return pending <= set(counts) and all(counts[p] >= 2 for p in first_batch)

    received = consume_all(kafka_bootstrap, topic, until=done)
    counts: dict[int, int] = defaultdict(int)
    for message in events_of(received):
        counts[int(message.headers[contract.HEADER_POSITION])] += 1
    assert pending <= set(counts), "no row lost"
    assert all(counts[p] == 2 for p in first_batch), "the crashed batch was published twice"


def test_two_pollers_elect_one_leader_and_fail_over_in_order(
    ledger_dsn: str, ledger_conn: psycopg.Connection[Any], kafka_bootstrap: str, topic: str
) -> None:
    config = poller_config(ledger_dsn, kafka_bootstrap, topic)
    relays = [OutboxRelay(config), OutboxRelay(config)]
    stops = [threading.Event(), threading.Event()]
    threads = [
        threading.Thread(target=relay.run, args=(stop,), daemon=True)
        for relay, stop in zip(relays, stops, strict=True)
    ]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: sum(r.is_leader for r in relays) == 1, "a leader")
        write_some_transfers(ledger_dsn, 20)
        wait_for(lambda: not unpublished_positions(ledger_conn), "the first batch published")
        assert sum(r.is_leader for r in relays) == 1
        leader = next(i for i, r in enumerate(relays) if r.is_leader)
        stops[leader].set()
        threads[leader].join(timeout=30)
        assert not threads[leader].is_alive()
        standby = 1 - leader
        wait_for(lambda: relays[standby].is_leader, "the standby taking over")
        write_some_transfers(ledger_dsn, 20)
        wait_for(lambda: not unpublished_positions(ledger_conn), "the second batch published")
    finally:
        for stop in stops:
            stop.set()
        for thread in threads:
            thread.join(timeout=30)

    expected = all_positions(ledger_conn)
    received = consume_all(kafka_bootstrap, topic, until=lambda got: positions_of(got) >= expected)
    assert positions_of(received) == expected
    versions_by_key: dict[str, list[int]] = defaultdict(list)
    for message in sorted(events_of(received), key=lambda m: (m.partition, m.offset)):
        assert message.key is not None
        versions_by_key[message.key].append(int(message.headers["stream_version"]))
    for key, versions in versions_by_key.items():
        assert versions == sorted(versions), f"account {key} out of order across failover"


def wait_for(condition: Any, what: str, timeout_seconds: float = 60) -> None:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_unpublished_rows_carry_their_transaction_commit_time(
    ledger_dsn: str, kafka_bootstrap: str, topic: str
) -> None:
    # The publish latency starts at the writer's commit: the local stack's server tracks
    # commit times, and an unpublished row's xmin is still the writer's transaction.
    write_some_transfers(ledger_dsn, 3)
    relay = OutboxRelay(poller_config(ledger_dsn, kafka_bootstrap, topic))
    with psycopg.connect(ledger_dsn, autocommit=True) as conn:
        rows = relay.fetch_unpublished(conn)
        commits = conn.execute("SELECT count(DISTINCT xmin::text) FROM outbox").fetchone()
    assert rows
    assert commits is not None
    for row in rows:
        assert row.committed_at is not None
        recorded_at = datetime.fromisoformat(row.headers[contract.HEADER_RECORDED_AT])
        # Committed after the writer took recorded_at, and not in the future.
        assert recorded_at <= row.committed_at <= datetime.now(UTC)
    # Rows of one transaction share its commit time.
    assert len({row.committed_at for row in rows}) == commits[0]

"""Faults of the outbox poller that only real failures show, against real PostgreSQL and
Kafka: a leader that stalls, watermark markers that are lost, partitions added later."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import psycopg
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewPartitions  # type: ignore[attr-defined]

from chronos.domain.commands import OpenAccount
from chronos.kafka_client import kafka_client_config
from chronos.outbox import contract
from outbox_poller.config import PollerConfig
from outbox_poller.markers import acknowledged_position
from outbox_poller.outbox import prune_published
from outbox_poller.producer import producer_settings
from outbox_poller.relay import LEADER_LOCK_KEY, OutboxRelay
from tests.e2e.helpers import free_port, service_process
from tests.integration.readside_support import (
    KAFKA_TIMEOUT_SECONDS,
    execute,
    fresh_database,
    kafka_topic,
)
from tests.integration.test_outbox_poller import (
    Received,
    all_positions,
    consume_all,
    drain,
    poller_config,
    positions_of,
    unpublished_positions,
    wait_for,
    write_some_transfers,
)
from tests.integration.writer_helpers import new_id


def open_account(dsn: str) -> int:
    """Writes one event through the real writer; returns its position."""
    [result] = execute(
        dsn,
        [
            OpenAccount(
                request_id=new_id(),
                account_id=new_id(),
                owner_name="Test Owner",
                currency="EUR",
            )
        ],
    )
    return result.position


def is_published(dsn: str, position: int) -> bool:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT published_at IS NOT NULL FROM outbox WHERE position = %s", (position,)
        ).fetchone()
    return bool(row and row[0])


def leader_gauge(port: int) -> float | None:
    """The poller's ``chronos_outbox_leader`` gauge; None while it does not answer."""
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read()
    except OSError:
        return None
    for line in body.decode().splitlines():
        if line.startswith("chronos_outbox_leader "):
            return float(line.rpartition(" ")[2])
    return None


def leadership_lock_holders(dsn: str) -> int:
    """Sessions of this database holding the poller's advisory lock."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            """SELECT count(*) FROM pg_locks
               WHERE locktype = 'advisory' AND granted
                 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
                 AND classid = %s AND objid = %s""",
            (LEADER_LOCK_KEY >> 32, LEADER_LOCK_KEY & 0xFFFF_FFFF),
        ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
def created_topic(kafka_bootstrap: str) -> Iterator[str]:
    """A unique topic name for the poller to create; deleted afterwards."""
    name = f"test.poller-faults.{uuid.uuid4().hex[:10]}"
    try:
        yield name
    finally:
        admin = AdminClient(kafka_client_config(kafka_bootstrap))
        futures = admin.delete_topics([name], operation_timeout=30)
        with contextlib.suppress(Exception):
            futures[name].result(timeout=KAFKA_TIMEOUT_SECONDS)


def test_a_stopped_leader_loses_leadership_and_the_standby_takes_over(
    pg_dsn: str, kafka_bootstrap: str, created_topic: str, tmp_path: Path
) -> None:
    with fresh_database(pg_dsn) as dsn, contextlib.ExitStack() as stack:
        ports = [free_port(), free_port()]
        env = {
            "CHRONOS_PG_DSN": dsn,
            "CHRONOS_KAFKA_BOOTSTRAP": kafka_bootstrap,
            "CHRONOS_EVENTS_TOPIC": created_topic,
            "CHRONOS_POLLER_STANDBY_CHECK_SECONDS": "0.2",
            "CHRONOS_POLLER_KAFKA_BACKOFF_SECONDS_MAX": "0.5",
            "CHRONOS_POLLER_SESSION_IDLE_TIMEOUT_SECONDS": "2",
        }
        pollers: list[subprocess.Popen[bytes]] = [
            stack.enter_context(
                service_process(
                    "outbox_poller",
                    {**env, "CHRONOS_POLLER_METRICS_PORT": str(port)},
                    log_path=tmp_path / f"poller-{i}.log",
                )
            )
            for i, port in enumerate(ports)
        ]
        # Registered last, so it runs first: a stopped process cannot exit on SIGTERM.
        for poller in pollers:
            stack.callback(poller.send_signal, signal.SIGCONT)

        wait_for(lambda: sorted(leader_gauge(p) or 0 for p in ports) == [0, 1], "one leader")
        before = open_account(dsn)
        wait_for(lambda: is_published(dsn, before), "the leader publishing")
        leader = next(i for i, port in enumerate(ports) if leader_gauge(port) == 1)
        standby = 1 - leader

        # A stalled leader (SIGSTOP: as a frozen VM or a long GC pause) sends nothing,
        # but its connection stays open: only a bound on the session's silence ends it.
        pollers[leader].send_signal(signal.SIGSTOP)
        during = open_account(dsn)
        wait_for(lambda: is_published(dsn, during), "the standby publishing")
        assert leader_gauge(ports[standby]) == 1

        pollers[leader].send_signal(signal.SIGCONT)
        wait_for(lambda: leader_gauge(ports[leader]) == 0, "the old leader stepping down")
        after = open_account(dsn)
        wait_for(lambda: is_published(dsn, after), "the new leader publishing")
        assert pollers[leader].poll() is None, "the old leader is still running, as a standby"
        assert [leader_gauge(p) for p in ports] == [float(i == standby) for i in range(len(ports))]
        assert leadership_lock_holders(dsn) == 1

    received = consume_all(
        kafka_bootstrap,
        created_topic,
        until=lambda got: {before, during, after} <= positions_of(got),
    )
    assert {before, during, after} <= positions_of(received)


# --- watermark markers ------------------------------------------------------------------


class MarkerDroppingProducer:
    """A real producer that loses the markers chosen by ``drops(position)``, once per
    partition and position: as a poller crash within the linger, or a Kafka failure right
    after the batch's acknowledgement, would lose them."""

    def __init__(self, bootstrap: str, drops: Callable[[int], bool]) -> None:
        self._producer = Producer(producer_settings(bootstrap))
        self._drops = drops
        self.dropped: set[tuple[int, int]] = set()

    def produce(self, topic: str, *args: Any, **kwargs: Any) -> None:
        headers = contract.headers_dict(kwargs.get("headers"))
        if headers.get(contract.HEADER_EVENT_TYPE) == contract.MARKER_EVENT_TYPE:
            marker = (kwargs["partition"], int(headers[contract.HEADER_POSITION]))
            if self._drops(marker[1]) and marker not in self.dropped:
                self.dropped.add(marker)
                return
        self._producer.produce(topic, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._producer, name)


@contextmanager
def running(relay: OutboxRelay) -> Iterator[None]:
    """Runs the relay's loop (election included) on a thread."""
    stop = threading.Event()
    thread = threading.Thread(target=relay.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=KAFKA_TIMEOUT_SECONDS)
        assert not thread.is_alive()


def markers_of(received: list[Received]) -> dict[int, set[int]]:
    """The marker positions that reached each partition."""
    markers: dict[int, set[int]] = {}
    for message in received:
        if message.headers[contract.HEADER_EVENT_TYPE] == contract.MARKER_EVENT_TYPE:
            position = int(message.headers[contract.HEADER_POSITION])
            markers.setdefault(message.partition, set()).add(position)
    return markers


def marked_everywhere(position: int, partitions: int) -> Any:
    def done(received: list[Received]) -> bool:
        markers = markers_of(received)
        return all(position in markers.get(p, set()) for p in range(partitions))

    return done


def assert_markers_reach(bootstrap: str, topic: str, position: int, partitions: int) -> None:
    """Every partition receives a marker carrying ``position``, and no marker claims more."""
    received = consume_all(bootstrap, topic, until=marked_everywhere(position, partitions))
    markers = markers_of(received)
    assert {p: position in markers.get(p, set()) for p in range(partitions)} == dict.fromkeys(
        range(partitions), True
    )
    assert max(max(positions) for positions in markers.values()) == position


@contextmanager
def idle_ledger(pg_dsn: str, kafka_bootstrap: str) -> Iterator[tuple[PollerConfig, list[int]]]:
    """A fresh ledger with a few transfers written and then no more writes, and a topic;
    yields the poller settings for them and the positions not yet published."""
    with fresh_database(pg_dsn) as dsn, kafka_topic(kafka_bootstrap) as topic:
        write_some_transfers(dsn, 5)
        with psycopg.connect(dsn, autocommit=True) as conn:
            pending = unpublished_positions(conn)
        yield poller_config(dsn, kafka_bootstrap, topic), pending


def test_markers_lost_after_the_last_batch_are_sent_again(
    pg_dsn: str, kafka_bootstrap: str
) -> None:
    with idle_ledger(pg_dsn, kafka_bootstrap) as (config, pending):
        assert len(pending) <= config.batch_size_max, "one batch, then no more writes"
        last = max(pending)
        producer = MarkerDroppingProducer(kafka_bootstrap, lambda position: position == last)
        with running(OutboxRelay(config, producer=cast(Producer, producer))):
            wait_for(lambda: len(producer.dropped) == config.partitions, "the markers lost")
            assert_markers_reach(kafka_bootstrap, config.topic, last, config.partitions)


def test_a_new_leader_sends_the_markers_its_predecessor_lost(
    pg_dsn: str, kafka_bootstrap: str
) -> None:
    with idle_ledger(pg_dsn, kafka_bootstrap) as (config, pending):
        # The first leader publishes and marks everything, and dies before any of its
        # markers leaves the process.
        producer = MarkerDroppingProducer(kafka_bootstrap, lambda _position: True)
        crashed = OutboxRelay(config, producer=cast(Producer, producer))
        crashed.ensure_topic()
        with psycopg.connect(config.pg_dsn, autocommit=True) as conn:
            drain(crashed, conn)
            assert unpublished_positions(conn) == []
        with running(OutboxRelay(config)):
            assert_markers_reach(kafka_bootstrap, config.topic, max(pending), config.partitions)


def test_a_partition_added_while_idle_receives_markers(pg_dsn: str, kafka_bootstrap: str) -> None:
    with idle_ledger(pg_dsn, kafka_bootstrap) as (config, pending):
        last = max(pending)
        with running(OutboxRelay(config)):
            consume_all(
                kafka_bootstrap, config.topic, until=marked_everywhere(last, config.partitions)
            )
            admin = AdminClient(kafka_client_config(kafka_bootstrap))
            grown = config.partitions + 1
            futures = admin.create_partitions([NewPartitions(config.topic, grown)])
            futures[config.topic].result(timeout=KAFKA_TIMEOUT_SECONDS)
            assert_markers_reach(kafka_bootstrap, config.topic, last, grown)


def test_a_new_leader_claims_no_position_at_or_above_an_unpublished_row(pg_dsn: str) -> None:
    with fresh_database(pg_dsn) as dsn, psycopg.connect(dsn, autocommit=True) as conn:
        write_some_transfers(dsn, 3)
        positions = unpublished_positions(conn)
        assert acknowledged_position(conn) == 0
        middle = positions[len(positions) // 2]
        conn.execute("UPDATE outbox SET published_at = now() WHERE position <> %s", (middle,))
        assert acknowledged_position(conn) == middle - 1
        conn.execute("UPDATE outbox SET published_at = now() WHERE position = %s", (middle,))
        assert acknowledged_position(conn) == positions[-1]
        # Pruned rows were published: the ledger head still vouches for them.
        prune_published(conn, retention_seconds=0)
        assert all_positions(conn) == set()
        assert acknowledged_position(conn) == positions[-1]

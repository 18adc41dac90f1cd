"""Faults of the outbox poller that only real failures show, against real PostgreSQL and
Kafka: a leader that stalls, watermark markers that are lost, partitions added later."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from confluent_kafka.admin import AdminClient

from chronos.domain.commands import OpenAccount
from outbox_poller.relay import LEADER_LOCK_KEY
from tests.e2e.helpers import free_port, service_process
from tests.integration.readside_support import KAFKA_TIMEOUT_SECONDS, execute, fresh_database
from tests.integration.test_outbox_poller import consume_all, positions_of, wait_for
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
        admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
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

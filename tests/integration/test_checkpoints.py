"""Signed checkpoints end to end on real PostgreSQL and Kafka: the poller's leader
publishes them, `chronos verify` reads them back from Kafka, trusts only the well signed
ones, and catches with them a chain rewritten consistently."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from prometheus_client import REGISTRY

from chronos.audit.checkpoint import Checkpoint, decode_and_check, encode_signed, key_id
from chronos.audit.kafka_checkpoints import read_checkpoint_messages
from chronos.audit.settings import checkpoints_topic
from chronos.cli import main
from chronos.domain.commands import TransferFunds
from chronos.event_store.writer import LedgerWriter
from chronos.kafka_client import kafka_client_config
from chronos.security.tokens import new_signing_key
from outbox_poller.config import CheckpointPolicy
from outbox_poller.relay import OutboxRelay
from tests.integration.chain_support import (
    rewrite_chain_from,
    trigger_disabled,
    write_checkpoint_keys,
)
from tests.integration.test_outbox_poller import poller_config
from tests.integration.writer_helpers import eur, new_id, open_funded, run, with_writers

INTERVAL_EVENTS = 15


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    """A checkpoint signing key file and the JWKS that trusts it."""
    return write_checkpoint_keys(tmp_path)


@pytest.fixture
def checkpoint_topic(kafka_bootstrap: str, topic: str) -> Iterator[str]:
    name = checkpoints_topic(topic)
    yield name
    admin = AdminClient(kafka_client_config(kafka_bootstrap))
    admin.delete_topics([name])[name].result(timeout=30)


def _write_transfers(dsn: str, count: int) -> None:
    async def body(writers: list[LedgerWriter]) -> None:
        a = await open_funded(writers[0], 1_000_000)
        b = await open_funded(writers[0], 1_000_000)
        for i in range(count):
            await run(
                writers[0],
                TransferFunds(
                    request_id=new_id(), from_account_id=a, to_account_id=b, amount=eur(i + 1)
                ),
            )

    asyncio.run(with_writers(dsn, body))


def _head(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT position FROM ledger_head").fetchone()
    assert row is not None
    return int(row[0])


def _checkpoint_positions(bootstrap: str, topic: str) -> list[int]:
    return [
        checked.checkpoint.position
        for checked in (decode_and_check(m, {}) for m in read_checkpoint_messages(bootstrap, topic))
        if checked.checkpoint is not None
    ]


def test_the_leader_signs_checkpoints_and_verify_checks_the_chain_against_them(
    ledger_dsn: str,
    ledger_conn: psycopg.Connection[Any],
    kafka_bootstrap: str,
    topic: str,
    checkpoint_topic: str,
    keys: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    key_file, jwks_file = keys
    config = poller_config(ledger_dsn, kafka_bootstrap, topic)
    policy = CheckpointPolicy(
        topic=checkpoint_topic,
        interval_events=INTERVAL_EVENTS,
        interval_seconds=0.3,
        signing_key_file=key_file,
    )
    relay = OutboxRelay(replace(config, checkpoints=policy))
    stop = threading.Event()
    poller = threading.Thread(target=relay.run, args=(stop,), daemon=True)
    poller.start()
    try:
        for _ in range(3):
            _write_transfers(ledger_dsn, 10)
        head = _head(ledger_conn)
        deadline = time.monotonic() + 60
        while head not in _checkpoint_positions(kafka_bootstrap, checkpoint_topic):
            assert time.monotonic() < deadline, "no checkpoint reached the head"
            time.sleep(0.3)
        assert REGISTRY.get_sample_value("chronos_checkpoint_lag_events") == 0
        assert REGISTRY.get_sample_value("chronos_checkpoint_age_seconds") is not None
    finally:
        stop.set()
        poller.join(timeout=30)
    positions = _checkpoint_positions(kafka_bootstrap, checkpoint_topic)
    assert len(set(positions)) >= 2 and max(positions) == head
    assert positions == sorted(positions), "one leader signs in position order"

    monkeypatch.setenv("CHRONOS_CHECKPOINT_JWKS_FILE", str(jwks_file))
    monkeypatch.setenv("CHRONOS_EVENTS_TOPIC", topic)
    monkeypatch.setenv("CHRONOS_KAFKA_BOOTSTRAP", kafka_bootstrap)
    verify = ["verify", "--dsn", ledger_dsn, "--no-progress"]
    assert main(verify) == 0
    # Resuming from a checkpoint reads only the events after it.
    assert main([*verify, "--from-position", str(positions[0])]) == 0
    assert main([*verify, "--from-position", str(positions[0] + 1)]) == 2

    # A checkpoint someone forged onto the topic is reported, not trusted: exit 1.
    forger = new_signing_key()
    forged = Checkpoint(
        position=positions[0],
        chain_hash=b"\x01" * 32,
        recorded_at="2026-01-01T00:00:00+00:00",
        key_id=key_id(forger.public_key()),
    )
    producer = Producer(kafka_client_config(kafka_bootstrap))
    producer.produce(checkpoint_topic, value=encode_signed(forged, forger))
    assert producer.flush(30) == 0
    capsys.readouterr()
    assert main(verify) == 1
    output = capsys.readouterr().out
    assert f"untrusted checkpoint at position {positions[0]}: signed with unknown key" in output
    assert "chain intact" in output

    # The chain rewritten consistently from before the second checkpoint: the stored
    # hashes all agree again, the signed checkpoints do not.
    first, second = sorted(set(positions))[:2]
    with trigger_disabled(ledger_conn):
        forged_at = ledger_conn.execute(
            "SELECT min(position) FROM events WHERE position > %s "
            "AND event_type = 'FundsTransferred'",
            (first,),
        ).fetchone()
        assert forged_at is not None and forged_at[0] <= second
        rewrite_chain_from(ledger_conn, forged_at[0])
    monkeypatch.delenv("CHRONOS_CHECKPOINT_JWKS_FILE")
    assert main(verify) == 0, "without the checkpoints the rewrite goes unseen"
    monkeypatch.setenv("CHRONOS_CHECKPOINT_JWKS_FILE", str(jwks_file))
    capsys.readouterr()
    assert main(verify) == 1
    output = capsys.readouterr().out
    assert f"chain BROKEN at position {second}: a signed checkpoint disagrees" in output
    assert f"last agreeing checkpoint is at {first}" in output

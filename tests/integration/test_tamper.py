"""Tampering with the event store is caught by `chronos verify` (real PostgreSQL).

Each test writes a ledger through the real writer, then edits the events as the tables'
owner would, with the immutability trigger disabled, and checks that verify names the
first position where the chain breaks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from chronos.audit.checkpoint import Checkpoint, decode_and_check, encode_signed, key_id
from chronos.audit.verify import BreakKind, trusted_checkpoints, verify_chain
from chronos.cli import main
from chronos.domain.commands import TransferFunds
from chronos.event_store.writer import LedgerWriter
from chronos.security.tokens import new_signing_key
from tests.integration.chain_support import raise_amount, rewrite_chain_from, trigger_disabled
from tests.integration.conftest import create_database, drop_database
from tests.integration.writer_helpers import eur, new_id, open_funded, run, with_writers


@pytest.fixture
def ledger(pg_dsn: str) -> Iterator[tuple[str, psycopg.Connection[Any]]]:
    """A fresh ledger with accounts and transfers (about 50 events), and an owner's
    connection to it."""
    name, dsn = create_database(pg_dsn)

    async def body(writers: list[LedgerWriter]) -> None:
        accounts = [await open_funded(writers[0], 10_000) for _ in range(4)]
        for i in range(20):
            await run(
                writers[0],
                TransferFunds(
                    request_id=new_id(),
                    from_account_id=accounts[i % 4],
                    to_account_id=accounts[(i + 1) % 4],
                    amount=eur(100 + i),
                ),
            )

    try:
        asyncio.run(with_writers(dsn, body))
        with psycopg.connect(dsn, autocommit=True) as conn:
            assert verify_chain(conn).intact
            yield dsn, conn
    finally:
        drop_database(pg_dsn, name)


def _head(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT position FROM ledger_head").fetchone()
    assert row is not None
    return int(row[0])


def _line_position(conn: psycopg.Connection[Any], after: int) -> int:
    row = conn.execute(
        "SELECT min(position) FROM events WHERE event_type = 'FundsTransferred' AND position > %s",
        (after,),
    ).fetchone()
    assert row is not None and row[0] is not None
    return int(row[0])


def test_a_changed_amount_is_named_by_its_position(
    ledger: tuple[str, psycopg.Connection[Any]],
) -> None:
    dsn, conn = ledger
    position = _line_position(conn, _head(conn) // 2)
    with trigger_disabled(conn):
        raise_amount(conn, position)
    result = verify_chain(conn)
    assert result.broken is not None
    assert (result.broken.position, result.broken.kind) == (position, BreakKind.HASH_MISMATCH)
    assert "stored chain hash" in result.broken.detail and "recomputed" in result.broken.detail
    assert result.events_checked == position - 1
    assert main(["verify", "--dsn", dsn, "--no-progress"]) == 1


@pytest.mark.parametrize("where", ["middle", "last"])
def test_a_deleted_event_is_named_as_missing(
    ledger: tuple[str, psycopg.Connection[Any]], where: str
) -> None:
    _, conn = ledger
    head = _head(conn)
    position = head // 2 if where == "middle" else head
    with trigger_disabled(conn):
        conn.execute("DELETE FROM events WHERE position = %s", (position,))
    result = verify_chain(conn)
    assert result.broken is not None
    assert (result.broken.position, result.broken.kind) == (position, BreakKind.MISSING_POSITION)


def test_two_swapped_events_are_named(ledger: tuple[str, psycopg.Connection[Any]]) -> None:
    _, conn = ledger
    head = _head(conn)
    first, second = head // 3, 2 * head // 3
    with trigger_disabled(conn):
        # Swap their positions: each event now claims the other's place in the log.
        conn.execute(
            "UPDATE events SET position = -position WHERE position IN (%s, %s)", (first, second)
        )
        conn.execute(
            "UPDATE events SET position = CASE -position WHEN %s THEN %s ELSE %s END "
            "WHERE position < 0",
            (first, second, first),
        )
    result = verify_chain(conn)
    assert result.broken is not None
    assert (result.broken.position, result.broken.kind) == (first, BreakKind.HASH_MISMATCH)


def test_swapped_payloads_are_named(ledger: tuple[str, psycopg.Connection[Any]]) -> None:
    _, conn = ledger
    first = _line_position(conn, 10)
    second = _line_position(conn, first + 3)
    with trigger_disabled(conn):
        conn.execute(
            """UPDATE events AS e SET payload = o.payload
               FROM events AS o
               WHERE (e.position, o.position) IN ((%s, %s), (%s, %s))""",
            (first, second, second, first),
        )
    result = verify_chain(conn)
    assert result.broken is not None
    assert (result.broken.position, result.broken.kind) == (first, BreakKind.HASH_MISMATCH)


def _signed_checkpoints(
    conn: psycopg.Connection[Any], positions: list[int]
) -> tuple[list[bytes], dict[str, Ed25519PublicKey]]:
    """Checkpoints of the chain as it is now, signed with a new key, and that key."""
    key = new_signing_key()
    messages = []
    for position in positions:
        row = conn.execute(
            "SELECT chain_hash, recorded_at FROM events WHERE position = %s", (position,)
        ).fetchone()
        assert row is not None
        checkpoint = Checkpoint(
            position=position,
            chain_hash=row[0],
            recorded_at=row[1].isoformat(),
            key_id=key_id(key.public_key()),
        )
        messages.append(encode_signed(checkpoint, key))
    return messages, {key_id(key.public_key()): key.public_key()}


def test_a_consistent_rewrite_is_caught_only_by_the_signed_checkpoints(
    ledger: tuple[str, psycopg.Connection[Any]],
) -> None:
    _, conn = ledger
    head = _head(conn)
    checkpoint_positions = [head // 4, head // 2, 3 * head // 4, head]
    messages, public_keys = _signed_checkpoints(conn, checkpoint_positions)
    forged_at = _line_position(conn, head // 4 + 1)
    assert forged_at < head // 2
    with trigger_disabled(conn):
        rewrite_chain_from(conn, forged_at)
    assert verify_chain(conn).intact, "the stored chain alone is consistent again"

    trusted, problems = trusted_checkpoints(decode_and_check(m, public_keys) for m in messages)
    assert problems == []
    result = verify_chain(conn, checkpoints=trusted)
    assert result.broken is not None
    assert result.broken.kind is BreakKind.CHECKPOINT_MISMATCH
    assert result.broken.position == head // 2, "the first checkpoint that disagrees"
    assert f"last agreeing checkpoint is at {head // 4}" in result.broken.detail
    assert result.checkpoints_matched == 1


def test_a_checkpoint_with_a_bad_signature_is_reported_and_not_trusted(
    ledger: tuple[str, psycopg.Connection[Any]],
) -> None:
    _, conn = ledger
    head = _head(conn)
    (good, forged), public_keys = _signed_checkpoints(conn, [head // 2, head])
    # Claim another hash at the head, keeping the signature made for the true one.
    forged = forged.replace(forged[forged.index(b'"chain_hash":"') + 14 :][:64], b"ab" * 32)
    checked = [decode_and_check(m, public_keys) for m in (good, forged)]
    assert [c.trusted for c in checked] == [True, False]
    assert checked[1].problem == "bad signature"
    trusted, problems = trusted_checkpoints(checked)
    assert list(trusted) == [head // 2]
    assert problems == [f"checkpoint at position {head}: bad signature, not trusted"]
    result = verify_chain(conn, checkpoints=trusted)
    assert result.intact and result.checkpoints_matched == 1


def test_an_event_moved_back_in_time_is_named_out_of_order(
    ledger: tuple[str, psycopg.Connection[Any]],
) -> None:
    _, conn = ledger
    position = _head(conn) // 2
    with trigger_disabled(conn):
        conn.execute(
            "UPDATE events SET recorded_at = recorded_at - interval '1 day' WHERE position = %s",
            (position,),
        )
    result = verify_chain(conn)
    assert result.broken is not None
    assert (result.broken.position, result.broken.kind) == (position, BreakKind.OUT_OF_ORDER)

"""Holds against a real PostgreSQL: the writer's hold state, and the expiry job run by two
concurrent runners (as two command servers would), each hold expiring exactly once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from chronos.domain.commands import CreatePendingTransfer, PostPendingTransfer, VoidPendingTransfer
from chronos.domain.errors import Reason, Rejection
from chronos.event_store.hold_expiry import expire_due_holds
from chronos.event_store.writer import LedgerWriter, WriterSettings, writer_pool
from tests.integration.writer_helpers import eur, new_id, open_funded, run, with_writers

HOLDS = 40


def pending_sums(conn: psycopg.Connection[Any], account_id: str) -> tuple[int, int, int]:
    row = conn.execute(
        "SELECT balance_minor, pending_debits_minor, pending_credits_minor FROM accounts"
        " WHERE account_id = %s",
        (account_id,),
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


async def place(writer: LedgerWriter, source: str, target: str, timeout_seconds: int) -> str:
    result = await run(
        writer,
        CreatePendingTransfer(
            request_id=new_id(),
            from_account_id=source,
            to_account_id=target,
            amount=eur(10),
            timeout_seconds=timeout_seconds,
        ),
    )
    assert result.pending_id
    return result.pending_id


def test_two_runners_expire_each_hold_exactly_once(
    ledger_dsn: str, ledger_conn: psycopg.Connection[Any]
) -> None:
    async def body(writers: list[LedgerWriter]) -> None:
        first, second = writers
        source = await open_funded(first, 10_000)
        target = await open_funded(first, 0)
        due = [await place(first, source, target, 1) for _ in range(HOLDS)]
        # One hold is posted and one voided before they are due: neither may expire.
        posted, voided = (
            await place(first, source, target, 1),
            await place(first, source, target, 1),
        )
        await run(
            first,
            PostPendingTransfer(
                request_id=new_id(), pending_id=posted, from_account_id=source, to_account_id=target
            ),
        )
        await run(
            first,
            VoidPendingTransfer(
                request_id=new_id(), pending_id=voided, from_account_id=source, to_account_id=target
            ),
        )
        await place(first, source, target, 0)  # never expires
        assert pending_sums(ledger_conn, source) == (9_990, 10 * (HOLDS + 1), 0)
        await asyncio.sleep(1.2)
        # The second runner claims with no lease, so both runners may take the same
        # holds: the hold state and the per-hold request_id must still let one through.
        claims = [writer_pool(ledger_dsn, min_size=1, max_size=1) for _ in writers]
        for pool in claims:
            await pool.open(wait=True)
        try:
            runs = await asyncio.gather(
                expire_due_holds(claims[0], first.execute_in_order, batch_size_max=7),
                expire_due_holds(
                    claims[1], second.execute_in_order, batch_size_max=5, lease_seconds=0
                ),
            )
            assert sum(r.expired for r in runs) == HOLDS
            again = await expire_due_holds(claims[0], first.execute_in_order)
            assert again.expired == 0
        finally:
            for pool in claims:
                await pool.close()
        # A post of an expired hold is refused, whatever its request_id.
        with pytest.raises(Rejection) as refused:
            await run(
                first,
                PostPendingTransfer(
                    request_id=new_id(),
                    pending_id=due[0],
                    from_account_id=source,
                    to_account_id=target,
                ),
            )
        assert refused.value.reason is Reason.PENDING_TRANSFER_NOT_PENDING
        return None

    asyncio.run(with_writers(ledger_dsn, body, writers=2))
    expired = ledger_conn.execute(
        "SELECT stream_id::text, count(*) FROM events WHERE event_type = 'PendingTransferExpired'"
        " GROUP BY stream_id"
    ).fetchall()
    # Each expired hold wrote one event on each of its two accounts.
    assert sorted(int(count) for _, count in expired) == [HOLDS, HOLDS]
    states = dict(
        ledger_conn.execute(
            "SELECT state, count(*) FROM pending_transfers GROUP BY state"
        ).fetchall()
    )
    assert states == {"EXPIRED": HOLDS, "POSTED": 1, "VOIDED": 1, "PENDING": 1}
    per_hold = ledger_conn.execute(
        """SELECT count(*) FROM (
               SELECT payload FROM events WHERE event_type = 'PendingTransferExpired'
               GROUP BY payload HAVING count(*) > 1) AS twice"""
    ).fetchone()
    assert per_hold is not None and per_hold[0] == 0
    source_row = ledger_conn.execute(
        "SELECT from_account_id::text FROM pending_transfers WHERE state = 'PENDING'"
    ).fetchone()
    assert source_row is not None
    # Only the hold without a timeout is still reserved.
    assert pending_sums(ledger_conn, source_row[0]) == (9_990, 10, 0)


def test_an_injected_clock_expires_a_hold_without_waiting(
    ledger_dsn: str, ledger_conn: psycopg.Connection[Any]
) -> None:
    """The job and a writer on a clock two hours ahead expire a one-hour hold now; on
    the database's clock the same job leaves it, and a hold with no timeout stays."""

    async def body(writers: list[LedgerWriter]) -> str:
        (writer,) = writers
        source = await open_funded(writer, 1_000)
        target = await open_funded(writer, 0)
        hourly = await place(writer, source, target, 3600)
        await place(writer, source, target, 0)
        pool = writer_pool(ledger_dsn, min_size=1, max_size=2)
        await pool.open(wait=True)
        ahead = datetime.now(UTC) + timedelta(hours=2)
        shifted = LedgerWriter(pool, WriterSettings(), clock=lambda: ahead)
        shifted.start()
        try:
            assert (await expire_due_holds(pool, writer.execute_in_order)).expired == 0
            run_ahead = await expire_due_holds(pool, shifted.execute_in_order, now=ahead)
            assert run_ahead.expired == 1
        finally:
            await shifted.close()
            await pool.close()
        assert pending_sums(ledger_conn, source) == (1_000, 10, 0)
        # The hold is over for every writer, whatever its clock.
        with pytest.raises(Rejection) as refused:
            await run(
                writer,
                VoidPendingTransfer(
                    request_id=new_id(),
                    pending_id=hourly,
                    from_account_id=source,
                    to_account_id=target,
                ),
            )
        assert refused.value.reason is Reason.PENDING_TRANSFER_NOT_PENDING
        return hourly

    hourly = asyncio.run(with_writers(ledger_dsn, body))
    state = ledger_conn.execute(
        "SELECT state FROM pending_transfers WHERE pending_id = %s", (hourly,)
    ).fetchone()
    assert state == ("EXPIRED",)

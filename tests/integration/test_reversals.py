"""ReverseEntry against the real event store (PostgreSQL): at most one reversal per
entry under concurrency, the entry index, and nothing written on refusal."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

from chronos.domain.commands import ReverseEntry, TransferFunds, Withdraw
from chronos.domain.errors import Reason, Rejection
from chronos.event_store.results import CommandResult
from chronos.event_store.writer import LedgerWriter
from tests.integration.writer_helpers import eur, new_id, open_funded, run, with_writers


def _counts(conn: psycopg.Connection[Any]) -> tuple[int, ...]:
    row = conn.execute(
        """SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM outbox),
                  (SELECT count(*) FROM entry_lines), (SELECT count(*) FROM entry_reversals),
                  (SELECT count(*) FROM idempotency)"""
    ).fetchone()
    assert row is not None
    return tuple(int(value) for value in row)


async def transferred(
    writer: LedgerWriter, funds_minor: int, amount_minor: int
) -> tuple[str, CommandResult]:
    """Opens a funded account and an empty one, and transfers between them; returns the
    receiving account and the transfer's result."""
    source = await open_funded(writer, funds_minor)
    target = await open_funded(writer, 0)
    transfer = TransferFunds(
        request_id=new_id(), from_account_id=source, to_account_id=target, amount=eur(amount_minor)
    )
    return target, await run(writer, transfer)


def test_concurrent_reversals_of_one_entry_accept_exactly_one(
    ledger_dsn: str, ledger_conn: psycopg.Connection[Any]
) -> None:
    async def body(writers: list[LedgerWriter]) -> tuple[str, list[Any]]:
        _, transfer = await transferred(writers[0], 10_000, 700)
        # Ten different requests through two independent writers ("server processes").
        attempts = [
            run(writers[i % 2], ReverseEntry(request_id=new_id(), entry_id=transfer.entry_id))
            for i in range(10)
        ]
        return transfer.entry_id, list(await asyncio.gather(*attempts, return_exceptions=True))

    entry_id, outcomes = asyncio.run(with_writers(ledger_dsn, body, writers=2))
    accepted = [o for o in outcomes if isinstance(o, CommandResult)]
    refused = [o for o in outcomes if isinstance(o, Rejection)]
    assert len(accepted) == 1 and len(refused) == 9
    assert {r.reason for r in refused} == {Reason.ENTRY_ALREADY_REVERSED}
    rows = ledger_conn.execute(
        "SELECT reversal_entry_id::text FROM entry_reversals WHERE entry_id = %s", (entry_id,)
    ).fetchall()
    assert rows == [(accepted[0].entry_id,)]
    balances = {b.account_id: b.balance_minor for b in accepted[0].balances}
    assert sorted(balances.values()) == [0, 10_000]


def test_every_line_is_indexed_and_a_refused_reversal_writes_nothing(
    ledger_dsn: str, ledger_conn: psycopg.Connection[Any]
) -> None:
    async def body(writers: list[LedgerWriter]) -> tuple[CommandResult, tuple[int, ...]]:
        target, transfer = await transferred(writers[0], 1_000, 400)
        await run(writers[0], Withdraw(request_id=new_id(), account_id=target, amount=eur(400)))
        before = await asyncio.to_thread(_counts, ledger_conn)
        for command, reason in (
            (ReverseEntry(request_id=new_id(), entry_id=new_id()), Reason.ENTRY_NOT_FOUND),
            (
                ReverseEntry(request_id=new_id(), entry_id=transfer.entry_id),
                Reason.INSUFFICIENT_FUNDS,
            ),
        ):
            with pytest.raises(Rejection) as caught:
                await run(writers[0], command)
            assert caught.value.reason is reason
        return transfer, before

    transfer, before = asyncio.run(with_writers(ledger_dsn, body))
    assert _counts(ledger_conn) == before
    lines = ledger_conn.execute(
        "SELECT line_index FROM entry_lines WHERE entry_id = %s ORDER BY line_index",
        (transfer.entry_id,),
    ).fetchall()
    assert lines == [(0,), (1,)]

"""The writer when PostgreSQL misbehaves: a stalled lock holder, a lost commit answer, a
failed chunk of an ordered batch. Real server; only the interleaving is forced."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

from chronos.domain.commands import TransferFunds
from chronos.domain.errors import Reason, Rejection
from chronos.event_store.sessions import SessionBounds
from chronos.event_store.writer import LedgerWriter, writer_pool
from tests.integration.writer_helpers import eur, new_id, open_funded, prepared, with_writers

# Only to turn a hang into a failure; no test expects to come near it.
LIVENESS_SECONDS = 20


def transfer(from_id: str, to_id: str, minor: int, request_id: str = "") -> TransferFunds:
    return TransferFunds(
        request_id=request_id or new_id(),
        from_account_id=from_id,
        to_account_id=to_id,
        amount=eur(minor),
    )


async def events_of(conn: psycopg.AsyncConnection[Any], request_id: str) -> int:
    cursor = await conn.execute(
        "SELECT count(*) FROM events WHERE metadata->>'request_id' = %s", (request_id,)
    )
    row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


def test_a_held_account_lock_refuses_only_the_commands_on_that_account(ledger_dsn: str) -> None:
    async def body(writers: list[LedgerWriter]) -> None:
        (writer,) = writers
        a, b, c, d = [await open_funded(writer, 100) for _ in range(4)]
        blocked, free = transfer(a, b, 10), transfer(c, d, 10)
        # A stalled peer: a session holding the advisory lock the writer takes for A.
        async with await psycopg.AsyncConnection.connect(ledger_dsn, autocommit=True) as holder:
            await holder.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (a,))
            # Queued together, so one lane takes both into one batch.
            blocked_task = asyncio.create_task(writer.execute(*prepared(blocked)))
            free_task = asyncio.create_task(writer.execute(*prepared(free)))
            result = await asyncio.wait_for(free_task, LIVENESS_SECONDS)
            assert not result.replayed and result.position > 0
            with pytest.raises(Rejection) as caught:
                await asyncio.wait_for(blocked_task, LIVENESS_SECONDS)
            assert caught.value.reason is Reason.CONCURRENCY_CONFLICT
            assert "same request_id" in caught.value.message
            assert await events_of(holder, blocked.request_id) == 0
            await holder.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (a,))
            retried = await asyncio.wait_for(writer.execute(*prepared(blocked)), LIVENESS_SECONDS)
            assert not retried.replayed
            assert await events_of(holder, blocked.request_id) == 2

    asyncio.run(with_writers(ledger_dsn, body, lanes=1))


async def until_waiting_on_an_advisory_lock(conn: psycopg.AsyncConnection[Any]) -> None:
    while True:
        cursor = await conn.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE wait_event_type = 'Lock' AND wait_event = 'advisory' AND datname = "
            "current_database()"
        )
        row = await cursor.fetchone()
        if row is not None and row[0]:
            return
        await asyncio.sleep(0.01)


def test_a_command_queued_behind_a_blocked_batch_is_not_held_up(ledger_dsn: str) -> None:
    async def body(writers: list[LedgerWriter]) -> None:
        (writer,) = writers
        a, b, c, d = [await open_funded(writer, 100) for _ in range(4)]
        async with await psycopg.AsyncConnection.connect(ledger_dsn, autocommit=True) as holder:
            await holder.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (a,))
            blocked_task = asyncio.create_task(writer.execute(*prepared(transfer(a, b, 10))))
            await asyncio.wait_for(until_waiting_on_an_advisory_lock(holder), LIVENESS_SECONDS)
            # The lane is inside the blocked transaction: this one waits in the queue.
            free = await asyncio.wait_for(
                writer.execute(*prepared(transfer(c, d, 10))), LIVENESS_SECONDS
            )
            assert free.position > 0
            with pytest.raises(Rejection) as caught:
                await asyncio.wait_for(blocked_task, LIVENESS_SECONDS)
            assert caught.value.reason is Reason.CONCURRENCY_CONFLICT
            assert caught.value.metadata == {"account_id": a}

    asyncio.run(with_writers(ledger_dsn, body, lanes=1))


def test_writer_sessions_carry_the_bounds_and_the_planner_options(ledger_dsn: str) -> None:
    async def body() -> dict[str, str]:
        pool = writer_pool(
            ledger_dsn, min_size=1, max_size=1, bounds=SessionBounds(lock_timeout_seconds=1.5)
        )
        async with pool, pool.connection() as conn:
            names = ("lock_timeout", "statement_timeout", "enable_seqscan", "tcp_user_timeout")
            cursor = await conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name = ANY(%s)", (list(names),)
            )
            return {str(name): str(value) for name, value in await cursor.fetchall()}

    settings = asyncio.run(body())
    defaults = SessionBounds()
    assert settings["lock_timeout"] == "1500"
    assert settings["statement_timeout"] == str(round(defaults.statement_timeout_seconds * 1000))
    assert settings["tcp_user_timeout"] == str(round(defaults.tcp_user_timeout_seconds * 1000))
    assert settings["enable_seqscan"] == "off"

"""The writer when PostgreSQL misbehaves: a stalled lock holder, a lost commit answer, a
failed chunk of an ordered batch. Real server; only the interleaving is forced."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, cast

import psycopg
import pytest
from google.rpc import code_pb2

from chronos.domain.commands import Command, Deposit, TransferFunds, Withdraw
from chronos.domain.errors import Reason, Rejection
from chronos.event_store.results import CommandResult
from chronos.event_store.sessions import SessionBounds
from chronos.event_store.writer import (
    LedgerWriter,
    StoreUnavailable,
    WriterSettings,
    writer_pool,
)
from command_server.servicer import CommandServicer
from tests.e2e.helpers import details_of
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


class CommitRoundTripFault:
    """A writer pool whose next transaction loses its connection.

    ``at="BEGIN"``: the writer's backend is terminated before the first round trip.
    ``at="COMMIT"``: it is terminated just before the COMMIT is sent, so the server rolls
    the transaction back. ``at="answer"``: the final round trip completes (the server
    commits), then the backend is terminated and the answer reported lost, as when the
    connection dies on the way back.
    """

    def __init__(self, pool: Any, dsn: str, *, at: str) -> None:
        self._pool = pool
        self._dsn = dsn
        self.at = at
        self.armed = True

    @contextlib.asynccontextmanager
    async def connection(self, timeout: float | None = None) -> AsyncIterator[Any]:
        async with self._pool.connection(timeout=timeout) as conn:
            if self.armed:
                self.armed = False
                yield _FaultyConnection(conn, self)
            else:
                yield conn

    async def terminate(self, conn: psycopg.AsyncConnection[Any]) -> None:
        pid = conn.info.backend_pid
        async with await psycopg.AsyncConnection.connect(self._dsn, autocommit=True) as killer:
            await killer.execute("SELECT pg_terminate_backend(%s)", (pid,))
            while await (
                await killer.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,))
            ).fetchone():
                await asyncio.sleep(0.01)


class _FaultyConnection:
    def __init__(self, conn: psycopg.AsyncConnection[Any], fault: CommitRoundTripFault) -> None:
        self._conn = conn
        self._fault = fault

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    async def execute(self, query: Any, params: Any = None) -> Any:
        if query == self._fault.at:
            await self._fault.terminate(self._conn)
        return await self._conn.execute(query, params)

    @contextlib.asynccontextmanager
    async def pipeline(self) -> AsyncIterator[Any]:
        async with self._conn.pipeline() as pipeline:
            yield pipeline
        if self._fault.at == "answer":
            await self._fault.terminate(self._conn)
            raise psycopg.OperationalError("server closed the connection unexpectedly")


@pytest.mark.parametrize(
    ("at", "unknown", "committed"),
    [("BEGIN", False, False), ("COMMIT", True, False), ("answer", True, True)],
)
def test_a_connection_lost_in_the_commit_round_trip_is_an_unknown_outcome(
    ledger_dsn: str, at: str, unknown: bool, committed: bool
) -> None:
    async def body(writers: list[LedgerWriter]) -> None:
        (writer,) = writers
        a, b = await open_funded(writer, 100), await open_funded(writer, 0)
        command = transfer(a, b, 10)
        pool = writer_pool(ledger_dsn, min_size=1, max_size=2)
        async with pool:
            fault = CommitRoundTripFault(pool, ledger_dsn, at=at)
            faulty = LedgerWriter(cast(Any, fault), WriterSettings(lanes=1))
            faulty.start()
            try:
                with pytest.raises(StoreUnavailable) as caught:
                    await asyncio.wait_for(faulty.execute(*prepared(command)), LIVENESS_SECONDS)
            finally:
                await faulty.close()
        status = CommandServicer._failure(caught.value, command.request_id)
        assert status.code == code_pb2.UNAVAILABLE
        assert ("outcome is unknown" in status.message) is unknown
        assert ("nothing was recorded" in status.message) is not unknown
        assert "same request_id" in status.message and "new request_id" not in status.message
        reason = "COMMIT_OUTCOME_UNKNOWN" if unknown else "DATABASE_UNAVAILABLE"
        assert details_of(status)[0] == reason

        retried = await asyncio.wait_for(writer.execute(*prepared(command)), LIVENESS_SECONDS)
        assert retried.replayed is committed
        async with await psycopg.AsyncConnection.connect(ledger_dsn) as conn:
            assert await events_of(conn, command.request_id) == 2

    asyncio.run(with_writers(ledger_dsn, body, lanes=1))


def test_an_ordered_batch_stops_at_the_first_chunk_that_fails(ledger_dsn: str) -> None:
    async def body(writers: list[LedgerWriter]) -> None:
        (writer,) = writers
        a, b = await open_funded(writer, 100), await open_funded(writer, 100)
        commands: list[Command] = [
            Deposit(request_id=new_id(), account_id=a, amount=eur(10)),
            Deposit(request_id=new_id(), account_id=b, amount=eur(10)),
            transfer(a, b, 5),
            Withdraw(request_id=new_id(), account_id=b, amount=eur(1)),
            Deposit(request_id=new_id(), account_id=a, amount=eur(1)),
        ]
        items = [prepared(command) for command in commands]
        pool = writer_pool(ledger_dsn, min_size=1, max_size=2)
        async with pool:
            fault = CommitRoundTripFault(pool, ledger_dsn, at="BEGIN")
            faulty = LedgerWriter(cast(Any, fault), WriterSettings(lanes=1, batch_size_max=2))
            faulty.start()
            try:
                outcomes = await asyncio.wait_for(faulty.execute_in_order(items), LIVENESS_SECONDS)
            finally:
                await faulty.close()
        assert [type(outcome) for outcome in outcomes] == [StoreUnavailable] * 2 + [Rejection] * 3
        first_failed = commands[0].request_id
        for outcome in outcomes[2:]:
            assert isinstance(outcome, Rejection) and outcome.reason is Reason.NOT_APPLIED
            assert first_failed in outcome.message and "same request_id" in outcome.message
            assert outcome.metadata == {"request_id": first_failed}
        assert isinstance(outcomes[2], Rejection)
        status = CommandServicer._failure(outcomes[2], commands[2].request_id)
        assert (status.code, details_of(status)[0]) == (code_pb2.ABORTED, "NOT_APPLIED")
        async with await psycopg.AsyncConnection.connect(ledger_dsn) as conn:
            assert [await events_of(conn, c.request_id) for c in commands] == [0] * 5

        # Resent from the failed command on, with the same request_ids: applied in order.
        again = await asyncio.wait_for(writer.execute_in_order(items), LIVENESS_SECONDS)
        positions = [outcome.position for outcome in again if isinstance(outcome, CommandResult)]
        assert len(positions) == 5 and positions == sorted(positions)

    asyncio.run(with_writers(ledger_dsn, body, lanes=1))


def test_an_ordered_batch_stops_at_a_command_on_a_locked_account(ledger_dsn: str) -> None:
    async def body(writers: list[LedgerWriter]) -> None:
        (writer,) = writers
        a, b, c = [await open_funded(writer, 100) for _ in range(3)]
        # One chunk: the first command waits for A's lock, the second is on C alone.
        commands: list[Command] = [
            transfer(a, b, 5),
            Deposit(request_id=new_id(), account_id=c, amount=eur(1)),
        ]
        async with await psycopg.AsyncConnection.connect(ledger_dsn, autocommit=True) as holder:
            await holder.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (a,))
            outcomes = await asyncio.wait_for(
                writer.execute_in_order([prepared(command) for command in commands]),
                LIVENESS_SECONDS,
            )
            reasons = [outcome.reason for outcome in outcomes if isinstance(outcome, Rejection)]
            assert reasons == [Reason.CONCURRENCY_CONFLICT, Reason.NOT_APPLIED]
            assert await events_of(holder, commands[1].request_id) == 0

    asyncio.run(with_writers(ledger_dsn, body, lanes=1))

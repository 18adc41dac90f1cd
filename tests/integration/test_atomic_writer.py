"""The writer's atomic batches against a real PostgreSQL: one transaction of their own
among concurrent group-committed commands, nothing written when one command fails, and
stored answers of earlier calls kept."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg

from chronos.domain.commands import Command, Deposit, Withdraw
from chronos.domain.errors import Reason, Rejection
from chronos.event_store.results import CommandResult
from chronos.event_store.writer import LedgerWriter
from tests.integration.test_principal import balance
from tests.integration.writer_helpers import eur, new_id, open_funded, prepared, run, with_writers


def recorded(conn: psycopg.Connection[Any], request_ids: list[str]) -> int:
    row = conn.execute(
        "SELECT count(*) FROM idempotency WHERE request_id = ANY(%s)", (request_ids,)
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_atomic_batches_run_alone_among_concurrent_commands(
    ledger_dsn: str, ledger_conn: psycopg.Connection[Any]
) -> None:
    async def body(writers: list[LedgerWriter]) -> tuple[Any, ...]:
        writer = writers[0]
        account = await open_funded(writer, 100)
        good = [Deposit(request_id=new_id(), account_id=account, amount=eur(1)) for _ in range(3)]
        bad: list[Command] = [
            Deposit(request_id=new_id(), account_id=account, amount=eur(1)),
            Withdraw(request_id=new_id(), account_id=account, amount=eur(10_000)),
        ]
        singles = [
            run(writer, Deposit(request_id=new_id(), account_id=account, amount=eur(10)))
            for _ in range(20)
        ]
        outcomes = await asyncio.gather(
            *singles[:10],
            writer.execute_atomic([prepared(c) for c in good]),
            writer.execute_atomic([prepared(c) for c in bad]),
            *singles[10:],
        )
        return account, good, bad, outcomes

    # One lane: every call queues on it, so the atomic batches meet ordinary commands
    # in the queue and must still commit alone.
    account, _, bad, outcomes = asyncio.run(with_writers(ledger_dsn, body, lanes=1))
    good_outcomes, bad_outcomes = outcomes[10], outcomes[11]
    assert all(isinstance(o, CommandResult) for o in good_outcomes)
    assert [o.reason for o in bad_outcomes] == [
        Reason.LINKED_COMMAND_FAILED,
        Reason.INSUFFICIENT_FUNDS,
    ]
    assert balance(ledger_conn, account) == 100 + 3 + 20 * 10
    assert recorded(ledger_conn, [c.request_id for c in bad]) == 0
    event_ids = [e for o in good_outcomes for e in o.event_ids]
    transactions = ledger_conn.execute(
        "SELECT DISTINCT xmin::text FROM events WHERE event_id = ANY(%s::uuid[])", (event_ids,)
    ).fetchall()
    assert len(transactions) == 1, "an atomic batch commits in one transaction"
    shared = ledger_conn.execute(
        "SELECT count(*) FROM events WHERE xmin::text = %s", (transactions[0][0],)
    ).fetchone()
    assert shared == (len(event_ids),), "and shares it with no other command"


def test_a_stored_answer_replays_and_a_reused_key_fails_the_batch_but_stays(
    ledger_dsn: str, ledger_conn: psycopg.Connection[Any]
) -> None:
    async def body(writers: list[LedgerWriter]) -> tuple[Any, ...]:
        writer = writers[0]
        account = await open_funded(writer, 0)
        earlier = Deposit(request_id=new_id(), account_id=account, amount=eur(5))
        first = await run(writer, earlier)
        fresh = Deposit(request_id=new_id(), account_id=account, amount=eur(7))
        replaying = await writer.execute_atomic([prepared(earlier), prepared(fresh)])
        reused = Deposit(request_id=earlier.request_id, account_id=account, amount=eur(6))
        other = Deposit(request_id=new_id(), account_id=account, amount=eur(8))
        reusing = await writer.execute_atomic([prepared(other), prepared(reused)])
        return account, first, replaying, reusing, [earlier.request_id, other.request_id]

    account, first, replaying, reusing, request_ids = asyncio.run(with_writers(ledger_dsn, body))
    assert replaying[0].replayed and replaying[0].position == first.position
    assert isinstance(replaying[1], CommandResult) and not replaying[1].replayed
    assert [o.reason for o in reusing if isinstance(o, Rejection)] == [
        Reason.LINKED_COMMAND_FAILED,
        Reason.IDEMPOTENCY_KEY_REUSED,
    ]
    assert balance(ledger_conn, account) == 5 + 7
    # The earlier call's record stays; the failed batch's own placeholder is gone.
    assert recorded(ledger_conn, request_ids) == 1

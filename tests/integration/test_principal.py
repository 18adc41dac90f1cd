"""The principal on the record, and idempotency scoped per principal, against a real
PostgreSQL.

Commands go through the command servicer in-process, with the caller set as the
servers' authentication sets it, and through the real group-commit writer.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from pathlib import Path
from typing import Any

import grpc
import psycopg
from psycopg.types.json import Jsonb

from chronos.domain import validation
from chronos.domain.commands import Deposit, Money
from chronos.event_store.migrate import MIGRATIONS_DIR, migrate
from chronos.event_store.results import AccountBalance, CommandResult
from chronos.event_store.writer import LedgerWriter
from chronos.security.caller import UNAUTHENTICATED, Caller
from chronos.security.scopes import ADMIN
from chronos.v1 import commands_pb2
from command_server.servicer import CommandServicer
from tests.integration.conftest import database_dsn, drop_database
from tests.integration.principal_support import (
    Refused,
    call_as,
    deposit,
    eur,
    open_account,
    transfer,
)
from tests.integration.writer_helpers import new_id, run_expiry_job, with_writers

ALICE = Caller(subject="alice", token_id="jti-alice-1", scopes=frozenset({ADMIN}))
# Alice again, with a token issued later: a retry after the first token expired.
ALICE_RENEWED = Caller(subject="alice", token_id="jti-alice-2", scopes=frozenset({ADMIN}))
BOB = Caller(subject="bob", token_id="jti-bob-1", scopes=frozenset({ADMIN}))


def balance(conn: psycopg.Connection[Any], account_id: str) -> int:
    row = conn.execute(
        "SELECT balance_minor FROM accounts WHERE account_id = %s", (account_id,)
    ).fetchone()
    assert row is not None
    return int(row[0])


def principals_of_request(conn: psycopg.Connection[Any], request_id: str) -> list[str]:
    """The principal of each event the request_id produced, in log order."""
    rows = conn.execute(
        "SELECT metadata->>'principal' FROM events WHERE metadata->>'request_id' = %s "
        "ORDER BY position",
        (request_id,),
    ).fetchall()
    return [row[0] for row in rows]


def serve(dsn: str, body: Any, *, lanes: int = 2, batch_size_max: int | None = None) -> Any:
    """Runs ``body(servicer)`` with a command servicer over a real writer."""

    async def with_servicer(writers: list[LedgerWriter]) -> Any:
        return await body(CommandServicer(writers[0]))

    return asyncio.run(with_writers(dsn, with_servicer, lanes=lanes, batch_size_max=batch_size_max))


async def two_funded_accounts(servicer: CommandServicer) -> tuple[str, str]:
    source = await open_account(servicer, ALICE, new_id())
    target = await open_account(servicer, ALICE, new_id())
    await deposit(servicer, ALICE, new_id(), source, 1000)
    return source, target


def test_two_principals_with_one_request_id_and_payload_get_two_independent_effects(
    ledger_dsn: str, ledger_conn: psycopg.Connection[Any]
) -> None:
    request_id = new_id()

    async def body(servicer: CommandServicer) -> tuple[str, str, Any, Any]:
        source, target = await two_funded_accounts(servicer)
        # Together, so that both are in the writer's queue at once and share a batch.
        first, second = await asyncio.gather(
            transfer(servicer, ALICE, request_id, source, target, 100),
            transfer(servicer, BOB, request_id, source, target, 100),
        )
        return source, target, first, second

    source, target, alice, bob = serve(ledger_dsn, body)
    assert not alice.replayed and not bob.replayed
    assert alice.position != bob.position
    assert set(alice.event_ids).isdisjoint(bob.event_ids)
    assert alice.entry_id != bob.entry_id
    assert (balance(ledger_conn, source), balance(ledger_conn, target)) == (800, 200)
    assert sorted(principals_of_request(ledger_conn, request_id)) == [
        "alice",
        "alice",
        "bob",
        "bob",
    ]
    records = ledger_conn.execute(
        "SELECT principal FROM idempotency WHERE request_id = %s ORDER BY principal",
        (request_id,),
    ).fetchall()
    assert records == [("alice",), ("bob",)]


def test_a_principal_retrying_gets_its_own_answer_and_never_another_s(
    ledger_dsn: str, ledger_conn: psycopg.Connection[Any]
) -> None:
    request_id = new_id()

    async def body(servicer: CommandServicer) -> tuple[str, str, list[Any]]:
        source, target = await two_funded_accounts(servicer)
        alice = await transfer(servicer, ALICE, request_id, source, target, 100)
        bob = await transfer(servicer, BOB, request_id, source, target, 100)
        retries = await asyncio.gather(
            transfer(servicer, ALICE_RENEWED, request_id, source, target, 100),
            transfer(servicer, BOB, request_id, source, target, 100),
        )
        return source, target, [alice, bob, *retries]

    source, target, (alice, bob, alice_again, bob_again) = serve(ledger_dsn, body)
    assert alice_again.replayed and bob_again.replayed
    for first, again in ((alice, alice_again), (bob, bob_again)):
        assert (again.position, again.entry_id, list(again.event_ids)) == (
            first.position,
            first.entry_id,
            list(first.event_ids),
        )
    assert alice_again.position != bob_again.position
    # The retries moved nothing.
    assert (balance(ledger_conn, source), balance(ledger_conn, target)) == (800, 200)
    assert len(principals_of_request(ledger_conn, request_id)) == 4


def test_a_principal_reusing_its_request_id_for_another_payload_is_refused_alone(
    ledger_dsn: str, ledger_conn: psycopg.Connection[Any]
) -> None:
    request_id = new_id()

    async def body(servicer: CommandServicer) -> tuple[str, str, Refused | None, Any]:
        source, target = await two_funded_accounts(servicer)
        await transfer(servicer, ALICE, request_id, source, target, 100)
        refused = None
        try:
            await transfer(servicer, ALICE_RENEWED, request_id, source, target, 999)
        except Refused as error:
            refused = error
        # Bob's request_id is his own: the payload alice stored under it is no concern
        # of his, and he learns nothing about it.
        bob = await transfer(servicer, BOB, request_id, source, target, 250)
        return source, target, refused, bob

    source, target, refused, bob = serve(ledger_dsn, body)
    assert refused is not None
    assert (refused.code, refused.reason) == (
        grpc.StatusCode.ALREADY_EXISTS,
        "IDEMPOTENCY_KEY_REUSED",
    )
    assert not bob.replayed
    assert (balance(ledger_conn, source), balance(ledger_conn, target)) == (650, 350)


def test_a_rejected_command_forgets_only_its_own_principal_s_record(
    ledger_dsn: str, ledger_conn: psycopg.Connection[Any]
) -> None:
    request_id = new_id()

    async def body(servicer: CommandServicer) -> tuple[str, Refused | None, Any]:
        empty = await open_account(servicer, ALICE, new_id())
        other = await open_account(servicer, ALICE, new_id())
        await deposit(servicer, BOB, request_id, other, 10)
        refused = None
        try:
            await transfer(servicer, ALICE, request_id, empty, other, 10)
        except Refused as error:
            refused = error
        await deposit(servicer, ALICE, new_id(), empty, 10)
        retried = await transfer(servicer, ALICE, request_id, empty, other, 10)
        return other, refused, retried

    other, refused, retried = serve(ledger_dsn, body)
    assert refused is not None and refused.reason == "INSUFFICIENT_FUNDS"
    # Alice's retry after the refusal ran (her record was forgotten); Bob's stayed.
    assert not retried.replayed
    assert balance(ledger_conn, other) == 20
    records = ledger_conn.execute(
        "SELECT principal, response IS NOT NULL FROM idempotency WHERE request_id = %s "
        "ORDER BY principal",
        (request_id,),
    ).fetchall()
    assert records == [("alice", True), ("bob", True)]


def test_a_batch_is_scoped_by_its_caller_like_single_commands(
    ledger_dsn: str, ledger_conn: psycopg.Connection[Any]
) -> None:
    request_id = new_id()

    async def body(servicer: CommandServicer) -> tuple[str, Any, Any]:
        account = await open_account(servicer, ALICE, new_id())
        bob = await deposit(servicer, BOB, request_id, account, 5)
        item = commands_pb2.BatchCommand(
            deposit=commands_pb2.DepositRequest(
                request_id=request_id, account_id=account, amount=eur(5)
            )
        )
        batch = await call_as(
            ALICE, servicer.ExecuteBatch, commands_pb2.ExecuteBatchRequest(commands=[item, item])
        )
        return account, bob, batch

    account, bob, batch = serve(ledger_dsn, body)
    first, second = (result.response for result in batch.results)
    assert not first.replayed and first.position != bob.position
    # The second copy in the batch meets alice's own record, not bob's.
    assert second.replayed and second.position == first.position
    assert balance(ledger_conn, account) == 10


def test_events_and_outbox_rows_record_the_principal_and_its_token_id(
    ledger_dsn: str, ledger_conn: psycopg.Connection[Any]
) -> None:
    authenticated, anonymous = new_id(), new_id()

    async def body(servicer: CommandServicer) -> None:
        account = await open_account(servicer, ALICE, new_id())
        await deposit(servicer, BOB, authenticated, account, 7)
        # Authentication off (development): nothing is recorded, as before principals.
        await deposit(servicer, UNAUTHENTICATED, anonymous, account, 7)

    serve(ledger_dsn, body)
    rows = ledger_conn.execute(
        """SELECT e.metadata, o.headers FROM events e JOIN outbox o USING (position)
           WHERE e.metadata->>'request_id' = %s""",
        (authenticated,),
    ).fetchall()
    assert len(rows) == 2  # the account's line and the system account's
    for metadata, headers in rows:
        assert (metadata["principal"], metadata["principal_token_id"]) == ("bob", "jti-bob-1")
        assert (headers["principal"], headers["principal_token_id"]) == ("bob", "jti-bob-1")
    rows = ledger_conn.execute(
        """SELECT e.metadata, o.headers FROM events e JOIN outbox o USING (position)
           WHERE e.metadata->>'request_id' = %s""",
        (anonymous,),
    ).fetchall()
    assert len(rows) == 2
    for metadata, headers in rows:
        assert "principal" not in metadata and "principal_token_id" not in metadata
        assert "principal" not in headers and "principal_token_id" not in headers
    record = ledger_conn.execute(
        "SELECT principal FROM idempotency WHERE request_id = %s", (anonymous,)
    ).fetchone()
    assert record == ("",)


def test_expiry_removes_only_the_expired_record_of_a_shared_request_id(
    ledger_dsn: str, ledger_conn: psycopg.Connection[Any]
) -> None:
    request_id = new_id()
    ledger_conn.execute(
        """INSERT INTO idempotency
               (principal, request_id, command_type, payload_hash, response, created_at,
                expires_at)
           VALUES ('alice', %(r)s, 'Deposit', '\\x00', '{}', now() - interval '2 days',
                   now() - interval '1 day'),
                  ('bob', %(r)s, 'Deposit', '\\x00', '{}', now(), now() + interval '1 day')""",
        {"r": request_id},
    )

    assert asyncio.run(run_expiry_job(ledger_dsn)) >= 1
    remaining = ledger_conn.execute(
        "SELECT principal FROM idempotency WHERE request_id = %s", (request_id,)
    ).fetchall()
    assert remaining == [("bob",)]


def _legacy_deposit(account_id: str, request_id: str) -> tuple[bytes, CommandResult]:
    """A deposit's fingerprint and the answer an older version stored for it."""
    command = validation.canonicalize(
        Deposit(
            request_id=request_id,
            account_id=account_id,
            amount=Money(currency="EUR", minor_units=250),
        )
    )
    answer = CommandResult(
        position=41,
        account_id=account_id,
        entry_id=new_id(),
        balances=(
            AccountBalance(account_id=account_id, currency="EUR", balance_minor=250, version=2),
        ),
        event_ids=(new_id(), new_id()),
    )
    return validation.fingerprint(command), answer


def test_migration_scopes_an_existing_database_s_records_to_the_empty_principal(
    pg_dsn: str, tmp_path: Path
) -> None:
    first_only = tmp_path / "migrations"
    first_only.mkdir()
    shutil.copy(MIGRATIONS_DIR / "0001_ledger.sql", first_only)
    # A database as an older version left it: only the first migration applied.
    name = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    dsn = database_dsn(pg_dsn, name)
    try:
        assert migrate(dsn, directory=first_only) == [1]
        account_id, request_id = new_id(), new_id()
        fingerprint, answer = _legacy_deposit(account_id, request_id)
        with psycopg.connect(dsn, autocommit=True) as conn:
            # The row an older version wrote (no principal column yet).
            conn.execute(
                """INSERT INTO idempotency (request_id, command_type, payload_hash, response,
                                            created_at, expires_at)
                   VALUES (%s, 'Deposit', %s, %s, now(), now() + interval '1 day')""",
                (request_id, fingerprint, Jsonb(answer.to_dict())),
            )
        # 0002 scopes the records by principal; any later migration applies after it.
        applied = migrate(dsn)
        assert applied[0] == 2 and applied == sorted(applied)
        assert migrate(dsn) == []

        async def body(servicer: CommandServicer) -> tuple[Any, Any]:
            await call_as(
                UNAUTHENTICATED,
                servicer.OpenAccount,
                commands_pb2.OpenAccountRequest(
                    request_id=new_id(), account_id=account_id, owner_name="Ada", currency="EUR"
                ),
            )
            legacy = await deposit(servicer, UNAUTHENTICATED, request_id, account_id, 250)
            alice = await deposit(servicer, ALICE, request_id, account_id, 250)
            return legacy, alice

        legacy, alice = serve(dsn, body)
        # The record written before the migration still answers its retries...
        assert legacy.replayed and legacy.position == answer.position
        assert list(legacy.event_ids) == list(answer.event_ids)
        # ...and belongs to the empty principal only.
        assert not alice.replayed
        with psycopg.connect(dsn, autocommit=True) as conn:
            assert balance(conn, account_id) == 250
            records = conn.execute(
                "SELECT principal FROM idempotency WHERE request_id = %s ORDER BY principal",
                (request_id,),
            ).fetchall()
            assert records == [("",), ("alice",)]
            key = conn.execute(
                """SELECT array_agg(a.attname ORDER BY k.ordinality)
                   FROM pg_index i
                   CROSS JOIN unnest(i.indkey) WITH ORDINALITY AS k(attnum, ordinality)
                   JOIN pg_attribute a
                     ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                   WHERE i.indrelid = 'idempotency'::regclass AND i.indisprimary"""
            ).fetchone()
            assert key == (["principal", "request_id"],)
    finally:
        drop_database(pg_dsn, name)

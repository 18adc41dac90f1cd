"""The writer's PostgreSQL I/O: one group-commit transaction in two round trips.

Inside the transaction, locks are always taken in the same global order, so two
transactions can wait on each other but never in a cycle (no deadlock on simultaneous
A→B and B→A transfers):

1. idempotency placeholders, sorted by (principal, request_id) (``INSERT .. ON CONFLICT
   DO NOTHING`` waits for a concurrent duplicate to finish, so duplicates resolve to one
   effect);
2. advisory locks on every touched account, sorted by key (they also cover accounts
   that do not exist yet, which a row lock could not);
3. the ``ledger_head`` row, last, to take gapless positions in commit order.

This module loads, writes and commits; what the commands decide comes from the pure
function the caller passes in (:func:`chronos.event_store.decisions.decide_batch`).
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import psycopg
from psycopg import errors as pg_errors

from chronos.domain.accounts import Account
from chronos.domain.commands import Command
from chronos.domain.errors import Reason, Rejection
from chronos.domain.holds import PendingTransfer
from chronos.event_store import account_rows, entries, holds_store, mapper, sql
from chronos.event_store.context import CommandContext
from chronos.event_store.decisions import BatchDecision, accounts_to_lock, settle_outcomes
from chronos.event_store.errors import CommitOutcomeUnknown
from chronos.event_store.results import CommandResult

Holds = Mapping[str, PendingTransfer | None]


@dataclass(frozen=True, slots=True, kw_only=True)
class Loaded:
    """What round trip 1 read under the accounts' locks, besides the accounts.

    Attributes:
        holds: The holds the batch's posts, voids and expiries name.
        now: The database's clock (None: no hold command in the batch).
        reversed_by: The reversal of each already reversed entry the batch's
            ReverseEntry commands name.
    """

    holds: Holds
    now: datetime | None
    reversed_by: Mapping[str, str]


DecideBatch = Callable[
    [Sequence[Command | None], Mapping[str, Account | None], Loaded], BatchDecision
]
"""Decides a batch against the loaded accounts, holds and reversals, skipping None (a
command already answered)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchRequest:
    """One command of a batch, as the transaction records it.

    Attributes:
        command: Validated and canonical.
        payload_hash: The command's fingerprint, stored with its request_id.
        context: Who asked; the metadata of the command's events.
        traceparent: The span covering this transaction ("" when not traced); it
            replaces the caller's in the events' metadata, so the publish continues it.
    """

    command: Command
    payload_hash: bytes
    context: CommandContext
    traceparent: str = ""

    def metadata_json(self) -> str:
        """The metadata of the command's events as JSON text, shared by all of them."""
        metadata = self.context.metadata()
        if self.traceparent:
            metadata["traceparent"] = self.traceparent
        return _json(metadata)


async def run_transaction(
    conn: psycopg.AsyncConnection[Any],
    requests: Sequence[BatchRequest],
    *,
    decide: DecideBatch,
    topic: str,
    idempotency_retention_seconds: int,
    atomic: bool = False,
) -> list[CommandResult | Rejection]:
    """Runs one batch in one transaction: every accepted command or none is committed.

    With ``atomic``, the batch is one atomic batch: when any command fails, none is
    recorded (see :mod:`chronos.event_store.atomic`).

    Returns:
        Per request its result (a replay for a stored duplicate) or its Rejection.

    Raises:
        CommitOutcomeUnknown: the connection was lost once the COMMIT was sent.
        psycopg.Error: the transaction failed and was rolled back.
    """
    assert conn.autocommit, "the writer sends BEGIN and COMMIT itself: use writer_pool()"
    commit_sent = False
    try:
        # Two round trips per batch: BEGIN with the reads, then every write with the
        # COMMIT, sent by the pipeline's exit. psycopg's transaction() would add a
        # round trip at BEGIN and another at COMMIT, and on a busy machine each round
        # trip is also a wait for a core.
        async with conn.pipeline():
            outcomes, results, appended = await _pipelined(
                conn, requests, decide, topic, idempotency_retention_seconds, atomic
            )
            # From here the server may commit whatever happens to the connection.
            commit_sent = appended is not None
            await conn.execute("COMMIT")
        if appended is not None:
            head = await appended.fetchone()
            assert head is not None, "ledger_head row missing: run `chronos db migrate`"
            for i, result in results.items():
                outcomes[i] = replace(result, position=int(head[0]) + result.position)
    except BaseException as error:
        # A failed statement leaves the transaction aborted, and an exception between
        # the round trips leaves it open: end it before the connection goes back.
        with contextlib.suppress(psycopg.Error):
            await conn.rollback()
        if commit_sent and _connection_lost(conn, error):
            raise CommitOutcomeUnknown(
                f"the connection to the ledger database was lost during the commit: {error}"
            ) from error
        raise
    final = [o for o in outcomes if o is not None]
    assert len(final) == len(requests), "every command must have an outcome"
    return final


async def held_locks(conn: psycopg.AsyncConnection[Any], account_ids: list[str]) -> set[str]:
    """Which of the accounts' advisory locks another session holds, without waiting.

    The probe takes each free key and releases it as its statement's transaction ends,
    so ``conn`` must be in autocommit mode (a writer_pool connection is).
    """
    cursor = await conn.execute(sql.PROBE_HELD_LOCKS, (_json(account_ids),))
    return {str(row[0]) for row in await cursor.fetchall()}


async def _pipelined(
    conn: psycopg.AsyncConnection[Any],
    requests: Sequence[BatchRequest],
    decide: DecideBatch,
    topic: str,
    idempotency_retention_seconds: int,
    atomic: bool,
) -> tuple[
    list[CommandResult | Rejection | None],
    dict[int, CommandResult],
    psycopg.AsyncCursor[Any] | None,
]:
    """Queues the whole transaction but its COMMIT; sends all but the last round trip.

    Returns:
        The outcomes known so far, the results still waiting for their positions, and
        the cursor that will hold the base position once the pipeline is synced.
    """
    # Round trip 1. The server runs the statements one after the other, so the
    # accounts are read only once their locks are held, and read-committed gives
    # that last statement a snapshot of its own.
    await conn.execute("BEGIN")
    answered, accounts, loaded = await _lock_and_load(conn, requests, idempotency_retention_seconds)
    commands = [None if i in answered else r.command for i, r in enumerate(requests)]
    decision = decide(commands, accounts, loaded)
    outcomes, rejected, failed = settle_outcomes(len(requests), answered, decision, atomic=atomic)

    # Round trip 2: every write, then (queued by the caller) the COMMIT.
    if rejected:
        # Rejections write nothing: the same request_id may be retried later.
        await conn.execute(
            sql.FORGET_REJECTED,
            (_json([requests[i].context.idempotency_key for i, _ in rejected]),),
        )
    events = decision.events()
    if not events or failed:
        return outcomes, {}, None
    # Account and hold state first, while only the touched accounts are locked.
    await account_rows.save_accounts(conn, decision)
    await holds_store.save(conn, decision.holds)
    await entries.save_entries(conn, decision)
    results = _results_by_ordinal(decision)
    # Positions last, in one statement with the events, outbox rows and answers: the
    # head row lock is held from here to the COMMIT that follows it in the same round
    # trip, so concurrent transactions queue on it for a moment only.
    appended = await conn.execute(
        sql.APPEND,
        {
            "count": len(events),
            "topic": topic,
            "events": _events_json(requests, decision),
            "answers": _answers_json(requests, results),
        },
    )
    return outcomes, results, appended


async def _lock_and_load(
    conn: psycopg.AsyncConnection[Any],
    requests: Sequence[BatchRequest],
    idempotency_retention_seconds: int,
) -> tuple[dict[int, CommandResult | Rejection], dict[str, Account | None], Loaded]:
    """Places the idempotency records, locks and reads the touched accounts, the holds
    named and the reversals of the entries the batch would reverse (round trip 1), then
    reads the stored answers of duplicates.

    Returns:
        The answers of the requests already recorded, by index, the state of every
        touched account (None: not opened yet), and the holds, the clock and the
        reversal of each named entry already reversed.
    """
    touched = accounts_to_lock(r.command for r in requests)
    # 1. Idempotency placeholders, sorted, so concurrent duplicates serialize.
    order = sorted(range(len(requests)), key=lambda i: requests[i].context.idempotency_key)
    placed = await conn.execute(
        sql.PLACE_IDEMPOTENCY,
        (
            idempotency_retention_seconds,
            _json(
                [
                    (
                        *requests[i].context.idempotency_key,
                        type(requests[i].command).__name__,
                        requests[i].payload_hash.hex(),
                    )
                    for i in order
                ]
            ),
        ),
    )
    # 2. Lock every touched account (existing or not), in one global order, then read
    # them. Duplicates' accounts are locked too: the answers are only known after this
    # round trip, and an extra lock changes nothing.
    await conn.execute(sql.LOCK_ACCOUNTS, (_json(touched),))
    loaded = await conn.execute(sql.LOAD_ACCOUNTS, (_uuid_array(touched),))
    commands = [r.command for r in requests]
    held = await holds_store.queue_load(conn, commands) if holds_store.has_holds(commands) else None
    reversals = await entries.load_reversals(conn, commands)
    fresh = {(row[0], row[1]) for row in await placed.fetchall()}  # sends round trip 1
    accounts = account_rows.accounts_from_rows(touched, await loaded.fetchall())
    holds, now = await holds_store.read_loaded(held) if held is not None else ({}, None)
    reversed_by = await entries.reversals_read(reversals)
    duplicates = [i for i, r in enumerate(requests) if r.context.idempotency_key not in fresh]
    answered = await _resolve_duplicates(conn, requests, duplicates) if duplicates else {}
    return answered, accounts, Loaded(holds=holds, now=now, reversed_by=reversed_by)


async def _resolve_duplicates(
    conn: psycopg.AsyncConnection[Any],
    requests: Sequence[BatchRequest],
    duplicates: list[int],
) -> dict[int, CommandResult | Rejection]:
    """The stored answer of each duplicate, or IDEMPOTENCY_KEY_REUSED for a request_id
    the same principal stored with another payload. Only the principal's own records are
    read: another principal's answer is never returned."""
    cursor = await conn.execute(
        sql.READ_STORED_ANSWERS, (_json([requests[i].context.idempotency_key for i in duplicates]),)
    )
    stored = {(row[0], row[1]): (bytes(row[2]), row[3]) for row in await cursor.fetchall()}
    answers: dict[int, CommandResult | Rejection] = {}
    for i in duplicates:
        request_id = requests[i].context.request_id
        record = stored.get(requests[i].context.idempotency_key)
        if record is None or record[1] is None:
            # The first copy's record vanished (expired or rejected) between our
            # insert and this read: treat as a conflict and let the retry decide.
            raise pg_errors.SerializationFailure("idempotency record changed concurrently")
        payload_hash, response = record
        if payload_hash != requests[i].payload_hash:
            answers[i] = Rejection(
                Reason.IDEMPOTENCY_KEY_REUSED,
                f"request_id {request_id!r} was already used for a "
                "different request; use a new request_id for a new command.",
                metadata={"request_id": request_id},
            )
        else:
            data = response if isinstance(response, dict) else json.loads(response)
            answers[i] = CommandResult.from_json(data).as_replay()
    return answers


def _results_by_ordinal(decision: BatchDecision) -> dict[int, CommandResult]:
    """The accepted commands' results by index, each ``position`` still the ordinal of
    its last event in the batch until the head row assigns the positions."""
    results: dict[int, CommandResult] = {}
    end = 0
    for i, accepted in decision.accepted():
        end += len(accepted.events)
        results[i] = CommandResult(
            position=end,
            account_id=accepted.account_id,
            entry_id=accepted.entry_id,
            balances=accepted.balances,
            event_ids=tuple(new.event_id for new in accepted.events),
            pending_id=accepted.pending_id,
        )
    return results


def _events_json(requests: Sequence[BatchRequest], decision: BatchDecision) -> str:
    """The events as the JSON text ``sql.APPEND`` reads: one array per event."""
    rows = []
    for i, accepted in decision.accepted():
        metadata_json = requests[i].metadata_json()
        for new in accepted.events:
            event_type, schema_version, payload = mapper.encode(new.event)
            rows.append(
                (
                    new.event_id,
                    new.stream_id,
                    new.stream_version,
                    event_type,
                    schema_version,
                    base64.b64encode(payload).decode("ascii"),
                    metadata_json,
                )
            )
    return _json(rows)


def _answers_json(requests: Sequence[BatchRequest], results: dict[int, CommandResult]) -> str:
    """The stored answers as the JSON text ``sql.APPEND`` reads: one array per answer."""
    return _json(
        [
            (
                requests[i].context.request_id,
                result.to_dict(),
                result.position,
                requests[i].context.principal,
            )
            for i, result in results.items()
        ]
    )


def _connection_lost(conn: psycopg.AsyncConnection[Any], error: BaseException) -> bool:
    """Whether ``error`` cut the connection rather than ended the transaction: an error the
    server answered for a statement (a lock or statement timeout, a constraint) leaves the
    connection usable and the transaction rolled back."""
    if not isinstance(error, psycopg.OperationalError):
        return False
    sqlstate = error.sqlstate or ""
    # 08: connection exception; 57P: the server ended the session (administrator,
    # crash, shutdown). No sqlstate: libpq saw the socket fail.
    return conn.broken or conn.closed or not sqlstate or sqlstate.startswith(("08", "57P"))


def _json(value: Any) -> str:
    """Compact JSON text for a parameter (see :mod:`chronos.event_store.sql` for why
    lists travel as JSON rather than as arrays)."""
    return json.dumps(value, separators=(",", ":"))


def _uuid_array(ids: list[str]) -> str:
    """A ``uuid[]`` literal. Safe to format by hand: the ids are validated UUIDs."""
    return "{" + ",".join(ids) + "}"

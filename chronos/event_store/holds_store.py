"""The write-side state of holds: loaded with a batch's accounts, saved with its events.

A hold's row (``pending_transfers``) is the fold of its events, like an account's row.
Its from and to accounts never change, so every command that changes a hold locks both
accounts first: their advisory locks guard the hold's row too, and the row is read only
once they are held (in the same round trip as the accounts).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg

from chronos.domain.commands import (
    Command,
    CreatePendingTransfer,
    ExpirePendingTransfer,
    PostPendingTransfer,
    VoidPendingTransfer,
)
from chronos.domain.holds import HoldState, PendingTransfer

# The holds a batch names, and the ledger's clock (the transaction's start) for timeouts.
LOAD_HOLDS = """SELECT now(), h.pending_id::text, h.from_account_id::text,
                       h.to_account_id::text, h.currency, h.amount_minor, h.state,
                       h.posted_minor, h.expires_at, h.description, h.created_at,
                       h.metadata
                FROM (SELECT 1) AS one
                LEFT JOIN pending_transfers AS h ON h.pending_id = ANY(%s::uuid[])"""

# Placed holds are inserted, changed ones updated: one statement, one JSON text.
SAVE_HOLDS = """INSERT INTO pending_transfers AS p
                  (pending_id, from_account_id, to_account_id, currency, amount_minor, state,
                   posted_minor, expires_at, description, created_at, updated_at, metadata)
                SELECT h.pending_id, h.from_account_id, h.to_account_id, h.currency,
                       h.amount_minor, h.state, h.posted_minor, h.expires_at, h.description,
                       h.placed_at, now(), h.metadata
                FROM jsonb_to_recordset(%s::jsonb)
                     AS h(pending_id uuid, from_account_id uuid, to_account_id uuid,
                          currency text, amount_minor bigint, state text, posted_minor bigint,
                          expires_at timestamptz, description text, placed_at timestamptz,
                          metadata jsonb)
                ON CONFLICT (pending_id) DO UPDATE
                SET state = excluded.state, posted_minor = excluded.posted_minor,
                    updated_at = now()"""

# Holds change through post, void and expiry: the commands that name one.
_NAMING_A_HOLD = (PostPendingTransfer, VoidPendingTransfer, ExpirePendingTransfer)
_HOLD_COMMANDS = (CreatePendingTransfer, *_NAMING_A_HOLD)


def has_holds(commands: Sequence[Command]) -> bool:
    """Whether a batch places or changes a hold (and so needs the holds and the clock)."""
    return any(isinstance(command, _HOLD_COMMANDS) for command in commands)


async def queue_load(
    conn: psycopg.AsyncConnection[Any], commands: Sequence[Command]
) -> psycopg.AsyncCursor[Any]:
    """Queues the read of the holds ``commands`` name (call after the accounts' locks)."""
    ids = sorted(
        {command.pending_id for command in commands if isinstance(command, _NAMING_A_HOLD)}
    )
    return await conn.execute(LOAD_HOLDS, ("{" + ",".join(ids) + "}",))


async def read_loaded(
    cursor: psycopg.AsyncCursor[Any],
) -> tuple[dict[str, PendingTransfer | None], datetime]:
    """The holds read by :func:`queue_load`, by pending id, and the database's clock."""
    holds: dict[str, PendingTransfer | None] = {}
    now: datetime | None = None
    for row in await cursor.fetchall():
        now = row[0]
        if row[1] is None:
            continue
        holds[str(row[1])] = PendingTransfer(
            pending_id=str(row[1]),
            from_account_id=str(row[2]),
            to_account_id=str(row[3]),
            currency=str(row[4]),
            amount_minor=int(row[5]),
            state=HoldState(row[6]),
            posted_minor=int(row[7]),
            expires_at=row[8],
            description=str(row[9]),
            placed_at=row[10],
            metadata=tuple(sorted((str(k), str(v)) for k, v in row[11].items())),
        )
    assert now is not None, "the holds query always returns a row"
    return holds, now


async def save(conn: psycopg.AsyncConnection[Any], holds: Sequence[PendingTransfer]) -> None:
    """Queues the new state of the holds a batch placed or changed."""
    if not holds:
        return
    rows = [
        {
            "pending_id": hold.pending_id,
            "from_account_id": hold.from_account_id,
            "to_account_id": hold.to_account_id,
            "currency": hold.currency,
            "amount_minor": hold.amount_minor,
            "state": hold.state.value,
            "posted_minor": hold.posted_minor,
            "expires_at": None if hold.expires_at is None else hold.expires_at.isoformat(),
            "description": hold.description,
            "placed_at": None if hold.placed_at is None else hold.placed_at.isoformat(),
            "metadata": dict(hold.metadata),
        }
        for hold in holds
    ]
    await conn.execute(SAVE_HOLDS, (json.dumps(rows, separators=(",", ":")),))


async def hold_accounts(
    conn: psycopg.AsyncConnection[Any], pending_id: str
) -> tuple[str, str] | None:
    """The from and to accounts of a hold (they never change), or None if unknown."""
    cursor = await conn.execute(
        "SELECT from_account_id::text, to_account_id::text FROM pending_transfers"
        " WHERE pending_id = %s::uuid",
        (pending_id,),
    )
    row = await cursor.fetchone()
    return None if row is None else (str(row[0]), str(row[1]))

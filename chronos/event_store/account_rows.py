"""The write-side account rows of a batch: read under their locks, saved with its events.

An account row is the fold of the account's stream (``chronos.domain.accounts.Account``);
the writer keeps it in the same transaction as the events, so the rules check current
state without replaying.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg

from chronos.domain.accounts import Account, AccountStatus
from chronos.domain.events import AccountKind
from chronos.event_store import sql
from chronos.event_store.decisions import BatchDecision


async def save_accounts(conn: psycopg.AsyncConnection[Any], decision: BatchDecision) -> None:
    """Queues the new state of every changed account: one INSERT of the opened ones,
    one UPDATE of the columns that can change on the others. The rows travel as
    one JSON text each (no COPY: it cannot be pipelined)."""
    new = [account_row(a) for a in decision.accounts if a.account_id in decision.opened]
    existing = [account_row(a) for a in decision.accounts if a.account_id not in decision.opened]
    if new:
        await conn.execute(sql.INSERT_OPENED_ACCOUNTS, (_json(new),))
    if existing:
        changes = [{column: row[column] for column in CHANGING_COLUMNS} for row in existing]
        await conn.execute(sql.UPDATE_ACCOUNTS, (_json(changes),))


# The columns of an account row that a command can change (sql.UPDATE_ACCOUNTS).
CHANGING_COLUMNS = (
    "account_id",
    "status",
    "balance_minor",
    "version",
    "pending_debits_minor",
    "pending_credits_minor",
)


def account_row(account: Account) -> dict[str, Any]:
    """An account as the JSON object ``sql.INSERT_OPENED_ACCOUNTS`` reads."""
    return {
        "account_id": account.account_id,
        "kind": account.kind.value,
        "owner_name": account.owner_name,
        "currency": account.currency,
        "overdraft_limit_minor": account.overdraft_limit_minor,
        "status": account.status.value,
        "balance_minor": account.balance_minor,
        "version": account.version,
        "metadata": dict(account.metadata),
        "pending_debits_minor": account.pending_debits_minor,
        "pending_credits_minor": account.pending_credits_minor,
    }


def accounts_from_rows(account_ids: list[str], rows: list[Any]) -> dict[str, Account | None]:
    """The write-side state of each account (None: not opened yet)."""
    accounts: dict[str, Account | None] = dict.fromkeys(account_ids)
    for account_id, kind, owner, currency, limit, status, balance, version, debits, credits in rows:
        accounts[str(account_id)] = Account(
            account_id=str(account_id),
            kind=AccountKind(kind),
            owner_name=str(owner),
            currency=str(currency),
            overdraft_limit_minor=int(limit),
            status=AccountStatus(status),
            balance_minor=int(balance),
            version=int(version),
            pending_debits_minor=int(debits),
            pending_credits_minor=int(credits),
        )
    return accounts


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))

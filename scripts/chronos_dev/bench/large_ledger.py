"""A large ledger written straight into a scratch database, for measuring reads.

Accounts are opened, then money moves between them in transfers (a debit line on one
stream, a credit line on the other, one entry), with descriptions, movement metadata on
some and a command's usual event metadata on all, spread over the last days. Every
stream version and balance is consistent, and the transfers sum to zero. The events are
written with COPY, not through the command server: a million events in a minute instead
of hours on this machine. The domain's rules are not run (the accounts are opened with
a limit no transfer reaches) and the chain hashes are filler, so this ledger is for
reading only: ``chronos verify`` would refuse it.
"""

from __future__ import annotations

import hashlib
import json
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg

from chronos.domain.commands import Side
from chronos.domain.events import AccountKind, AccountOpened, DomainEvent, FundsTransferred
from chronos.event_store import mapper

FIRST_NAMES = ("Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken")
LAST_NAMES = ("Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson")
# Descriptions are "<word> <number>", so a free-text search names a word and finds many.
DESCRIPTION_WORDS = ("rent", "invoice", "salary", "dinner", "refund", "groceries", "travel")
CURRENCY = "EUR"
# No transfer of this ledger comes near it: the accounts never need funding.
OVERDRAFT_LIMIT_MINOR = 10**15
AMOUNT_MINOR_MAX = 100_000
# One transfer in this many carries movement metadata (an order id).
ORDER_EVERY = 10
PRINCIPAL = "bench-pages"
COPY_COLUMNS = (
    "position, event_id, stream_id, stream_version, event_type, schema_version, payload, "
    "metadata, recorded_at, chain_hash"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class LargeLedger:
    """What was written: the head, and samples a reader can ask for."""

    head_position: int
    account_ids: tuple[str, ...]
    entry_ids: tuple[str, ...]
    first_recorded_at: datetime
    last_recorded_at: datetime


class RowWriter:
    def __init__(self, rng: random.Random, start: datetime, step: timedelta) -> None:
        self.rng = rng
        self._start = start
        self._step = step
        self.position = 0
        self.versions: dict[str, int] = {}

    def uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def row(self, event: DomainEvent, stream_id: str, request_id: str) -> tuple[Any, ...]:
        self.position += 1
        self.versions[stream_id] = self.versions.get(stream_id, 0) + 1
        event_type, schema_version, payload = mapper.encode(event)
        # Both lines of a transfer are one command's: they share its request and time.
        recorded_at = self._start + self._step * (self.position // 2)
        trace, span = self.rng.getrandbits(128), self.rng.getrandbits(64)
        metadata = {
            "request_id": request_id,
            "correlation_id": request_id,
            "causation_id": request_id,
            "principal": PRINCIPAL,
            "principal_token_id": "bench-pages-token",
            "traceparent": f"00-{trace:032x}-{span:016x}-01",
        }
        return (
            self.position,
            self.uuid(),
            stream_id,
            self.versions[stream_id],
            event_type,
            schema_version,
            payload,
            json.dumps(metadata),
            recorded_at,
            hashlib.sha256(self.position.to_bytes(8, "big")).digest(),
        )


def ledger_rows(
    writer: RowWriter, event_count: int, account_count: int, ledger: dict[str, Any]
) -> Iterator[tuple[Any, ...]]:
    rng = writer.rng
    accounts = [writer.uuid() for _ in range(account_count)]
    for account in accounts:
        owner = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
        opened = AccountOpened(
            account_id=account,
            owner_name=owner,
            currency=CURRENCY,
            overdraft_limit_minor=OVERDRAFT_LIMIT_MINOR,
            kind=AccountKind.USER,
            metadata=(("segment", rng.choice(("retail", "business"))),),
        )
        yield writer.row(opened, account, writer.uuid())
    balances = dict.fromkeys(accounts, 0)
    entries: list[str] = []
    transfer = 0
    while writer.position + 2 <= event_count:
        transfer += 1
        source, target = rng.sample(accounts, 2)
        amount = rng.randint(1, AMOUNT_MINOR_MAX)
        entry, request = writer.uuid(), writer.uuid()
        description = f"{rng.choice(DESCRIPTION_WORDS)} {transfer}"
        metadata = (("order_id", f"A-{transfer}"),) if transfer % ORDER_EVERY == 0 else ()
        balances[source] -= amount
        balances[target] += amount
        for index, (account, side, other) in enumerate(
            ((source, Side.DEBIT, target), (target, Side.CREDIT, source))
        ):
            line = FundsTransferred(
                entry_id=entry,
                account_id=account,
                side=side,
                currency=CURRENCY,
                amount_minor=amount,
                balance_after_minor=balances[account],
                counterparty_account_id=other,
                description=description,
                line_index=index,
                metadata=metadata,
            )
            yield writer.row(line, account, request)
        if len(entries) < 10_000:
            entries.append(entry)
    ledger["accounts"], ledger["entries"] = accounts, entries


def fill(
    dsn: str, *, event_count: int, account_count: int, now: datetime, days: int = 30
) -> LargeLedger:
    """Writes about ``event_count`` events (``account_count`` openings, then transfers)
    into the migrated, empty database at ``dsn``, spread over the ``days`` before
    ``now``, and moves the head to the last."""
    assert account_count >= 2 and event_count >= account_count
    start = now - timedelta(days=days)
    step = timedelta(days=days) / max(1, event_count // 2)
    writer = RowWriter(random.Random(1), start, step)
    ledger: dict[str, Any] = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        with conn.cursor().copy(f"COPY events ({COPY_COLUMNS}) FROM STDIN") as copy:
            last: tuple[Any, ...] = ()
            for row in ledger_rows(writer, event_count, account_count, ledger):
                copy.write_row(row)
                last = row
        conn.execute(
            "UPDATE ledger_head SET position = %s, recorded_at = %s, chain_hash = %s WHERE id = 1",
            (writer.position, last[8], last[9]),
        )
        conn.execute("VACUUM ANALYZE events")
    return LargeLedger(
        head_position=writer.position,
        account_ids=tuple(ledger["accounts"]),
        entry_ids=tuple(ledger["entries"]),
        first_recorded_at=start,
        last_recorded_at=last[8],
    )

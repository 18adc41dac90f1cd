"""Helpers to drive the real LedgerWriter from tests (no fakes: a real PostgreSQL pool)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from psycopg_pool import AsyncConnectionPool

from chronos.domain import validation
from chronos.domain.commands import Command, Deposit, Money, OpenAccount
from chronos.event_store.results import CommandResult
from chronos.event_store.writer import CommandContext, LedgerWriter, WriterSettings


async def with_writers(
    dsn: str,
    body: Callable[[list[LedgerWriter]], Awaitable[Any]],
    *,
    writers: int = 1,
    lanes: int = 2,
) -> Any:
    """Runs ``body`` with ``writers`` independent writers (as separate server processes
    would have: each its own pool and lanes)."""
    pools = [
        AsyncConnectionPool(dsn, min_size=1, max_size=lanes + 1, open=False) for _ in range(writers)
    ]
    built: list[LedgerWriter] = []
    for pool in pools:
        await pool.open(wait=True, timeout=20)
        writer = LedgerWriter(pool, WriterSettings(lanes=lanes))
        writer.start()
        built.append(writer)
    try:
        return await body(built)
    finally:
        for writer in built:
            await writer.close()
        for pool in pools:
            await pool.close()


async def run(writer: LedgerWriter, command: Command) -> CommandResult:
    validation.validate(command)
    command = validation.canonicalize(command)
    return await writer.execute(
        command, validation.fingerprint(command), CommandContext(request_id=command.request_id)
    )


def eur(minor: int) -> Money:
    return Money(currency="EUR", minor_units=minor)


def new_id() -> str:
    return str(uuid.uuid4())


async def open_funded(writer: LedgerWriter, funds_minor: int, limit_minor: int = 0) -> str:
    account_id = new_id()
    await run(
        writer,
        OpenAccount(
            request_id=new_id(),
            account_id=account_id,
            owner_name="Test Owner",
            currency="EUR",
            overdraft_limit_minor=limit_minor,
        ),
    )
    if funds_minor:
        await run(
            writer, Deposit(request_id=new_id(), account_id=account_id, amount=eur(funds_minor))
        )
    return account_id

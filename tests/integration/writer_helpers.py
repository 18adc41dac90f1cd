"""Helpers to drive the real LedgerWriter from tests (no fakes: a real PostgreSQL pool)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from chronos.domain import validation
from chronos.domain.commands import Command, Deposit, Money, OpenAccount
from chronos.event_store.maintenance import expire_idempotency_records
from chronos.event_store.results import CommandResult
from chronos.event_store.writer import CommandContext, LedgerWriter, WriterSettings, writer_pool


async def with_writers(
    dsn: str,
    body: Callable[[list[LedgerWriter]], Awaitable[Any]],
    *,
    writers: int = 1,
    lanes: int = 2,
    batch_size_max: int | None = None,
    pool_size_max: int | None = None,
) -> Any:
    """Runs ``body`` with ``writers`` independent writers (as separate server processes
    would have: each its own pool and lanes)."""
    size_max = pool_size_max or lanes + 1
    pools = [writer_pool(dsn, min_size=1, max_size=size_max) for _ in range(writers)]
    built: list[LedgerWriter] = []
    for pool in pools:
        await pool.open(wait=True, timeout=20)
        settings = WriterSettings(lanes=lanes)
        if batch_size_max is not None:
            settings = replace(settings, batch_size_max=batch_size_max)
        writer = LedgerWriter(pool, settings)
        writer.start()
        built.append(writer)
    try:
        return await body(built)
    finally:
        for writer in built:
            await writer.close()
        for pool in pools:
            await pool.close()


async def run_expiry_job(dsn: str) -> int:
    """Runs the command server's idempotency expiry job once, on a pool of its own."""
    pool = writer_pool(dsn, min_size=1, max_size=1)
    await pool.open(wait=True)
    try:
        return await expire_idempotency_records(pool)
    finally:
        await pool.close()


def prepared(command: Command) -> tuple[Command, bytes, CommandContext]:
    """What the command server hands the writer: validated, canonical, fingerprinted."""
    validation.validate(command)
    command = validation.canonicalize(command)
    return command, validation.fingerprint(command), CommandContext(request_id=command.request_id)


async def run(writer: LedgerWriter, command: Command) -> CommandResult:
    return await writer.execute(*prepared(command))


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

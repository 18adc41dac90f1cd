"""Housekeeping jobs on the write side's tables (never on ``events``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

_logger = logging.getLogger(__name__)


async def expire_idempotency_records(
    pool: AsyncConnectionPool[Any], *, batch_size_max: int = 5000, batches_max: int = 100
) -> int:
    """Deletes expired idempotency records in bounded batches; returns how many.

    Small batches keep each transaction short so the writer never waits long on them.
    """
    deleted_total = 0
    for _ in range(batches_max):
        async with pool.connection() as conn:
            cursor = await conn.execute(
                """DELETE FROM idempotency WHERE (principal, request_id) IN (
                       SELECT principal, request_id FROM idempotency
                       WHERE expires_at < now() AND response IS NOT NULL
                       ORDER BY expires_at LIMIT %s
                       FOR UPDATE SKIP LOCKED)""",
                (batch_size_max,),
            )
            deleted = cursor.rowcount
        deleted_total += deleted
        if deleted < batch_size_max:
            break
    return deleted_total


async def run_periodically(
    name: str, interval_seconds: float, job: Any, stop: asyncio.Event
) -> None:
    """Runs ``job()`` every ``interval_seconds`` until ``stop`` is set; logs failures."""
    while not stop.is_set():
        try:
            result = await job()
            # A run that found nothing to do is not news (the hold expiry runs every
            # second): only at DEBUG.
            _logger.log(logging.INFO if result else logging.DEBUG, "%s done: %s", name, result)
        except (psycopg.Error, PoolTimeout) as error:
            _logger.warning("%s failed, will retry: %s", name, error)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval_seconds)

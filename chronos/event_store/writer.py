"""The write path's scheduler: commands in, one group-commit transaction per batch out.

Group commit. Concurrent commands queue up; each of a few *lanes* (one PostgreSQL
connection each) takes everything queued (up to ``batch_size_max``) and runs it in one
transaction. Every command keeps its own validation, decision, answer and idempotency
record: a rejected command writes nothing and does not disturb the others, and the
transaction either commits all accepted commands of the batch or none. One fsync then
covers many commands.

This module queues, batches and answers; :mod:`chronos.event_store.committer` runs a
batch (with its retries). What a batch decides is
:mod:`chronos.event_store.decisions` (pure); the transaction's I/O is
:mod:`chronos.event_store.pipeline`; its SQL is :mod:`chronos.event_store.sql`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Sequence
from datetime import datetime

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from chronos.domain.commands import Command
from chronos.errors import ChronosError
from chronos.event_store import entries, holds_store
from chronos.event_store.committer import BatchCommitter, PendingCommand
from chronos.event_store.connections import writer_pool
from chronos.event_store.context import CommandContext
from chronos.event_store.errors import (
    CommitOutcomeUnknown,
    StoreFailure,
    StoreUnavailable,
    is_server_failure,
    not_applied,
    unavailable,
)
from chronos.event_store.ids import random_uuid
from chronos.event_store.results import CommandResult
from chronos.event_store.settings import WriterSettings
from chronos.event_store.sql import NOTIFY_CHANNEL

# The names other modules import from here (the writer's public interface).
__all__ = [
    "NOTIFY_CHANNEL",
    "CommandContext",
    "CommitOutcomeUnknown",
    "LedgerWriter",
    "StoreFailure",
    "StoreUnavailable",
    "WriterSettings",
    "random_uuid",
    "writer_pool",
]

_logger = logging.getLogger(__name__)


class LedgerWriter:
    """Runs commands against the event store with group commit.

    Args:
        pool: From :func:`writer_pool`; the writer uses at most ``settings.lanes``
            connections.
        settings: Limits and names.
        new_id: Id generator (entry and event ids); injected so tests control it.
        clock: The ledger's time for hold timeouts; None (production) for the
            database's. Injected so tests control when a hold is due.
    """

    def __init__(
        self,
        pool: AsyncConnectionPool,
        settings: WriterSettings,
        *,
        new_id: Callable[[], str] = random_uuid,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        assert settings.lanes >= 1 and settings.batch_size_max >= 1
        self._settings = settings
        self._pool = pool
        self._queue: asyncio.Queue[list[PendingCommand]] = asyncio.Queue()
        self._lanes: list[asyncio.Task[None]] = []
        self._closing = False
        self._units = itertools.count()
        self._committer = BatchCommitter(
            pool,
            settings,
            new_id=new_id,
            defer=lambda pending: self._queue.put_nowait([pending]),
            clock=clock,
        )

    def start(self) -> None:
        """Starts the lanes; commands are accepted from now on."""
        assert not self._lanes, "writer started twice"
        self._lanes = [
            asyncio.create_task(self._run_lane(), name=f"ledger-writer-lane-{index}")
            for index in range(self._settings.lanes)
        ]

    async def close(self) -> None:
        """Finishes every queued command, then stops the lanes."""
        self._closing = True
        await self._queue.join()
        for lane in self._lanes:
            lane.cancel()
        await asyncio.gather(*self._lanes, return_exceptions=True)
        self._lanes = []

    async def hold_accounts(self, pending_id: str) -> tuple[str, str] | None:
        """A hold's (from, to) accounts, which never change; None for an unknown hold.

        Raises:
            StoreUnavailable: the database cannot be read.
        """
        try:
            async with self._pool.connection(
                timeout=self._settings.connection_timeout_seconds
            ) as conn:
                return await holds_store.hold_accounts(conn, pending_id)
        except (psycopg.Error, PoolTimeout) as error:
            raise unavailable(error) from error

    async def execute(
        self, command: Command, payload_hash: bytes, context: CommandContext
    ) -> CommandResult:
        """Runs one validated command; returns its (possibly replayed) result.

        Raises:
            Rejection: a ledger rule, idempotency-key reuse, or exhausted retries.
            StoreUnavailable: the database is unreachable.
        """
        (item,) = await self._with_originals([(command, payload_hash, context)])
        (future,) = self._enqueue([item])
        return await future

    async def _with_originals(
        self, items: Sequence[tuple[Command, bytes, CommandContext]]
    ) -> list[tuple[Command, bytes, CommandContext]]:
        """The items, each ReverseEntry with the lines of the entry it names (none when
        no entry has that id), read before the commands are queued: a posted entry's
        lines never change, and the accounts a reversal locks are the accounts of those
        lines. Two reversals of one entry in a batch carry the same lines; the second
        is then refused as ENTRY_ALREADY_REVERSED by the batch's decision.

        Raises:
            StoreUnavailable: the database is unreachable.
        """
        entry_ids = entries.entries_named(command for command, _, _ in items)
        if not entry_ids:
            return list(items)
        timeout_seconds = self._settings.connection_timeout_seconds
        try:
            async with self._pool.connection(timeout=timeout_seconds) as conn:
                originals = {
                    entry_id: await entries.read_entry(conn, entry_id) for entry_id in entry_ids
                }
        except (psycopg.OperationalError, PoolTimeout) as error:
            raise unavailable(error) from error
        return [
            (entries.with_original(command, originals), payload_hash, context)
            for command, payload_hash, context in items
        ]

    async def execute_in_order(
        self, items: Sequence[tuple[Command, bytes, CommandContext]]
    ) -> list[CommandResult | ChronosError]:
        """Runs validated commands in the given order; one outcome per command.

        Each command keeps its own decision, answer and idempotency record; they are not
        atomic together, and a command the ledger rejects (e.g. INSUFFICIENT_FUNDS) does
        not stop the others. A chunk of up to ``batch_size_max`` commands goes into one
        transaction (decided in order, each against the state the ones before it left);
        the next chunk is queued only after the previous one committed, so order holds
        across chunks too. The first command that fails for a server reason (see
        :func:`~chronos.event_store.errors.is_server_failure`) stops the batch: every
        command after it answers NOT_APPLIED, so that none lands before a command it
        followed.

        Returns:
            Per command its result, or the error :meth:`execute` would have raised
            (Rejection, StoreUnavailable or StoreFailure).
        """
        try:
            items = await self._with_originals(items)
        except StoreUnavailable as error:  # nothing was queued: nothing is run
            return [error for _ in items]
        outcomes: list[CommandResult | ChronosError] = []
        chunk_size = self._settings.batch_size_max
        for start in range(0, len(items), chunk_size):
            chunk = items[start : start + chunk_size]
            try:
                futures = self._enqueue(chunk)
            except StoreUnavailable as error:  # shutting down: the rest is not run
                outcomes.extend(error for _ in items[start:])
                break
            for outcome in await asyncio.gather(*futures, return_exceptions=True):
                if isinstance(outcome, CommandResult | ChronosError):
                    outcomes.append(outcome)
                elif isinstance(outcome, BaseException):
                    raise outcome
            failed = next(
                (i for i, o in enumerate(outcomes[start:], start) if is_server_failure(o)), None
            )
            if failed is not None:
                rest = items[start + len(chunk) :]
                outcomes.extend(not_applied(items[failed][2].request_id) for _ in rest)
                break
        return outcomes

    async def execute_atomic(
        self, items: Sequence[tuple[Command, bytes, CommandContext]]
    ) -> list[CommandResult | ChronosError]:
        """Runs validated commands as one atomic batch: all commit, or none does.

        The batch is one transaction of its own (never group-committed with other
        calls), decided in order, each command seeing what the ones before it did. When
        one fails, nothing is recorded: it answers its own error and every other command
        LINKED_COMMAND_FAILED (see :mod:`chronos.event_store.atomic`). The request_ids
        must be distinct.

        Returns:
            Per command its result (a replay for a request_id already recorded), or its
            error.
        """
        assert len({context.idempotency_key for _, _, context in items}) == len(items)
        try:
            futures = self._enqueue(await self._with_originals(items), atomic=True)
        except StoreUnavailable as error:  # unreachable or shutting down: nothing is run
            return [error for _ in items]
        outcomes: list[CommandResult | ChronosError] = []
        for outcome in await asyncio.gather(*futures, return_exceptions=True):
            if not isinstance(outcome, CommandResult | ChronosError):
                raise outcome
            outcomes.append(outcome)
        return outcomes

    def _enqueue(
        self, items: Sequence[tuple[Command, bytes, CommandContext]], *, atomic: bool = False
    ) -> list[asyncio.Future[CommandResult]]:
        # One queue entry per call: a lane takes it whole, so its commands share one
        # transaction and are decided in order.
        if self._closing:
            raise StoreUnavailable("the command server is shutting down")
        assert self._lanes, "writer not started"
        loop = asyncio.get_running_loop()
        unit_id = next(self._units)
        unit = [
            PendingCommand(command, payload_hash, context, loop.create_future(), unit_id, atomic)
            for command, payload_hash, context in items
        ]
        self._queue.put_nowait(unit)
        return [pending.future for pending in unit]

    async def _run_lane(self) -> None:
        # An atomic batch is committed alone: one taken while filling a batch waits here
        # for the lane's next turn.
        held: list[PendingCommand] | None = None
        while True:
            batch = list(held if held is not None else await self._queue.get())
            held = None
            taken = 1
            # A soft limit: whole units only, so a batch may exceed it by one unit.
            while (
                not batch[0].atomic
                and len(batch) < self._settings.batch_size_max
                and not self._queue.empty()
            ):
                unit = self._queue.get_nowait()
                if unit[0].atomic:
                    held = unit
                    break
                batch.extend(unit)
                taken += 1
            try:
                await self._committer.commit(batch)
            except Exception as error:  # a lane must never die silently
                _logger.exception("writer lane failed")
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(StoreFailure(str(error)))
            finally:
                for _ in range(taken):
                    self._queue.task_done()

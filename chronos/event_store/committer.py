"""Commits one batch of the group-commit writer, retrying what is transient.

A batch is run as one transaction. A serialization failure or deadlock runs it again
after a back-off (the one retry policy, :class:`chronos.retry.Backoff`); a lock timeout
first answers CONCURRENCY_CONFLICT to the commands on an account another session still
holds and runs the rest at once; a statement the database refuses runs each command
alone, so that only the culprit fails; a lost connection fails the batch.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import psycopg
from opentelemetry import trace
from psycopg import errors as pg_errors
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from chronos import telemetry
from chronos.domain.accounts import Account
from chronos.domain.commands import Command
from chronos.domain.errors import Reason, Rejection
from chronos.domain.ledger import accounts_touched
from chronos.event_store import pipeline
from chronos.event_store.atomic import all_or_nothing
from chronos.event_store.context import CommandContext
from chronos.event_store.decisions import BatchDecision, accounts_to_lock, decide_batch
from chronos.event_store.errors import (
    CommitOutcomeUnknown,
    StoreFailure,
    is_server_failure,
    not_applied,
    unavailable,
)
from chronos.event_store.pipeline import BatchRequest, Loaded
from chronos.event_store.results import CommandResult
from chronos.event_store.settings import WriterSettings
from chronos.metrics import WRITER_BATCH_SIZE, WRITER_COMMANDS_ABANDONED

_logger = logging.getLogger(__name__)

# Errors after which the whole transaction can simply be run again. A lock timeout
# (LockNotAvailable) is not one of them: the batch is first split (see _split_off_locked).
_TRANSIENT = (
    pg_errors.SerializationFailure,
    pg_errors.DeadlockDetected,
)


@dataclass(slots=True)
class PendingCommand:
    """A queued command and the future its caller awaits."""

    command: Command
    payload_hash: bytes
    context: CommandContext
    future: asyncio.Future[CommandResult] = field(repr=False)
    # The commands of one call (a chunk of execute_in_order) share a unit: run in order,
    # none runs after one of them failed for a server reason.
    unit: int = 0
    # The unit is one atomic batch: committed alone, all of it or none of it.
    atomic: bool = False


@dataclass(frozen=True, slots=True)
class Admission:
    """How a batch's commands are sorted out before it runs (see :func:`admit`)."""

    run: list[PendingCommand]
    deferred: list[PendingCommand]
    abandoned: int


def admit(batch: Sequence[PendingCommand]) -> Admission:
    """Sorts out which commands of ``batch`` run now, in their order.

    A caller that gave up (its deadline passed, it was cancelled) before its
    command's turn gets no answer anyway: its command is left out (abandoned), so
    nothing is recorded (a retry with the request_id runs it) and a server behind on its
    queue does not spend itself on work nobody waits for. Once in a transaction, a
    command runs to the end whatever its caller does.

    A request_id twice in one batch (of the same principal: another principal's is
    another command): the later copies are deferred to the next batch, where they meet
    the first copy's committed record like any other duplicate.
    """
    seen: set[tuple[str, str]] = set()
    run: list[PendingCommand] = []
    deferred: list[PendingCommand] = []
    abandoned = 0
    for pending in batch:
        if pending.future.cancelled():
            abandoned += 1
        elif pending.context.idempotency_key in seen:
            deferred.append(pending)
        else:
            seen.add(pending.context.idempotency_key)
            run.append(pending)
    return Admission(run, deferred, abandoned)


class _Next(enum.Enum):
    """What follows one attempt of a batch."""

    DONE = "done"  # every command that is left has its answer
    RETRY = "retry"  # at once: the commands that waited were split off
    RETRY_LATER = "retry later"  # after a back-off


class BatchCommitter:
    """Runs batches against the event store for the lanes of a :class:`LedgerWriter`.

    Args:
        pool: From :func:`~chronos.event_store.connections.writer_pool`.
        settings: Limits and names.
        new_id: Id generator (entry and event ids).
        defer: Queues a command for a later batch (a request_id's later copy).
        clock: The ledger's time for hold timeouts; None (as in production) for the
            database's, the transaction's start. Tests inject a later time to expire
            holds without waiting for them.
    """

    def __init__(
        self,
        pool: AsyncConnectionPool,
        settings: WriterSettings,
        *,
        new_id: Callable[[], str],
        defer: Callable[[PendingCommand], None],
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._pool = pool
        self._clock = clock
        self._settings = settings
        self._backoff = settings.backoff()
        self._new_id = new_id
        self._defer = defer

    def _admit(self, batch: list[PendingCommand]) -> None:
        """Leaves in ``batch`` only the commands to run now (see :func:`admit`)."""
        if batch and batch[0].atomic:
            # An atomic batch runs whole or not at all: its caller awaits every answer,
            # and its request_ids were checked to be distinct.
            if any(pending.future.cancelled() for pending in batch):
                WRITER_COMMANDS_ABANDONED.inc(len(batch))
                for pending in batch:
                    pending.future.cancel()
                batch.clear()
            return
        admission = admit(batch)
        if admission.abandoned:
            WRITER_COMMANDS_ABANDONED.inc(admission.abandoned)
        for pending in admission.deferred:
            self._defer(pending)
        batch[:] = admission.run

    async def commit(self, batch: list[PendingCommand]) -> None:
        """Runs ``batch`` (retried, split or isolated as needed) and answers its commands.

        The list is narrowed in place, to the admitted commands (see :meth:`_admit`) and
        then without those a lock timeout split off, so that a caller failing what is
        left after an unexpected error touches only the commands this call ran.
        """
        self._admit(batch)
        for attempt in itertools.count():
            if not batch:
                return
            following = await self._attempt(batch, attempt)
            if following is _Next.DONE:
                return
            if self._backoff.gives_up_after(attempt):
                break
            if following is _Next.RETRY_LATER:
                await asyncio.sleep(self._backoff.delay_seconds(attempt))
        self._fail(
            batch,
            Rejection(
                Reason.CONCURRENCY_CONFLICT,
                "The command kept conflicting with concurrent commands; retry it with the "
                "same request_id.",
            ),
        )

    async def _attempt(self, batch: list[PendingCommand], attempt: int) -> _Next:
        """Runs ``batch`` once; answers its commands unless it is to be run again."""
        try:
            outcomes = await self._transaction(batch)
        except pg_errors.LockNotAvailable as error:
            _logger.info("lock timeout (attempt %d): %s", attempt + 1, error)
            return await self._after_lock_timeout(batch)
        except _TRANSIENT as error:
            _logger.info("transient conflict (attempt %d): %s", attempt + 1, error)
            return _Next.RETRY_LATER
        except CommitOutcomeUnknown as error:
            self._fail(batch, error)
            return _Next.DONE
        except (psycopg.OperationalError, PoolTimeout) as error:
            self._fail(batch, unavailable(error))
            return _Next.DONE
        except psycopg.Error as error:
            if len(batch) > 1 and not batch[0].atomic:
                await self._isolate(batch)
                return _Next.DONE
            _logger.error("database refused a command: %s", error)
            self._fail(batch, StoreFailure(f"the ledger database refused the write: {error}"))
            return _Next.DONE
        for pending, outcome in zip(batch, outcomes, strict=True):
            if pending.future.done():
                continue
            if isinstance(outcome, CommandResult):
                pending.future.set_result(outcome)
            else:
                pending.future.set_exception(outcome)
        return _Next.DONE

    async def _after_lock_timeout(self, batch: list[PendingCommand]) -> _Next:
        """Answers the commands on accounts still locked, and says how to go on."""
        try:
            if await self._split_off_locked(batch):
                return _Next.RETRY  # the rest at once: they are not what waited
        except (psycopg.OperationalError, PoolTimeout) as error:
            self._fail(batch, unavailable(error))
            return _Next.DONE
        # Nobody holds them any more (the holder just finished): run it again.
        return _Next.RETRY_LATER

    async def _isolate(self, batch: list[PendingCommand]) -> None:
        """Runs each command alone, so that the one the database refused does not keep the
        others from committing; a command after a unit-mate that failed is not run."""
        failed: dict[int, str] = {}  # unit -> request_id of its first failed command
        for pending in batch:
            if pending.unit in failed:
                if not pending.future.done():
                    pending.future.set_exception(not_applied(failed[pending.unit]))
                continue
            await self.commit([pending])
            future = pending.future
            if future.done() and not future.cancelled() and is_server_failure(future.exception()):
                failed[pending.unit] = pending.context.request_id

    async def _split_off_locked(self, batch: list[PendingCommand]) -> bool:
        """After a lock timeout: answers CONCURRENCY_CONFLICT to every command of ``batch``
        on an account whose lock another session holds, and leaves the others in it.

        The lock statement does not say which key it waited for, so a fresh statement
        tries each one without waiting. A holder that outlasted the lock timeout is most
        likely stalled, so waiting again would only hold up every command queued behind
        this batch.

        Returns:
            Whether any command was split off (False: no key is held any more).
        """
        touched = accounts_to_lock(pending.command for pending in batch)
        async with self._pool.connection(timeout=self._settings.connection_timeout_seconds) as conn:
            locked = await pipeline.held_locks(conn, touched)
        if not locked:
            return False
        refused: dict[int, str] = {}  # unit -> request_id of its first refused command
        errors: list[Rejection | None] = []
        for pending in batch:
            held = sorted(locked.intersection(accounts_touched(pending.command)))
            error: Rejection | None = None
            if pending.unit in refused:
                error = not_applied(refused[pending.unit])
            elif held:
                refused[pending.unit] = pending.context.request_id
                error = _locked_by_another(held)
            errors.append(error)
        if batch[0].atomic and refused:
            # An atomic batch runs alone: the command that waited fails, and with it all.
            errors = all_or_nothing(errors) or errors
        kept: list[PendingCommand] = []
        for pending, error in zip(batch, errors, strict=True):
            if error is None:
                kept.append(pending)
            elif not pending.future.done():
                pending.future.set_exception(error)
        batch[:] = kept
        return True

    @staticmethod
    def _fail(batch: list[PendingCommand], error: Exception) -> None:
        for pending in batch:
            if not pending.future.done():
                pending.future.set_exception(error)

    async def _transaction(self, batch: list[PendingCommand]) -> list[CommandResult | Rejection]:
        WRITER_BATCH_SIZE.observe(len(batch))
        # One span per traced command, each covering this shared transaction; the events
        # carry the span's traceparent so the outbox publish continues from it.
        spans = [_start_span(pending.context, len(batch)) for pending in batch]
        requests = [
            BatchRequest(
                command=pending.command,
                payload_hash=pending.payload_hash,
                context=pending.context,
                traceparent=telemetry.traceparent_of(span) if span is not None else "",
            )
            for pending, span in zip(batch, spans, strict=True)
        ]
        settings = self._settings
        try:
            async with self._pool.connection(timeout=settings.connection_timeout_seconds) as conn:
                return await pipeline.run_transaction(
                    conn,
                    requests,
                    decide=self._decide,
                    topic=settings.topic,
                    idempotency_retention_seconds=settings.idempotency_retention_seconds,
                    atomic=batch[0].atomic,
                )
        finally:
            for span in spans:
                if span is not None:
                    span.end()

    def _decide(
        self,
        commands: Sequence[Command | None],
        accounts: Mapping[str, Account | None],
        loaded: Loaded,
    ) -> BatchDecision:
        return decide_batch(
            commands,
            accounts,
            self._new_id,
            holds=loaded.holds,
            now=loaded.now if self._clock is None or loaded.now is None else self._clock(),
            reversed_by=loaded.reversed_by,
        )


def _locked_by_another(held: list[str]) -> Rejection:
    return Rejection(
        Reason.CONCURRENCY_CONFLICT,
        f"Another transaction that has not finished holds the lock of "
        f"account {', '.join(held)}; nothing was recorded. Retry with the "
        "same request_id.",
        metadata={"account_id": held[0]},
    )


def _start_span(context: CommandContext, batch_size: int) -> trace.Span | None:
    parent = telemetry.context_from_traceparent(context.traceparent)
    if parent is None:
        return None
    attributes: dict[str, str | int] = {
        "db.system": "postgresql",
        "chronos.batch_commands": batch_size,
    }
    if context.principal:
        attributes[telemetry.SPAN_ENDUSER_ID] = context.principal
    return telemetry.tracer(__name__).start_span(
        "postgres.transaction", context=parent, attributes=attributes
    )

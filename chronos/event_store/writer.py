"""The write path: commands in, events + outbox rows + idempotency records out, atomically.

Group commit. Concurrent commands queue up; each of a few *lanes* (one PostgreSQL
connection each) takes everything queued (up to ``batch_size_max``) and runs it in one
transaction. Every command keeps its own validation, decision, answer and idempotency
record: a rejected command writes nothing and does not disturb the others, and the
transaction either commits all accepted commands of the batch or none. One fsync then
covers many commands, which is how the ledger beats one-transaction-per-transfer SQL.

Inside the transaction, locks are always taken in the same global order, so two
transactions can wait on each other but never in a cycle (no deadlock on simultaneous
A→B and B→A transfers):

1. idempotency placeholders, sorted by request_id (``INSERT .. ON CONFLICT DO NOTHING``
   waits for a concurrent duplicate to finish, so duplicates resolve to one effect);
2. advisory locks on every touched account, sorted by key (they also cover accounts
   that do not exist yet, which a row lock could not);
3. the ``ledger_head`` row, last, to take gapless positions in commit order.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import logging
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import psycopg
from opentelemetry import trace
from psycopg import errors as pg_errors
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from chronos import telemetry
from chronos.domain.commands import Command
from chronos.domain.errors import Reason, Rejection
from chronos.domain.events import AccountKind, DomainEvent
from chronos.domain.ledger import Account, AccountStatus, accounts_touched, decide, evolve
from chronos.errors import ChronosError
from chronos.event_store import mapper
from chronos.event_store.results import AccountBalance, CommandResult
from chronos.event_store.sessions import SessionBounds
from chronos.metrics import WRITER_BATCH_SIZE, WRITER_COMMANDS_ABANDONED
from chronos.outbox import contract

_logger = logging.getLogger(__name__)

# The channel the outbox poller LISTENs on.
NOTIFY_CHANNEL = "chronos_outbox"

# Errors after which the whole transaction can simply be run again. A lock timeout
# (LockNotAvailable) is not one of them: the batch is first split (see _split_off_locked).
_TRANSIENT = (
    pg_errors.SerializationFailure,
    pg_errors.DeadlockDetected,
)

# The advisory lock key of an account id ``a`` (its canonical text), the same in the
# writer's lock statement and in the probe of who holds it.
_LOCK_KEY = "hashtextextended(a, 0)"

# Every statement of the writer finds a batch's rows by primary key (see writer_pool).
_PLANNER_OPTIONS = "-c enable_seqscan=off -c enable_hashjoin=off -c enable_mergejoin=off"


class _RandomPool:
    """Random bytes from the OS, fetched many ids' worth at a time.

    os.urandom releases the GIL; under load every release let another thread take it
    and the event loop waited to get it back (py-spy: a tenth of the writer's wall time
    in random_uuid with one call per id). A forked child empties its copy of the pool,
    so that no two processes hand out the same bytes.
    """

    _CHUNK_BYTES = 16 * 256

    def __init__(self) -> None:
        self._pool = b""
        self._offset = 0
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._pool, self._offset = b"", 0

    def take16_hex(self) -> str:
        if self._offset + 16 > len(self._pool):
            self._pool, self._offset = os.urandom(self._CHUNK_BYTES), 0
        start = self._offset
        self._offset = start + 16
        return self._pool[start : start + 16].hex()


_RANDOM = _RandomPool()


def random_uuid() -> str:
    """A random (version 4) UUID in canonical text form, like ``str(uuid.uuid4())`` at
    a fraction of the cost: two ids per event made uuid4 a visible share of the writer."""
    digits = _RANDOM.take16_hex()
    variant = "89ab"[int(digits[16], 16) & 3]
    return f"{digits[:8]}-{digits[8:12]}-4{digits[13:16]}-{variant}{digits[17:20]}-{digits[20:]}"


class StoreUnavailable(ChronosError):
    """The database could not be reached or failed mid-transaction; nothing committed
    that the caller can rely on (a retry with the same request_id is safe)."""


class CommitOutcomeUnknown(StoreUnavailable):
    """The connection was lost after the COMMIT was sent and before its answer came: the
    commands may or may not have been recorded. A retry with the same request_id returns
    the stored answer if they were, and applies them once if not."""


class StoreFailure(ChronosError):
    """The database refused a write for a reason that is not the client's (a bug)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandContext:
    """Who asked, stored as event metadata for tracing and audit."""

    request_id: str
    correlation_id: str = ""
    causation_id: str = ""
    traceparent: str = ""

    def metadata(self) -> dict[str, str]:
        values = {
            "request_id": self.request_id,
            "correlation_id": self.correlation_id or self.request_id,
            "causation_id": self.causation_id or self.request_id,
            "traceparent": self.traceparent,
        }
        return {key: value for key, value in values.items() if value}


@dataclass(frozen=True, slots=True, kw_only=True)
class WriterSettings:
    topic: str = contract.DEFAULT_TOPIC
    # One lane per process measured best (bench, 2 processes): concurrent transactions
    # of one process mostly wait on each other's account locks, and one lane makes
    # fewer, larger transactions (TransferFunds 629 -> 719/s; batches 4,439 -> 4,957/s).
    lanes: int = 1
    batch_size_max: int = 256
    retries_max: int = 5
    retry_backoff_seconds_max: float = 0.05
    idempotency_retention_seconds: int = 24 * 3600
    connection_timeout_seconds: float = 5.0


@dataclass(slots=True)
class _Pending:
    command: Command
    payload_hash: bytes
    context: CommandContext
    future: asyncio.Future[CommandResult] = field(repr=False)
    # The commands of one call (a chunk of execute_in_order) share a unit: run in order,
    # none runs after one of them failed for a server reason.
    unit: int = 0


@dataclass(slots=True)
class _NewEvent:
    event: DomainEvent
    stream_id: str
    stream_version: int
    event_id: str
    # The command's metadata as JSON text, shared by all its events.
    metadata_json: str


def writer_pool(
    dsn: str,
    *,
    min_size: int,
    max_size: int,
    name: str | None = None,
    application_name: str = "",
    bounds: SessionBounds | None = None,
) -> AsyncConnectionPool:
    """A pool (not yet open) of the connections :class:`LedgerWriter` needs: autocommit,
    because the writer sends BEGIN and COMMIT itself, inside a pipeline; a planner that
    only looks rows up by key; and ``bounds`` (by default ``SessionBounds()``) on every
    wait, so that a stalled peer holding an account's lock costs the commands on that
    account a lock timeout instead of holding up the whole lane.

    Every statement of the writer finds a batch's rows by primary key. With statistics
    taken while a table was small (a new ledger, before autoanalyze catches up), the
    planner chose to scan the whole idempotency table into a hash join once per commit,
    and its prepared plan kept doing so as the table grew (auto_explain: "Seq Scan on
    idempotency (rows=769)" with tens of thousands of rows in it; PostgreSQL spent 4 ms
    of CPU per transaction at 8 transfers in flight).
    """
    kwargs: dict[str, Any] = {
        "autocommit": True,
        **(bounds or SessionBounds()).connection_kwargs(extra_options=_PLANNER_OPTIONS),
    }
    if application_name:
        kwargs["application_name"] = application_name
    return AsyncConnectionPool(
        dsn, min_size=min_size, max_size=max_size, open=False, name=name, kwargs=kwargs
    )


class LedgerWriter:
    """Runs commands against the event store with group commit.

    Args:
        pool: From :func:`writer_pool`; the writer uses at most ``settings.lanes``
            connections.
        settings: Limits and names.
        new_id: Id generator (entry and event ids); injected so tests control it.
    """

    def __init__(
        self,
        pool: AsyncConnectionPool,
        settings: WriterSettings,
        *,
        new_id: Callable[[], str] = random_uuid,
    ) -> None:
        assert settings.lanes >= 1 and settings.batch_size_max >= 1
        self._pool = pool
        self._settings = settings
        self._new_id = new_id
        self._queue: asyncio.Queue[list[_Pending]] = asyncio.Queue()
        self._lanes: list[asyncio.Task[None]] = []
        self._closing = False
        self._units = itertools.count()

    def start(self) -> None:
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

    async def execute(
        self, command: Command, payload_hash: bytes, context: CommandContext
    ) -> CommandResult:
        """Runs one validated command; returns its (possibly replayed) result.

        Raises:
            Rejection: a ledger rule, idempotency-key reuse, or exhausted retries.
            StoreUnavailable: the database is unreachable.
        """
        (future,) = self._enqueue([(command, payload_hash, context)])
        return await future

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
        :func:`_is_server_failure`) stops the batch: every command after it answers
        NOT_APPLIED, so that none lands before a command it followed.

        Returns:
            Per command its result, or the error :meth:`execute` would have raised
            (Rejection, StoreUnavailable or StoreFailure).
        """
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
                (i for i, o in enumerate(outcomes[start:], start) if _is_server_failure(o)), None
            )
            if failed is not None:
                rest = items[start + len(chunk) :]
                outcomes.extend(_not_applied(items[failed][2].request_id) for _ in rest)
                break
        return outcomes

    def _enqueue(
        self, items: Sequence[tuple[Command, bytes, CommandContext]]
    ) -> list[asyncio.Future[CommandResult]]:
        # One queue entry per call: a lane takes it whole, so its commands share one
        # transaction and are decided in order.
        if self._closing:
            raise StoreUnavailable("the command server is shutting down")
        assert self._lanes, "writer not started"
        loop = asyncio.get_running_loop()
        unit_id = next(self._units)
        unit = [
            _Pending(command, payload_hash, context, loop.create_future(), unit_id)
            for command, payload_hash, context in items
        ]
        self._queue.put_nowait(unit)
        return [pending.future for pending in unit]

    async def _run_lane(self) -> None:
        while True:
            batch = list(await self._queue.get())
            taken = 1
            # A soft limit: whole units only, so a batch may exceed it by one unit.
            while len(batch) < self._settings.batch_size_max and not self._queue.empty():
                batch.extend(self._queue.get_nowait())
                taken += 1
            try:
                await self._commit_with_retries(batch)
            except Exception as error:  # a lane must never die silently
                _logger.exception("writer lane failed")
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(StoreFailure(str(error)))
            finally:
                for _ in range(taken):
                    self._queue.task_done()

    async def _commit_with_retries(self, batch: list[_Pending]) -> None:
        # A caller that gave up (its deadline passed, it was cancelled) before its
        # command's turn gets no answer anyway: its command is left out, so nothing is
        # recorded (a retry with the request_id runs it) and a server behind on its queue
        # does not spend itself on work nobody waits for. Once in a transaction, a
        # command runs to the end whatever its caller does.
        # A request_id twice in one batch: the later copies wait for the next batch,
        # where they meet the first copy's committed record like any other duplicate.
        seen: set[str] = set()
        unique: list[_Pending] = []
        for pending in batch:
            if pending.future.cancelled():
                WRITER_COMMANDS_ABANDONED.inc()
            elif pending.context.request_id in seen:
                self._queue.put_nowait([pending])
            else:
                seen.add(pending.context.request_id)
                unique.append(pending)
        batch[:] = unique
        if not batch:
            return

        for attempt in range(self._settings.retries_max + 1):
            try:
                outcomes = await self._transaction(batch)
            except pg_errors.LockNotAvailable as error:
                _logger.info("lock timeout (attempt %d): %s", attempt + 1, error)
                if not await self._after_lock_timeout(batch, attempt):
                    return
                continue
            except _TRANSIENT as error:
                _logger.info("transient conflict (attempt %d): %s", attempt + 1, error)
                await self._back_off(attempt)
                continue
            except CommitOutcomeUnknown as error:
                self._fail(batch, error)
                return
            except (psycopg.OperationalError, PoolTimeout) as error:
                self._fail(batch, _unavailable(error))
                return
            except psycopg.Error as error:
                if len(batch) > 1:
                    await self._isolate(batch)
                    return
                _logger.error("database refused a command: %s", error)
                self._fail(batch, StoreFailure(f"the ledger database refused the write: {error}"))
                return
            for pending, outcome in zip(batch, outcomes, strict=True):
                if pending.future.done():
                    continue
                if isinstance(outcome, CommandResult):
                    pending.future.set_result(outcome)
                else:
                    pending.future.set_exception(outcome)
            return
        self._fail(
            batch,
            Rejection(
                Reason.CONCURRENCY_CONFLICT,
                "The command kept conflicting with concurrent commands; retry it with the "
                "same request_id.",
            ),
        )

    async def _after_lock_timeout(self, batch: list[_Pending], attempt: int) -> bool:
        """Answers the commands on accounts still locked; returns whether any are left."""
        try:
            if await self._split_off_locked(batch):
                return bool(batch)  # the rest at once: they are not what waited
        except (psycopg.OperationalError, PoolTimeout) as error:
            self._fail(batch, _unavailable(error))
            return False
        # Nobody holds them any more (the holder just finished): run it again.
        await self._back_off(attempt)
        return True

    async def _isolate(self, batch: list[_Pending]) -> None:
        """Runs each command alone, so that the one the database refused does not keep the
        others from committing; a command after a unit-mate that failed is not run."""
        failed: dict[int, str] = {}  # unit -> request_id of its first failed command
        for pending in batch:
            if pending.unit in failed:
                if not pending.future.done():
                    pending.future.set_exception(_not_applied(failed[pending.unit]))
                continue
            await self._commit_with_retries([pending])
            future = pending.future
            if future.done() and not future.cancelled() and _is_server_failure(future.exception()):
                failed[pending.unit] = pending.context.request_id

    async def _back_off(self, attempt: int) -> None:
        await asyncio.sleep(
            random.uniform(0, self._settings.retry_backoff_seconds_max * (attempt + 1))
        )

    async def _split_off_locked(self, batch: list[_Pending]) -> bool:
        """After a lock timeout: answers CONCURRENCY_CONFLICT to every command of ``batch``
        on an account whose lock another session holds, and leaves the others in it.

        The lock statement does not say which key it waited for, so a fresh statement
        tries each one without waiting (the keys are released as it ends). A holder
        that outlasted the lock timeout is most likely stalled, so waiting again would
        only hold up every command queued behind this batch.

        Returns:
            Whether any command was split off (False: no key is held any more).
        """
        touched = _accounts_of(batch)
        async with self._pool.connection(timeout=self._settings.connection_timeout_seconds) as conn:
            cursor = await conn.execute(
                f"""SELECT a FROM jsonb_array_elements_text(%s::jsonb) AS a
                    WHERE NOT pg_try_advisory_xact_lock({_LOCK_KEY})""",
                (_json(touched),),
            )
            locked = {str(row[0]) for row in await cursor.fetchall()}
        if not locked:
            return False
        refused: dict[int, str] = {}  # unit -> request_id of its first refused command
        kept: list[_Pending] = []
        for pending in batch:
            held = sorted(locked.intersection(accounts_touched(pending.command)))
            error: Rejection | None = None
            if pending.unit in refused:
                error = _not_applied(refused[pending.unit])
            elif held:
                refused[pending.unit] = pending.context.request_id
                error = Rejection(
                    Reason.CONCURRENCY_CONFLICT,
                    f"Another transaction that has not finished holds the lock of "
                    f"account {', '.join(held)}; nothing was recorded. Retry with the "
                    "same request_id.",
                    metadata={"account_id": held[0]},
                )
            if error is None:
                kept.append(pending)
            elif not pending.future.done():
                pending.future.set_exception(error)
        batch[:] = kept
        return True

    @staticmethod
    def _fail(batch: list[_Pending], error: Exception) -> None:
        for pending in batch:
            if not pending.future.done():
                pending.future.set_exception(error)

    async def _transaction(self, batch: list[_Pending]) -> list[CommandResult | Rejection]:
        settings = self._settings
        WRITER_BATCH_SIZE.observe(len(batch))
        # One span per traced command, each covering this shared transaction; the events
        # carry the span's traceparent so the outbox publish continues from it.
        spans = [_start_span(pending.context.traceparent, len(batch)) for pending in batch]
        traceparents = [
            telemetry.traceparent_of(span) if span is not None else "" for span in spans
        ]
        try:
            async with self._pool.connection(timeout=settings.connection_timeout_seconds) as conn:
                return await self._transaction_on(conn, batch, traceparents)
        finally:
            for span in spans:
                if span is not None:
                    span.end()

    async def _transaction_on(
        self, conn: psycopg.AsyncConnection[Any], batch: list[_Pending], traceparents: list[str]
    ) -> list[CommandResult | Rejection]:
        assert conn.autocommit, "the writer sends BEGIN and COMMIT itself: use writer_pool()"
        commit_sent = False
        try:
            # Two round trips per batch: BEGIN with the reads, then every write with the
            # COMMIT, sent by the pipeline's exit. psycopg's transaction() would add a
            # round trip at BEGIN and another at COMMIT, and on a busy machine each round
            # trip is also a wait for a core.
            async with conn.pipeline():
                outcomes, results, appended = await self._pipelined(conn, batch, traceparents)
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
        assert len(final) == len(batch), "every command must have an outcome"
        return final

    async def _pipelined(
        self, conn: psycopg.AsyncConnection[Any], batch: list[_Pending], traceparents: list[str]
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
        settings = self._settings
        outcomes: list[CommandResult | Rejection | None] = [None] * len(batch)
        touched = _accounts_of(batch)
        # Round trip 1. The server runs the statements one after the other, so the
        # accounts are read only once their locks are held, and read-committed gives
        # that last statement a snapshot of its own.
        await conn.execute("BEGIN")
        # 1. Idempotency placeholders, sorted, so concurrent duplicates serialize.
        order = sorted(range(len(batch)), key=lambda i: batch[i].context.request_id)
        placed = await conn.execute(
            """INSERT INTO idempotency
                   (request_id, command_type, payload_hash, created_at, expires_at)
               SELECT u.e->>0, u.e->>1, decode(u.e->>2, 'hex'), now(),
                      now() + make_interval(secs => %s)
               FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS u(e, n)
               ORDER BY u.n
               ON CONFLICT (request_id) DO NOTHING
               RETURNING request_id""",
            (
                settings.idempotency_retention_seconds,
                _json(
                    [
                        (
                            batch[i].context.request_id,
                            type(batch[i].command).__name__,
                            batch[i].payload_hash.hex(),
                        )
                        for i in order
                    ]
                ),
            ),
        )
        # 2. Lock every touched account (existing or not), in one global order, then read
        # them. Duplicates' accounts are locked too: the answers are only known after this
        # round trip, and an extra lock changes nothing.
        await conn.execute(
            f"""SELECT pg_advisory_xact_lock(k) FROM (
                   SELECT DISTINCT {_LOCK_KEY} AS k
                   FROM jsonb_array_elements_text(%s::jsonb) AS a ORDER BY k) AS keys""",
            (_json(touched),),
        )
        loaded = await conn.execute(_LOAD_ACCOUNTS, (_uuid_array(touched),))
        fresh = {row[0] for row in await placed.fetchall()}  # sends round trip 1
        accounts = _accounts_from_rows(touched, await loaded.fetchall())
        duplicates = [i for i, p in enumerate(batch) if p.context.request_id not in fresh]
        if duplicates:
            await self._resolve_duplicates(conn, batch, duplicates, outcomes)

        # 3. Decide each command against the state left by the ones before it.
        new_events: list[_NewEvent] = []
        event_ranges: dict[int, tuple[int, int]] = {}
        decisions: dict[int, tuple[str, str, tuple[AccountBalance, ...]]] = {}
        rejected: list[str] = []
        for i in range(len(batch)):
            if outcomes[i] is not None:
                continue
            pending = batch[i]
            try:
                decision = decide(pending.command, accounts, self._new_id)
            except Rejection as rejection:
                outcomes[i] = rejection
                rejected.append(pending.context.request_id)
                continue
            start = len(new_events)
            metadata = pending.context.metadata()
            if traceparents[i]:
                metadata["traceparent"] = traceparents[i]
            metadata_json = _json(metadata)
            for event in decision.events:
                stream_id = event.account_id
                current = accounts.get(stream_id)
                version = 1 if current is None else current.version + 1
                accounts[stream_id] = evolve(current, event, version)
                new_events.append(
                    _NewEvent(event, stream_id, version, self._new_id(), metadata_json)
                )
            event_ranges[i] = (start, len(new_events))
            touched_here = dict.fromkeys(e.stream_id for e in new_events[start:])
            # The balances right after this command's own events: a later command of the
            # batch may move the same accounts again.
            balances_here = tuple(_balance(accounts[a]) for a in touched_here)
            decisions[i] = (decision.account_id, decision.entry_id, balances_here)

        # Round trip 2: every write, then (queued by the caller) the COMMIT.
        if rejected:
            # Rejections write nothing: the same request_id may be retried later.
            await conn.execute(
                "DELETE FROM idempotency WHERE request_id = ANY(%s::text[])", (rejected,)
            )
        appended: psycopg.AsyncCursor[Any] | None = None
        pending_results: dict[int, CommandResult] = {}
        if new_events:
            # 4. Account state first, while only the touched accounts are locked.
            changed = dict.fromkeys(e.stream_id for e in new_events)
            opened = {e.stream_id for e in new_events if e.stream_version == 1}
            await self._save_accounts(conn, [_present(accounts[a]) for a in changed], opened)
            for i, (start, end) in event_ranges.items():
                account_id, entry_id, balances_here = decisions[i]
                pending_results[i] = CommandResult(
                    position=end,  # ordinal in this batch until the head assigns positions
                    account_id=account_id,
                    entry_id=entry_id,
                    balances=balances_here,
                    event_ids=tuple(e.event_id for e in new_events[start:end]),
                )
            # 5. Positions last, in one statement with the events, outbox rows and answers:
            # the head row lock is held from here to the COMMIT that follows it in the
            # same round trip, so concurrent transactions queue on it for a moment only.
            appended = await conn.execute(
                _APPEND,
                {
                    "count": len(new_events),
                    "topic": self._settings.topic,
                    "events": _events_json(new_events),
                    "answers": _json(
                        [
                            (batch[i].context.request_id, r.to_dict(), r.position)
                            for i, r in pending_results.items()
                        ]
                    ),
                },
            )
        return outcomes, pending_results, appended

    async def _resolve_duplicates(
        self,
        conn: psycopg.AsyncConnection[Any],
        batch: list[_Pending],
        duplicates: list[int],
        outcomes: list[CommandResult | Rejection | None],
    ) -> None:
        cursor = await conn.execute(
            "SELECT request_id, payload_hash, response FROM idempotency "
            "WHERE request_id = ANY(%s::text[])",
            ([batch[i].context.request_id for i in duplicates],),
        )
        stored = {row[0]: (bytes(row[1]), row[2]) for row in await cursor.fetchall()}
        for i in duplicates:
            pending = batch[i]
            record = stored.get(pending.context.request_id)
            if record is None or record[1] is None:
                # The first copy's record vanished (expired or rejected) between our
                # insert and this read: treat as a conflict and let the retry decide.
                raise pg_errors.SerializationFailure("idempotency record changed concurrently")
            payload_hash, response = record
            if payload_hash != pending.payload_hash:
                outcomes[i] = Rejection(
                    Reason.IDEMPOTENCY_KEY_REUSED,
                    f"request_id {pending.context.request_id!r} was already used for a "
                    "different request; use a new request_id for a new command.",
                    metadata={"request_id": pending.context.request_id},
                )
            else:
                data = response if isinstance(response, dict) else json.loads(response)
                outcomes[i] = CommandResult.from_json(data).as_replay()

    @staticmethod
    async def _save_accounts(
        conn: psycopg.AsyncConnection[Any], accounts: list[Account], opened: set[str]
    ) -> None:
        """Queues the new state of every changed account: one INSERT of the opened ones,
        one UPDATE of the four columns that can change on the others. The rows travel as
        one JSON text each (no COPY: it cannot be pipelined)."""
        new = [a for a in accounts if a.account_id in opened]
        existing = [a for a in accounts if a.account_id not in opened]
        if new:
            await conn.execute(
                """INSERT INTO accounts (account_id, kind, owner_name, currency,
                                         overdraft_limit_minor, status, balance_minor, version,
                                         metadata, opened_at, updated_at)
                   SELECT a.account_id, a.kind, a.owner_name, a.currency,
                          a.overdraft_limit_minor, a.status, a.balance_minor, a.version,
                          a.metadata, now(), now()
                   FROM jsonb_to_recordset(%s::jsonb)
                        AS a(account_id uuid, kind text, owner_name text, currency text,
                             overdraft_limit_minor bigint, status text, balance_minor bigint,
                             version bigint, metadata jsonb)""",
                (
                    _json(
                        [
                            {
                                "account_id": a.account_id,
                                "kind": a.kind.value,
                                "owner_name": a.owner_name,
                                "currency": a.currency,
                                "overdraft_limit_minor": a.overdraft_limit_minor,
                                "status": a.status.value,
                                "balance_minor": a.balance_minor,
                                "version": a.version,
                                "metadata": dict(a.metadata),
                            }
                            for a in new
                        ]
                    ),
                ),
            )
        if existing:
            await conn.execute(
                """UPDATE accounts AS a
                   SET status = u.status, balance_minor = u.balance_minor,
                       version = u.version, updated_at = now()
                   FROM jsonb_to_recordset(%s::jsonb)
                        AS u(account_id uuid, status text, balance_minor bigint, version bigint)
                   WHERE a.account_id = u.account_id""",
                (
                    _json(
                        [
                            {
                                "account_id": a.account_id,
                                "status": a.status.value,
                                "balance_minor": a.balance_minor,
                                "version": a.version,
                            }
                            for a in existing
                        ]
                    ),
                ),
            )


# Takes the batch's positions from the head row and writes the events, their outbox rows
# and the final answers in one statement. Positions are head + ordinal, so they are
# gapless and in commit order; recorded_at never goes backwards. The events come as one
# JSON text (payloads in base64): psycopg formats array parameters element by element in
# Python, and COPY would need round trips of its own.
_APPEND = f"""
WITH staged AS MATERIALIZED (
    SELECT e.n AS ordinal, (e.v->>0)::uuid AS event_id, (e.v->>1)::uuid AS stream_id,
           (e.v->>2)::bigint AS stream_version, e.v->>3 AS event_type,
           (e.v->>4)::integer AS schema_version, decode(e.v->>5, 'base64') AS payload,
           (e.v->>6)::jsonb AS metadata
    FROM jsonb_array_elements(%(events)s::jsonb) WITH ORDINALITY AS e(v, n)
), head AS (
    UPDATE ledger_head
    SET position = position + %(count)s,
        recorded_at = greatest(recorded_at, clock_timestamp())
    WHERE id = 1
    RETURNING position - %(count)s AS base, recorded_at,
              to_char(recorded_at AT TIME ZONE 'UTC',
                      'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"') AS recorded_at_text
), appended AS (
    INSERT INTO events (position, event_id, stream_id, stream_version, event_type,
                        schema_version, payload, metadata, recorded_at)
    SELECT head.base + s.ordinal, s.event_id, s.stream_id, s.stream_version, s.event_type,
           s.schema_version, s.payload, s.metadata, head.recorded_at
    FROM staged AS s CROSS JOIN head
), outboxed AS (
    INSERT INTO outbox (position, event_id, topic, key, payload, headers, created_at)
    SELECT head.base + s.ordinal, s.event_id, %(topic)s, s.stream_id::text, s.payload,
           -- The Kafka headers (chronos.outbox.contract): the command's metadata
           -- (request_id, correlation_id, causation_id, traceparent) and the event's own.
           s.metadata || jsonb_build_object(
               '{contract.HEADER_EVENT_ID}', s.event_id::text,
               '{contract.HEADER_EVENT_TYPE}', s.event_type,
               '{contract.HEADER_SCHEMA}', '{mapper.PROTO_PACKAGE}.' || s.event_type,
               '{contract.HEADER_SCHEMA_VERSION}', s.schema_version::text,
               '{contract.HEADER_STREAM_VERSION}', s.stream_version::text,
               '{contract.HEADER_POSITION}', (head.base + s.ordinal)::text,
               '{contract.HEADER_RECORDED_AT}', head.recorded_at_text),
           head.recorded_at
    FROM staged AS s CROSS JOIN head
), answered AS (
    UPDATE idempotency AS i
    SET response = (r.e->1) || jsonb_build_object('position', head.base + (r.e->>2)::bigint)
    FROM jsonb_array_elements(%(answers)s::jsonb) AS r(e)
         CROSS JOIN head
    WHERE i.request_id = r.e->>0
)
-- Wakes the outbox poller when this transaction commits. A notifying commit takes a
-- lock that orders it among notifying commits; the ledger_head row lock, held from this
-- statement to the commit, orders the writers' commits already, so it adds no waiting.
-- (Sent after the commit instead, it cost a transaction of its own: three round trips.)
SELECT base, recorded_at, pg_notify('{NOTIFY_CHANNEL}', '') FROM head
"""


# Not the metadata: it is written once, when the account opens, and no rule reads it
# (parsing it per account was a visible cost under load).
_LOAD_ACCOUNTS = """SELECT account_id::text, kind, owner_name, currency, overdraft_limit_minor,
                           status, balance_minor, version
                    FROM accounts WHERE account_id = ANY(%s::uuid[])"""


def _accounts_from_rows(account_ids: list[str], rows: list[Any]) -> dict[str, Account | None]:
    """The write-side state of each account (None: not opened yet)."""
    accounts: dict[str, Account | None] = dict.fromkeys(account_ids)
    for account_id, kind, owner, currency, limit, status, balance, version in rows:
        accounts[str(account_id)] = Account(
            account_id=str(account_id),
            kind=AccountKind(kind),
            owner_name=str(owner),
            currency=str(currency),
            overdraft_limit_minor=int(limit),
            status=AccountStatus(status),
            balance_minor=int(balance),
            version=int(version),
        )
    return accounts


def _events_json(new_events: list[_NewEvent]) -> str:
    """The events as the JSON text ``_APPEND`` reads: one array per event."""
    rows = []
    for new in new_events:
        event_type, schema_version, payload = mapper.encode(new.event)
        rows.append(
            (
                new.event_id,
                new.stream_id,
                new.stream_version,
                event_type,
                schema_version,
                base64.b64encode(payload).decode("ascii"),
                new.metadata_json,
            )
        )
    return _json(rows)


def _accounts_of(batch: list[_Pending]) -> list[str]:
    """Every account any command of ``batch`` may touch, in the one global lock order."""
    return sorted({a for pending in batch for a in accounts_touched(pending.command)})


def _is_server_failure(outcome: object) -> bool:
    """Whether a command failed for a reason that is not the client's: the ledger did not
    decide it, so a command ordered after it must not run before it is resent."""
    if isinstance(outcome, Rejection):
        return outcome.reason in (Reason.CONCURRENCY_CONFLICT, Reason.NOT_APPLIED)
    return isinstance(outcome, StoreUnavailable | StoreFailure)


def _not_applied(failed_request_id: str) -> Rejection:
    return Rejection(
        Reason.NOT_APPLIED,
        "Not applied, to keep the batch in order: the command before it with request_id "
        f"{failed_request_id!r} failed for a reason that is not yours (see its answer). "
        "Resend the batch from that command on, with the same request_ids.",
        metadata={"request_id": failed_request_id},
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


def _unavailable(error: Exception) -> StoreUnavailable:
    return StoreUnavailable(f"the ledger database is unavailable: {error}")


def _json(value: Any) -> str:
    """Compact JSON text for a parameter. Lists go to PostgreSQL as one JSON text rather
    than as arrays: psycopg formats array parameters element by element in Python, which
    profiling showed as the writer's largest cost at high batch sizes."""
    return json.dumps(value, separators=(",", ":"))


def _uuid_array(ids: list[str]) -> str:
    """A ``uuid[]`` literal. Safe to format by hand: the ids are validated UUIDs."""
    return "{" + ",".join(ids) + "}"


def _start_span(traceparent: str, batch_size: int) -> trace.Span | None:
    parent = telemetry.context_from_traceparent(traceparent)
    if parent is None:
        return None
    return telemetry.tracer(__name__).start_span(
        "postgres.transaction",
        context=parent,
        attributes={"db.system": "postgresql", "chronos.batch_commands": batch_size},
    )


def _present(account: Account | None) -> Account:
    assert account is not None, "an account with new events must exist"
    return account


def _balance(account: Account | None) -> AccountBalance:
    account = _present(account)
    return AccountBalance(
        account_id=account.account_id,
        currency=account.currency,
        balance_minor=account.balance_minor,
        version=account.version,
    )

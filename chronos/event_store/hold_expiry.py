"""The ledger's own expiry of holds: a job in every command server.

Each run claims due holds in bounded batches and submits one ``ExpirePendingTransfer``
command per hold through the writer, so an expiry is decided, recorded and published
like any command: its own events, under its accounts' locks. Several servers run the
job at once safely:

- the claim (``FOR UPDATE SKIP LOCKED`` and a lease, ``expiry_claimed_until``) shares
  the due holds out, so two runners rarely pick the same one;
- and when they do (a lease ran out while the first was still at it), the hold's state,
  read under its accounts' locks, lets only the first expiry through, and the command's
  request_id (one per hold) makes the second a replay of the first's answer.

So each hold expires exactly once.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg_pool import AsyncConnectionPool

from chronos.domain.commands import Command, ExpirePendingTransfer
from chronos.domain.errors import Reason, Rejection
from chronos.domain.validation import fingerprint
from chronos.errors import ChronosError
from chronos.event_store.context import CommandContext
from chronos.event_store.results import CommandResult

_logger = logging.getLogger(__name__)

# The principal the ledger's own expiries are recorded as, so that an audit tells them
# from a client's void; it also scopes their idempotency records apart from clients'.
EXPIRY_PRINCIPAL = "chronos:hold-expiry"

# Claims a batch of due holds for a lease; another runner skips them meanwhile. Holds
# are due by the given time (a test's clock) or, when it is NULL, the database's; the
# lease always runs on the database's clock, which every runner shares.
CLAIM_DUE = """UPDATE pending_transfers AS p
               SET expiry_claimed_until = now() + make_interval(secs => %(lease_seconds)s)
               FROM (SELECT pending_id FROM pending_transfers
                     WHERE state = 'PENDING'
                       AND expires_at <= coalesce(%(now)s::timestamptz, now())
                       AND (expiry_claimed_until IS NULL OR expiry_claimed_until < now())
                     ORDER BY expires_at LIMIT %(limit)s
                     FOR UPDATE SKIP LOCKED) AS due
               WHERE p.pending_id = due.pending_id
               RETURNING p.pending_id::text, p.from_account_id::text, p.to_account_id::text"""

Execute = Callable[
    [Sequence[tuple[Command, bytes, CommandContext]]],
    Awaitable[list[CommandResult | ChronosError]],
]


@dataclass(frozen=True, slots=True)
class ExpiryRun:
    """What one run did: holds expired, and claimed ones another runner had expired."""

    expired: int
    already_ended: int

    def __bool__(self) -> bool:
        return bool(self.expired or self.already_ended)


def expiry_command(
    pending_id: str, from_account_id: str, to_account_id: str
) -> ExpirePendingTransfer:
    """The one expiry command of a hold: its request_id is the hold's, so a second
    runner's copy replays the first's answer."""
    return ExpirePendingTransfer(
        request_id=f"expire:{pending_id}",
        pending_id=pending_id,
        from_account_id=from_account_id,
        to_account_id=to_account_id,
    )


async def expire_due_holds(
    pool: AsyncConnectionPool[Any],
    execute: Execute,
    *,
    batch_size_max: int = 500,
    batches_max: int = 20,
    lease_seconds: float = 60.0,
    now: datetime | None = None,
) -> ExpiryRun:
    """Expires the holds whose timeout passed, ``batch_size_max`` at a time, at most
    ``batches_max`` batches per run (the next run takes the rest).

    Args:
        pool: Connections for the claim (short autocommit transactions).
        execute: Runs commands in order (``LedgerWriter.execute_in_order``).
        now: The time holds are due by; None (production) for the database's clock.
            A test passes a later time, with a writer on the same clock (its
            ``clock``), to expire holds without waiting for their timeouts.
    """
    expired = already_ended = 0
    for _ in range(batches_max):
        async with pool.connection() as conn:
            cursor = await conn.execute(
                CLAIM_DUE, {"lease_seconds": lease_seconds, "limit": batch_size_max, "now": now}
            )
            claimed = await cursor.fetchall()
        if not claimed:
            break
        commands = [expiry_command(str(a), str(b), str(c)) for a, b, c in claimed]
        outcomes = await execute(
            [
                (
                    command,
                    fingerprint(command),
                    CommandContext(request_id=command.request_id, principal=EXPIRY_PRINCIPAL),
                )
                for command in commands
            ]
        )
        for command, outcome in zip(commands, outcomes, strict=True):
            if isinstance(outcome, CommandResult):
                expired += 0 if outcome.replayed else 1
                already_ended += 1 if outcome.replayed else 0
            elif isinstance(outcome, Rejection) and outcome.reason in _ENDED:
                already_ended += 1
            else:
                # Left claimed until its lease runs out; the next run retries it.
                _logger.warning("hold %s not expired: %s", command.pending_id, outcome)
        if len(claimed) < batch_size_max:
            break
    return ExpiryRun(expired=expired, already_ended=already_ended)


# A hold posted or voided between the claim and the expiry: nothing to do.
_ENDED = frozenset({Reason.PENDING_TRANSFER_NOT_PENDING})

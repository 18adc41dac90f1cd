"""The invariants of holds and reversals, recomputed from the event store.

5. Every hold ends exactly once: each hold's events hold at most one end (posted,
   voided or expired), no end names a hold never placed, only a hold with a timeout
   expires, every hold whose timeout passed long enough ago (the run waits, bounded,
   for the command server's expiry job) has ended, the write side's row of each hold
   (``pending_transfers``) says what its events say, and every race the clients ran to
   end one hold had exactly one winner.
6. Every entry reversed at most once: the reversal lines name each entry under at most
   one reversal entry, no reversal is itself reversed, the write side's record of
   reversals (``entry_reversals``) says what the lines say, and every race the clients
   ran to reverse one entry had exactly one winner.

The fold (:class:`HoldFold`) and the checks are pure, so unit tests feed them
hand-made events that break each rule; the reads of PostgreSQL are apart below.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg

from chronos.domain.commands import Side
from chronos.domain.events import (
    DomainEvent,
    EntryReversed,
    HoldLine,
    PendingTransferCreated,
    PendingTransferExpired,
    PendingTransferPosted,
)
from chronos_dev.loadtest.check_result import CheckResult, Problems
from chronos_dev.loadtest.outcomes import Outcomes

PENDING = "PENDING"
EXPIRY_POLL_SECONDS = 0.2


@dataclass(slots=True)
class FoldedHold:
    """A hold as its events (on its from account's stream) tell it."""

    amount_minor: int
    expires_at: datetime | None
    # The end states in event order: ["POSTED"], ["EXPIRED"]... (more than one: a bug).
    ends: list[str] = field(default_factory=list)
    posted_minor: int = 0

    @property
    def state(self) -> str:
        return self.ends[0] if self.ends else PENDING


@dataclass(slots=True)
class HoldFold:
    """Holds and reversals folded from the events in position order."""

    holds: dict[str, FoldedHold] = field(default_factory=dict)
    # Ends of holds that were never placed: "position N: pending_id".
    orphan_ends: list[str] = field(default_factory=list)
    # Reversed entry id -> the ids of the reversal entries that name it.
    reversals: dict[str, set[str]] = field(default_factory=dict)
    reversal_entry_ids: set[str] = field(default_factory=set)
    # Reversals of a reversal: "position N: entry".
    reversed_reversals: list[str] = field(default_factory=list)

    def apply(self, position: int, event: DomainEvent) -> None:
        """Folds one event; each hold event is read on its debit side only (its credit
        twin on the to account says the same)."""
        if isinstance(event, EntryReversed):
            if event.reverses_entry_id in self.reversal_entry_ids:
                self.reversed_reversals.append(f"position {position}: {event.reverses_entry_id}")
            self.reversals.setdefault(event.reverses_entry_id, set()).add(event.entry_id)
            self.reversal_entry_ids.add(event.entry_id)
            return
        if getattr(event, "side", None) is not Side.DEBIT:
            return
        if isinstance(event, PendingTransferCreated):
            self.holds[event.pending_id] = FoldedHold(
                amount_minor=event.amount_minor, expires_at=event.expires_at
            )
            return
        if isinstance(event, HoldLine | PendingTransferPosted):
            state = _end_state(event)
            hold = self.holds.get(event.pending_id)
            if hold is None:
                self.orphan_ends.append(f"position {position}: {event.pending_id}")
                return
            hold.ends.append(state)
            if isinstance(event, PendingTransferPosted):
                hold.posted_minor = event.amount_minor


def _end_state(event: HoldLine | PendingTransferPosted) -> str:
    if isinstance(event, PendingTransferPosted):
        return "POSTED"
    return "EXPIRED" if isinstance(event, PendingTransferExpired) else "VOIDED"


def _races(problems: Problems, outcomes: Outcomes, kind: str) -> None:
    examples = [f"client race: {text}" for text in outcomes.race_violation_examples.get(kind, [])]
    problems.add_counted(outcomes.race_violations.get(kind, 0), examples)


def check_holds_end_once(
    fold: HoldFold,
    write_side: Mapping[str, tuple[str, int]],
    outcomes: Outcomes,
    *,
    due_before: datetime,
) -> CheckResult:
    """Invariant 5 (see the module docstring).

    Args:
        write_side: ``pending_id -> (state, posted_minor)`` of the write side's rows.
        due_before: A hold whose timeout passed before this must have ended.
    """
    problems = Problems()
    for text in fold.orphan_ends:
        problems.add(f"{text}: a hold ended that was never placed")
    states: dict[str, int] = {}
    for pending_id, hold in fold.holds.items():
        states[hold.state] = states.get(hold.state, 0) + 1
        if len(hold.ends) > 1:
            problems.add(f"{pending_id}: ended {len(hold.ends)} times ({', '.join(hold.ends)})")
        if "EXPIRED" in hold.ends and hold.expires_at is None:
            problems.add(f"{pending_id}: expired, yet it had no timeout")
        if not hold.ends and hold.expires_at is not None and hold.expires_at <= due_before:
            problems.add(f"{pending_id}: due at {hold.expires_at.isoformat()}, still pending")
        row = write_side.get(pending_id)
        if row != (hold.state, hold.posted_minor):
            problems.add(
                f"{pending_id}: write side (state, posted) {row}, events say "
                f"{(hold.state, hold.posted_minor)}"
            )
    for pending_id in write_side.keys() - fold.holds.keys():
        problems.add(f"{pending_id}: a write-side row without a placing event")
    _races(problems, outcomes, "hold")
    counts = ", ".join(f"{count} {state.lower()}" for state, count in sorted(states.items()))
    detail = (
        f"{len(fold.holds)} holds ({counts or 'none'}), each compared with its write-side "
        f"row; {outcomes.races.get('hold', 0)} client races to end a hold"
    )
    return problems.result("every hold ends exactly once", detail)


def check_reversed_at_most_once(
    fold: HoldFold, write_side: Mapping[str, str], outcomes: Outcomes
) -> CheckResult:
    """Invariant 6 (see the module docstring).

    Args:
        write_side: ``entry_id -> reversal_entry_id`` of the write side's rows.
    """
    problems = Problems()
    for entry_id, reversal_ids in fold.reversals.items():
        if len(reversal_ids) > 1:
            problems.add(f"{entry_id}: reversed by {len(reversal_ids)} entries")
        elif {write_side.get(entry_id)} != reversal_ids:
            problems.add(
                f"{entry_id}: reversed by {sorted(reversal_ids)}, the write side records "
                f"{write_side.get(entry_id)}"
            )
    for entry_id in write_side.keys() - fold.reversals.keys():
        problems.add(f"{entry_id}: the write side records a reversal without its lines")
    for text in fold.reversed_reversals:
        problems.add(f"{text}: a reversal was reversed")
    _races(problems, outcomes, "reversal")
    detail = (
        f"{len(fold.reversals)} entries reversed, each compared with its write-side record; "
        f"{outcomes.races.get('reversal', 0)} client races to reverse an entry"
    )
    return problems.result("every entry reversed at most once", detail)


# --- the write side -------------------------------------------------------------------


def write_side_holds(conn: psycopg.Connection[Any]) -> dict[str, tuple[str, int]]:
    """``pending_id -> (state, posted_minor)`` of every hold row."""
    rows = conn.execute(
        "SELECT pending_id::text, state, posted_minor FROM pending_transfers"
    ).fetchall()
    return {str(row[0]): (str(row[1]), int(row[2])) for row in rows}


def write_side_reversals(conn: psycopg.Connection[Any]) -> dict[str, str]:
    """``entry_id -> reversal_entry_id`` of every recorded reversal."""
    rows = conn.execute(
        "SELECT entry_id::text, reversal_entry_id::text FROM entry_reversals"
    ).fetchall()
    return {str(row[0]): str(row[1]) for row in rows}


def wait_for_expiries(conn: psycopg.Connection[Any], wait_seconds_max: float) -> datetime:
    """Waits until no hold with a timeout is pending, at most until the last timeout
    plus ``wait_seconds_max``. Returns the time before which every timeout must have
    led to an end: the database's clock less ``wait_seconds_max``."""
    deadline: float | None = None
    while True:
        row = conn.execute(
            """SELECT now(), count(*), max(expires_at) FROM pending_transfers
               WHERE state = 'PENDING' AND expires_at IS NOT NULL"""
        ).fetchone()
        assert row is not None
        now, pending, last_due = row[0], int(row[1]), row[2]
        if deadline is None:
            until_due = max(0.0, (last_due - now).total_seconds()) if last_due else 0.0
            deadline = time.monotonic() + until_due + wait_seconds_max
        if pending == 0 or time.monotonic() >= deadline:
            due_before: datetime = now - timedelta(seconds=wait_seconds_max)
            return due_before
        time.sleep(EXPIRY_POLL_SECONDS)

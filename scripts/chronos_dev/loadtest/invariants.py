"""The bank invariants, checked after every run through the event store and the read side.

1. Conservation: for each currency, the balances of all accounts (system accounts
   included) sum to zero, folded from the event store.
2. Limits: on every statement line of a user account (hold lines included) the
   available balance (``balance_after`` less ``pending_debits_after``) is at least
   ``-overdraft_limit``; and every line's ``balance_after`` and pending sums agree with
   the running sums of its stream, recomputed from the lines' and holds' amounts.
3. Exactly once: every request_id of this run answered OK appears in the event store
   with exactly the events its answer announced (2 per transfer) and ends at the answered
   position; no rejected request_id appears; a request_id whose outcome is unknown
   (deadline, unavailable) appears completely or not at all; no other request_id of this
   run appears; and repeated request_ids were answered identically (replayed = true,
   same position).
4. Projection: the read side shows the fold (:mod:`.invariants_projection`).

The holds scenario adds the checks of :mod:`.invariants_holds` (every hold ends exactly
once, every entry reversed at most once), after waiting for the expiry of its holds.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg

from chronos.domain.commands import Side
from chronos.domain.events import (
    AccountKind,
    AccountOpened,
    DomainEvent,
    HoldLine,
    LinePosted,
    PendingTransferPosted,
)
from chronos.errors import ChronosError
from chronos.event_store.mapper import StoredEvent, decode
from chronos.event_store.reader import head_position, iter_events
from chronos_dev.client import ClientSecurity
from chronos_dev.loadtest import invariants_holds
from chronos_dev.loadtest.check_result import EXAMPLES_MAX, CheckResult, Problems
from chronos_dev.loadtest.invariants_projection import ReadSide, check_projection
from chronos_dev.loadtest.outcomes import Outcomes

__all__ = ["CheckResult", "check_all", "start_position"]

# Events each accepted command writes, by RPC: one per account it touches (a transfer's
# and a hold's two). A deposit writes 3 when it is the first in its currency (it also
# opens the currency's system account).
EVENT_COUNTS_BY_RPC = {
    "OpenAccount": {1},
    "Deposit": {2, 3},
    "TransferFunds": {2},
    "CreatePendingTransfer": {2},
    "PostPendingTransfer": {2},
    "VoidPendingTransfer": {2},
    "ReverseEntry": {2},
}
PG_CONNECT_TIMEOUT_SECONDS = 10
# A statement timeout for the checks' queries: bounded even on a huge store.
PG_STATEMENT_TIMEOUT_MILLISECONDS = 600_000


@dataclass(slots=True)
class FoldedAccount:
    kind: AccountKind
    currency: str
    overdraft_limit_minor: int
    balance_minor: int = 0
    pending_debits_minor: int = 0
    pending_credits_minor: int = 0
    version: int = 0


@dataclass(slots=True)
class StoreFold:
    """The event store folded up to ``head``."""

    head: int
    accounts: dict[str, FoldedAccount] = field(default_factory=dict)
    lines: int = 0
    # Lines of user accounts whose available balance is below the limit.
    floor: Problems = field(default_factory=Problems)
    # Lines whose recorded balance or pending sums disagree with the running sums.
    running_sums: Problems = field(default_factory=Problems)
    holds: invariants_holds.HoldFold = field(default_factory=invariants_holds.HoldFold)

    @property
    def totals_by_currency(self) -> dict[str, int]:
        """Each currency's posted balances summed over every account (system included)."""
        totals: dict[str, int] = {}
        for account in self.accounts.values():
            totals[account.currency] = totals.get(account.currency, 0) + account.balance_minor
        return dict(sorted(totals.items()))

    def apply(self, stored: StoredEvent) -> None:
        """Folds one stored event (in position order)."""
        event = decode(stored.event_type, stored.schema_version, stored.payload)
        self.apply_event(stored.position, stored.stream_id, stored.stream_version, event)

    def apply_event(
        self, position: int, stream_id: str, stream_version: int, event: DomainEvent
    ) -> None:
        """Folds one decoded event of ``stream_id`` (in position order)."""
        where = f"position {position}: {stream_id}"
        if isinstance(event, AccountOpened):
            self.accounts[stream_id] = FoldedAccount(
                kind=event.kind,
                currency=event.currency,
                overdraft_limit_minor=event.overdraft_limit_minor,
                version=stream_version,
            )
            return
        account = self.accounts.get(stream_id)
        if account is None:
            self.running_sums.add(f"{where}: event for an unopened account")
            return
        account.version = stream_version
        self.holds.apply(position, event)
        if not isinstance(event, LinePosted | HoldLine):
            return
        self.lines += 1
        self._fold_amounts(account, event)
        recorded = (
            event.balance_after_minor,
            event.pending_debits_after_minor,
            event.pending_credits_after_minor,
        )
        running = (
            account.balance_minor,
            account.pending_debits_minor,
            account.pending_credits_minor,
        )
        if recorded != running:
            self.running_sums.add(
                f"{where}: (balance, pending debits, pending credits) after {recorded}, "
                f"running sums {running}"
            )
        available = event.balance_after_minor - event.pending_debits_after_minor
        if account.kind is AccountKind.USER and available < -account.overdraft_limit_minor:
            self.floor.add(
                f"{where}: available after {available} < -{account.overdraft_limit_minor}"
            )

    @staticmethod
    def _fold_amounts(account: FoldedAccount, event: LinePosted | HoldLine) -> None:
        """Recomputes the posted balance and the pending sums from the amounts."""
        pending_change = 0
        if isinstance(event, HoldLine):
            pending_change = event.pending_change_minor
        else:
            account.balance_minor += event.signed_amount_minor
            if isinstance(event, PendingTransferPosted):
                pending_change = -(event.amount_minor + event.released_minor)
        if event.side is Side.DEBIT:
            account.pending_debits_minor += pending_change
        else:
            account.pending_credits_minor += pending_change


@contextmanager
def connect(pg_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """A read-only, autocommit connection with a bounded connect and statement time."""
    try:
        connection = psycopg.connect(
            pg_dsn,
            autocommit=True,
            connect_timeout=PG_CONNECT_TIMEOUT_SECONDS,
            options=f"-c statement_timeout={PG_STATEMENT_TIMEOUT_MILLISECONDS}",
        )
    except psycopg.Error as error:
        raise ChronosError(f"cannot connect to the event store: {error}") from error
    with connection:
        yield connection


def fold_store(conn: psycopg.Connection[Any], head: int) -> StoreFold:
    """Folds every event up to ``head``: balances, pending sums, versions, holds, limits."""
    fold = StoreFold(head=head)
    for stored in iter_events(conn, up_to_position=head):
        fold.apply(stored)
    return fold


def check_conservation(fold: StoreFold) -> CheckResult:
    unbalanced = {c: total for c, total in fold.totals_by_currency.items() if total != 0}
    sums = ", ".join(f"{c} {t:+d}" for c, t in fold.totals_by_currency.items()) or "no money"
    return CheckResult(
        name="currency conserved",
        passed=not unbalanced,
        detail=(
            f"sums over {len(fold.accounts)} accounts (system included) up to position "
            f"{fold.head}: {sums}"
        ),
    )


def check_limits(fold: StoreFold) -> CheckResult:
    passed = fold.floor.count == 0 and fold.running_sums.count == 0
    detail = (
        f"{fold.lines} statement lines: {fold.floor.count} with the available balance below "
        f"the limit, {fold.running_sums.count} disagreeing with their stream's running sums"
    )
    examples = fold.floor.examples + fold.running_sums.examples
    if examples:
        detail += "; e.g. " + "; ".join(examples[:3])
    return CheckResult(name="no balance below its limit", passed=passed, detail=detail)


def request_events(
    conn: psycopg.Connection[Any], request_id_prefix: str, after_position: int, head: int
) -> dict[str, tuple[int, int]]:
    """request_id -> (event count, last position) for the run's events.

    Only positions after the run started can hold the run's request_ids, so the scan is
    limited to them (the primary key keeps it a range scan).
    """
    rows = conn.execute(
        """SELECT metadata->>'request_id', count(*), max(position)
           FROM events
           WHERE position > %(after)s AND position <= %(head)s
             AND starts_with(metadata->>'request_id', %(prefix)s)
           GROUP BY 1""",
        {"after": after_position, "head": head, "prefix": request_id_prefix},
    ).fetchall()
    return {str(row[0]): (int(row[1]), int(row[2])) for row in rows}


def check_exactly_once(outcomes: Outcomes, stored: dict[str, tuple[int, int]]) -> CheckResult:
    problems: list[str] = []
    problem_count = 0

    def problem(text: str) -> None:
        nonlocal problem_count
        problem_count += 1
        if len(problems) < EXAMPLES_MAX:
            problems.append(text)

    for request_id, answer in outcomes.accepted.items():
        found = stored.get(request_id)
        if answer.event_count not in EVENT_COUNTS_BY_RPC.get(answer.rpc, {answer.event_count}):
            problem(f"{request_id}: {answer.rpc} answered with {answer.event_count} events")
        if found is None:
            problem(f"{request_id}: accepted at position {answer.position}, not in the store")
        elif found != (answer.event_count, answer.position):
            problem(
                f"{request_id}: answered {answer.event_count} events ending at "
                f"{answer.position}, store has {found[0]} ending at {found[1]}"
            )
    for request_id in outcomes.rejected:
        if request_id in stored:
            problem(f"{request_id}: rejected, yet {stored[request_id][0]} events in the store")
    unknown_present = 0
    for request_id in outcomes.unknown:
        if request_id in stored:
            unknown_present += 1
    known = outcomes.accepted.keys() | outcomes.rejected | outcomes.unknown
    for request_id in stored.keys() - known:
        problem(f"{request_id}: in the store, but never sent by this run")
    if outcomes.replay_mismatch_count:
        problem_count += outcomes.replay_mismatch_count
        problems.extend(outcomes.replay_mismatch_examples[: EXAMPLES_MAX - len(problems)])
    detail = (
        f"{len(outcomes.accepted)} accepted request_ids found with their events, "
        f"{len(outcomes.rejected)} rejected absent, {len(outcomes.unknown)} unknown "
        f"({unknown_present} of them applied), {outcomes.replayed_answers} replayed answers, "
        f"{outcomes.replay_mismatch_count} replay mismatches"
    )
    if problems:
        detail = f"{problem_count} problems: " + "; ".join(problems[:3]) + f" ({detail})"
    return CheckResult(
        name="every accepted request exactly once", passed=not problems, detail=detail
    )


def check_all(
    *,
    pg_dsn: str,
    outcomes: Outcomes,
    request_id_prefix: str,
    start_position: int,
    query_addr: str,
    security: ClientSecurity,
    es_url: str,
    index_prefix: str,
    wait_seconds_max: float,
    rpc_timeout_seconds: float,
    holds: bool = False,
    hold_expiry_wait_seconds_max: float = 0.0,
) -> list[CheckResult]:
    """Runs the four checks (see the module docstring), and with ``holds`` the two of
    :mod:`.invariants_holds` after them; one result each, in order. With ``holds`` it
    first waits (up to ``hold_expiry_wait_seconds_max`` past the last timeout) for the
    expiry of every hold with a timeout. ``security`` secures the calls to the query
    service at ``query_addr``."""
    read_side = ReadSide(
        query_addr=query_addr,
        security=security,
        es_url=es_url,
        index_prefix=index_prefix,
        wait_seconds_max=wait_seconds_max,
        rpc_timeout_seconds=rpc_timeout_seconds,
    )
    with connect(pg_dsn) as conn:
        due_before = None
        if holds:
            due_before = invariants_holds.wait_for_expiries(conn, hold_expiry_wait_seconds_max)
        head = head_position(conn)
        fold = fold_store(conn, head)
        stored = request_events(conn, request_id_prefix, start_position, head)
        write_side = invariants_holds.write_side_holds(conn) if holds else None
        checks = [
            check_conservation(fold),
            check_limits(fold),
            check_exactly_once(outcomes, stored),
            check_projection(conn, fold.accounts, fold.head, read_side, write_side),
        ]
        if write_side is not None and due_before is not None:
            checks.append(
                invariants_holds.check_holds_end_once(
                    fold.holds, write_side, outcomes, due_before=due_before
                )
            )
            reversals = invariants_holds.write_side_reversals(conn)
            checks.append(
                invariants_holds.check_reversed_at_most_once(fold.holds, reversals, outcomes)
            )
        return checks


def start_position(pg_dsn: str) -> int:
    """The event store's head before the run: the run's events all come after it."""
    with connect(pg_dsn) as conn:
        return head_position(conn)

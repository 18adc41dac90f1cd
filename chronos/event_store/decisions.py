"""What one group-commit batch decides, without a database.

A batch's commands are decided one after the other against one locked snapshot of the
accounts they touch: each command sees the state the accepted commands before it left,
a rejected command changes nothing, and every accepted command's events get the next
versions of their streams. This module is pure (no driver, no I/O), so the writer's
decisions are unit-tested as they are; the PostgreSQL pipeline only loads the snapshot
and writes what comes out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from chronos.domain.accounts import Account, evolve
from chronos.domain.commands import (
    Command,
    CreatePendingTransfer,
    ExpirePendingTransfer,
    PostPendingTransfer,
    ReverseEntry,
    VoidPendingTransfer,
)
from chronos.domain.errors import Rejection
from chronos.domain.events import DomainEvent, LinePosted
from chronos.domain.holds import PendingTransfer, decide_hold
from chronos.domain.ledger import Decision, accounts_touched, decide
from chronos.domain.reversals import decide_reversal
from chronos.event_store.atomic import all_or_nothing
from chronos.event_store.results import AccountBalance, CommandResult


@dataclass(frozen=True, slots=True, kw_only=True)
class NewEvent:
    """An event to append: the domain event at its place in its stream."""

    event: DomainEvent
    stream_id: str
    stream_version: int
    event_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Accepted:
    """What an accepted command appends and answers (its position comes at commit).

    Attributes:
        account_id: The account the answer is about (``Decision.account_id``).
        entry_id: The journal entry's id ("" for a command that posts none).
        events: The command's events, in order.
        balances: The touched accounts right after this command's own events: a later
            command of the batch may move the same accounts again.
    """

    account_id: str
    entry_id: str
    events: tuple[NewEvent, ...]
    balances: tuple[AccountBalance, ...]
    pending_id: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchDecision:
    """What a batch decided.

    Attributes:
        outcomes: Per command of the batch, in order: Accepted, the Rejection, or None
            for a command that was not to be decided (already answered).
        accounts: The new state of every account an accepted command changed, in the
            order the batch first changed them.
        opened: The ids among ``accounts`` that the batch opened.
        reversals: (reversed entry id, reversal entry id) of each reversal accepted.
    """

    outcomes: tuple[Accepted | Rejection | None, ...]
    accounts: tuple[Account, ...]
    opened: frozenset[str]
    # The new state of every hold an accepted command placed or changed.
    holds: tuple[PendingTransfer, ...] = field(default=())
    reversals: tuple[tuple[str, str], ...] = ()

    def events(self) -> list[NewEvent]:
        """Every event the batch appends, in order."""
        return [new for _, accepted in self.accepted() for new in accepted.events]

    def entry_lines(self) -> list[tuple[str, int, str, int]]:
        """(entry id, line index, stream id, stream version) of every line the batch
        appends: the index by which a later ReverseEntry finds an entry's lines."""
        return [
            (new.event.entry_id, new.event.line_index, new.stream_id, new.stream_version)
            for new in self.events()
            if isinstance(new.event, LinePosted)
        ]

    def accepted(self) -> list[tuple[int, Accepted]]:
        """The accepted commands with their index in the batch, in order."""
        return [(i, o) for i, o in enumerate(self.outcomes) if isinstance(o, Accepted)]

    def rejected(self) -> list[tuple[int, Rejection]]:
        """The rejected commands' Rejections with their index in the batch, in order."""
        return [(i, o) for i, o in enumerate(self.outcomes) if isinstance(o, Rejection)]


def accounts_to_lock(commands: Iterable[Command]) -> list[str]:
    """Every account any of ``commands`` may touch, in the one global lock order."""
    return sorted({account for command in commands for account in accounts_touched(command)})


def decide_batch(
    commands: Sequence[Command | None],
    accounts: Mapping[str, Account | None],
    new_id: Callable[[], str],
    *,
    holds: Mapping[str, PendingTransfer | None] | None = None,
    now: datetime | None = None,
    reversed_by: Mapping[str, str] | None = None,
) -> BatchDecision:
    """Decides each command against the state left by the ones before it.

    Args:
        commands: The batch in order; None for a command already answered (a duplicate
            of a stored request), which is skipped.
        accounts: The state of every account the commands touch (None: not opened yet),
            as loaded under their locks. It is not changed.
        new_id: Id generator: entry ids (through ``decide``), then one per event.
        holds: The state of every hold the batch's posts, voids and expiries name, as
            loaded under their accounts' locks.
        now: The ledger's clock, for hold timeouts (the database's, in the writer).
        reversed_by: The reversal of each already reversed entry the batch's
            ReverseEntry commands name (read under the accounts' locks).

    Returns:
        Per command its events and answer or its Rejection, and the new account states.
    """
    state = dict(accounts)
    hold_state: dict[str, PendingTransfer | None] = dict(holds or {})
    changed_holds: dict[str, PendingTransfer] = {}
    changed: dict[str, None] = {}
    opened: set[str] = set()
    reversals = dict(reversed_by or {})
    reversed_now: list[tuple[str, str]] = []
    outcomes: list[Accepted | Rejection | None] = []
    clock = now or datetime.now(UTC)
    for command in commands:
        if command is None:
            outcomes.append(None)
            continue
        try:
            decision = _decide_one(command, state, hold_state, reversals, new_id, clock)
        except Rejection as rejection:
            outcomes.append(rejection)
            continue
        if (hold := hold_state.get(decision.pending_id)) is not None:
            changed_holds[hold.pending_id] = hold
        if isinstance(command, ReverseEntry):
            # A later command of the batch sees this reversal as it would a committed one.
            reversals[command.entry_id] = decision.entry_id
            reversed_now.append((command.entry_id, decision.entry_id))
        events = _evolve_all(decision, state, new_id)
        touched = dict.fromkeys(new.stream_id for new in events)
        changed.update(touched)
        opened.update(new.stream_id for new in events if new.stream_version == 1)
        outcomes.append(
            Accepted(
                account_id=decision.account_id,
                entry_id=decision.entry_id,
                events=tuple(events),
                balances=tuple(_balance(state[a]) for a in touched),
                pending_id=decision.pending_id,
            )
        )
    return BatchDecision(
        outcomes=tuple(outcomes),
        accounts=tuple(_present(state[a]) for a in changed),
        opened=frozenset(opened),
        holds=tuple(changed_holds.values()),
        reversals=tuple(reversed_now),
    )


def settle_outcomes(
    count: int,
    answered: dict[int, CommandResult | Rejection],
    decision: BatchDecision,
    *,
    atomic: bool,
) -> tuple[list[CommandResult | Rejection | None], list[tuple[int, Rejection]], bool]:
    """What a batch answers before its writes, per command: a stored answer, a
    Rejection, or None for an accepted command (its result comes with its position).

    Returns:
        The outcomes; the rejected commands, whose idempotency placeholders go; and
        whether an atomic batch failed (then nothing is written, see
        :mod:`chronos.event_store.atomic`).
    """
    outcomes: list[CommandResult | Rejection | None] = [answered.get(i) for i in range(count)]
    rejected = decision.rejected()
    for i, rejection in rejected:
        outcomes[i] = rejection
    settled = all_or_nothing(outcomes) if atomic else None
    if settled is None:
        return outcomes, rejected, False
    # Nothing of a failed atomic batch is recorded: its placeholders go (a stored
    # duplicate's record is another call's and stays).
    forgotten = [
        (i, r) for i, r in enumerate(settled) if isinstance(r, Rejection) and i not in answered
    ]
    return settled, forgotten, True


def _decide_one(
    command: Command,
    state: Mapping[str, Account | None],
    holds: dict[str, PendingTransfer | None],
    reversed_by: Mapping[str, str],
    new_id: Callable[[], str],
    now: datetime,
) -> Decision:
    """Decides one command; a hold command's new hold state goes into ``holds``."""
    if isinstance(command, ReverseEntry):
        return decide_reversal(command, state, reversed_by, new_id)
    if not isinstance(command, _HOLD_COMMANDS):
        return decide(command, state, new_id)
    decided = decide_hold(command, state, holds, new_id, now)
    holds[decided.hold.pending_id] = decided.hold
    return decided.decision


_HOLD_COMMANDS = (
    CreatePendingTransfer,
    PostPendingTransfer,
    VoidPendingTransfer,
    ExpirePendingTransfer,
)


def _evolve_all(
    decision: Decision, state: dict[str, Account | None], new_id: Callable[[], str]
) -> list[NewEvent]:
    """Applies a decision's events to ``state``, each at the next version of its stream."""
    events: list[NewEvent] = []
    for event in decision.events:
        stream_id = event.account_id
        current = state.get(stream_id)
        version = 1 if current is None else current.version + 1
        state[stream_id] = evolve(current, event, version)
        events.append(
            NewEvent(event=event, stream_id=stream_id, stream_version=version, event_id=new_id())
        )
    return events


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
        pending_debits_minor=account.pending_debits_minor,
        pending_credits_minor=account.pending_credits_minor,
    )

"""The ledger's rules: what a command decides.

``decide`` checks a validated command against the current state of the accounts it
touches (:mod:`chronos.domain.accounts`) and returns the events to append, or raises a
:class:`Rejection`. It is pure, so the command server can run many commands against one
locked snapshot in a single transaction (group commit) and the unit tests can run it
without a database.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from chronos.domain.accounts import Account, AccountStatus, evolve
from chronos.domain.commands import (
    CloseAccount,
    Command,
    Deposit,
    FreezeAccount,
    OpenAccount,
    PostJournalEntry,
    ReverseEntry,
    Side,
    TransferFunds,
    UnfreezeAccount,
    Withdraw,
)
from chronos.domain.currencies import ISO_4217_CODES
from chronos.domain.errors import Reason, Rejection
from chronos.domain.events import (
    AccountClosed,
    AccountFrozen,
    AccountKind,
    AccountOpened,
    AccountUnfrozen,
    DomainEvent,
    EntryKind,
)
from chronos.domain.movement_metadata import with_metadata
from chronos.domain.postings import Leg, check_postable, line_events, require_account

# System account ids are derived from the currency so every server process agrees on
# them without a lookup. The namespace is fixed forever: changing it would orphan the
# existing system accounts.
_SYSTEM_NAMESPACE = uuid.UUID("6f1c3c1e-52a4-4c0e-9d43-2b7f4f1f6a10")


def system_account_id(currency: str) -> str:
    """The id of the per-currency account that deposits and withdrawals post against."""
    return str(uuid.uuid5(_SYSTEM_NAMESPACE, f"system:{currency}"))


SYSTEM_ACCOUNT_IDS = frozenset(system_account_id(code) for code in ISO_4217_CODES)


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """What a command decided: the events to append, stream by stream, in order."""

    account_id: str
    entry_id: str
    events: tuple[DomainEvent, ...]
    # The hold a hold command created or changed ("" for other commands).
    pending_id: str = ""


def accounts_touched(command: Command) -> tuple[str, ...]:
    """Every account ``command`` may read or write, system accounts included.

    The command server locks exactly these (in sorted order) before deciding.
    Ids must already be canonical (see ``validation.canonical_account_id``).
    """
    match command:
        case OpenAccount():
            return (command.account_id,)
        case Deposit() | Withdraw():
            return (command.account_id, system_account_id(command.amount.currency))
        case TransferFunds():
            return (command.from_account_id, command.to_account_id)
        case PostJournalEntry():
            return tuple(dict.fromkeys(line.account_id for line in command.lines))
        case FreezeAccount() | UnfreezeAccount() | CloseAccount():
            return (command.account_id,)
        case ReverseEntry():
            return tuple(dict.fromkeys(line.account_id for line in command.original))
        case _:
            # A post or void of a hold not found names no account: nothing to lock.
            return tuple(a for a in (command.from_account_id, command.to_account_id) if a)


def decide(
    command: Command,
    accounts: Mapping[str, Account | None],
    new_id: Callable[[], str],
) -> Decision:
    """Decides what ``command`` does to ``accounts`` (the state of every touched account).

    Args:
        command: A validated command with canonical account ids.
        accounts: Current state of each id in ``accounts_touched(command)``; None when
            that account does not exist.
        new_id: Generator of fresh ids (entry ids); injected so tests control it.

    Raises:
        Rejection: The command breaks a ledger rule. Checks follow ``Reason`` order.
    """
    match command:
        case OpenAccount():
            return _open(command, accounts)
        case FreezeAccount() | UnfreezeAccount() | CloseAccount():
            return _change_status(command, accounts)
        case Deposit() | Withdraw() | TransferFunds() | PostJournalEntry():
            kind, subject_account_id, legs = _entry_of(command)
            posted = _post(kind, legs, subject_account_id, command.description, accounts, new_id)
            return replace(posted, events=with_metadata(posted.events, command.metadata))
        case ReverseEntry():
            raise AssertionError("a reversal needs the reversed entries: decide_reversal()")
        case _:
            raise AssertionError(f"{type(command).__name__} is decided by chronos.domain.holds")


def _open(command: OpenAccount, accounts: Mapping[str, Account | None]) -> Decision:
    # validate() refuses every spelling of a system id; opened as a user account, one
    # would make every later deposit in its currency fail for good.
    assert command.account_id not in SYSTEM_ACCOUNT_IDS, "a system id reached decide()"
    if accounts[command.account_id] is not None:
        raise Rejection(
            Reason.ACCOUNT_EXISTS,
            f"Account {command.account_id} already exists.",
            metadata={"account_id": command.account_id},
        )
    opened = AccountOpened(
        account_id=command.account_id,
        owner_name=command.owner_name,
        currency=command.currency,
        overdraft_limit_minor=command.overdraft_limit_minor,
        kind=AccountKind.USER,
        metadata=command.metadata,
    )
    return Decision(account_id=command.account_id, entry_id="", events=(opened,))


def _entry_of(
    command: Deposit | Withdraw | TransferFunds | PostJournalEntry,
) -> tuple[EntryKind, str, list[Leg]]:
    """The journal entry a money movement posts: its kind, the account it is about (the
    one its answer reports), and its legs in posting order."""
    match command:
        case Deposit():
            system_id = system_account_id(command.amount.currency)
            return (
                EntryKind.DEPOSIT,
                command.account_id,
                [
                    Leg(system_id, Side.DEBIT, command.amount, command.account_id),
                    Leg(command.account_id, Side.CREDIT, command.amount, system_id),
                ],
            )
        case Withdraw():
            system_id = system_account_id(command.amount.currency)
            return (
                EntryKind.WITHDRAWAL,
                command.account_id,
                [
                    Leg(command.account_id, Side.DEBIT, command.amount, system_id),
                    Leg(system_id, Side.CREDIT, command.amount, command.account_id),
                ],
            )
        case TransferFunds():
            source, target = command.from_account_id, command.to_account_id
            return (
                EntryKind.TRANSFER,
                source,
                [
                    Leg(source, Side.DEBIT, command.amount, target),
                    Leg(target, Side.CREDIT, command.amount, source),
                ],
            )
        case PostJournalEntry():
            assert command.lines, "validated journal entries have lines"
            legs = [
                Leg(line.account_id, line.side or Side.DEBIT, line.amount) for line in command.lines
            ]
            return EntryKind.JOURNAL, command.lines[0].account_id, legs


def _change_status(
    command: FreezeAccount | UnfreezeAccount | CloseAccount,
    accounts: Mapping[str, Account | None],
) -> Decision:
    account = require_account(accounts, command.account_id)
    meta = {"account_id": account.account_id}
    if account.status is AccountStatus.CLOSED:
        raise Rejection(
            Reason.ACCOUNT_CLOSED, f"Account {account.account_id} is closed.", metadata=meta
        )
    event: DomainEvent
    match command:
        case FreezeAccount():
            if account.status is AccountStatus.FROZEN:
                raise Rejection(
                    Reason.ACCOUNT_FROZEN,
                    f"Account {account.account_id} is already frozen.",
                    metadata=meta,
                )
            event = AccountFrozen(account_id=account.account_id, reason=command.reason)
        case UnfreezeAccount():
            if account.status is not AccountStatus.FROZEN:
                raise Rejection(
                    Reason.ACCOUNT_NOT_FROZEN,
                    f"Account {account.account_id} is not frozen.",
                    metadata=meta,
                )
            event = AccountUnfrozen(account_id=account.account_id, reason=command.reason)
        case CloseAccount():
            if account.balance_minor != 0:
                raise Rejection(
                    Reason.ACCOUNT_NOT_EMPTY,
                    f"Account {account.account_id} has a balance of {account.balance_minor} "
                    f"{account.currency} minor units; only an account at zero can be closed.",
                    metadata={**meta, "balance_minor": str(account.balance_minor)},
                )
            if account.pending_debits_minor or account.pending_credits_minor:
                raise Rejection(
                    Reason.ACCOUNT_HAS_PENDING,
                    f"Account {account.account_id} has open holds; end them first.",
                    metadata=meta,
                )
            event = AccountClosed(account_id=account.account_id, reason=command.reason)
    return Decision(account_id=account.account_id, entry_id="", events=(event,))


def _post(
    kind: EntryKind,
    legs: list[Leg],
    subject_account_id: str,
    description: str,
    accounts: Mapping[str, Account | None],
    new_id: Callable[[], str],
) -> Decision:
    """Checks and posts one balanced journal entry; rules are checked in Reason order."""
    opened, events = _open_system_accounts(kind, legs, accounts)

    def state(account_id: str) -> Account:
        return opened.get(account_id) or require_account(accounts, account_id)

    check_postable(legs, state)
    entry_id = new_id()
    events.extend(line_events(kind, entry_id, legs, description, state))
    return Decision(account_id=subject_account_id, entry_id=entry_id, events=tuple(events))


def _open_system_accounts(
    kind: EntryKind, legs: list[Leg], accounts: Mapping[str, Account | None]
) -> tuple[dict[str, Account], list[DomainEvent]]:
    """Deposits and withdrawals open the currency's system account on first use."""
    opened: dict[str, Account] = {}
    events: list[DomainEvent] = []
    if kind not in (EntryKind.DEPOSIT, EntryKind.WITHDRAWAL):
        return opened, events
    for leg in legs:
        if accounts[leg.account_id] is None and leg.account_id == system_account_id(
            leg.amount.currency
        ):
            system_opened = AccountOpened(
                account_id=leg.account_id,
                owner_name=f"System account {leg.amount.currency}",
                currency=leg.amount.currency,
                overdraft_limit_minor=0,
                kind=AccountKind.SYSTEM,
            )
            opened[leg.account_id] = evolve(None, system_opened, 1)
            events.append(system_opened)
    return opened, events

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
from dataclasses import dataclass

from chronos.domain import limits
from chronos.domain.accounts import Account, AccountStatus, evolve
from chronos.domain.commands import (
    CloseAccount,
    Command,
    Deposit,
    FreezeAccount,
    Money,
    OpenAccount,
    PostJournalEntry,
    Side,
    TransferFunds,
    UnfreezeAccount,
    Withdraw,
)
from chronos.domain.currencies import ISO_4217_CODES
from chronos.domain.errors import Reason, Rejection
from chronos.domain.events import (
    LINE_EVENT_BY_KIND,
    AccountClosed,
    AccountFrozen,
    AccountKind,
    AccountOpened,
    AccountUnfrozen,
    DomainEvent,
    EntryKind,
)

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
        case _:
            # A post or void of a hold not found names no account: nothing to lock.
            return tuple(a for a in (command.from_account_id, command.to_account_id) if a)


@dataclass(frozen=True, slots=True)
class _Leg:
    account_id: str
    side: Side
    amount: Money
    counterparty_account_id: str = ""


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
            return _post(kind, legs, subject_account_id, command.description, accounts, new_id)
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
) -> tuple[EntryKind, str, list[_Leg]]:
    """The journal entry a money movement posts: its kind, the account it is about (the
    one its answer reports), and its legs in posting order."""
    match command:
        case Deposit():
            system_id = system_account_id(command.amount.currency)
            return (
                EntryKind.DEPOSIT,
                command.account_id,
                [
                    _Leg(system_id, Side.DEBIT, command.amount, command.account_id),
                    _Leg(command.account_id, Side.CREDIT, command.amount, system_id),
                ],
            )
        case Withdraw():
            system_id = system_account_id(command.amount.currency)
            return (
                EntryKind.WITHDRAWAL,
                command.account_id,
                [
                    _Leg(command.account_id, Side.DEBIT, command.amount, system_id),
                    _Leg(system_id, Side.CREDIT, command.amount, command.account_id),
                ],
            )
        case TransferFunds():
            source, target = command.from_account_id, command.to_account_id
            return (
                EntryKind.TRANSFER,
                source,
                [
                    _Leg(source, Side.DEBIT, command.amount, target),
                    _Leg(target, Side.CREDIT, command.amount, source),
                ],
            )
        case PostJournalEntry():
            assert command.lines, "validated journal entries have lines"
            legs = [
                _Leg(line.account_id, line.side or Side.DEBIT, line.amount)
                for line in command.lines
            ]
            return EntryKind.JOURNAL, command.lines[0].account_id, legs


def _require_account(accounts: Mapping[str, Account | None], account_id: str) -> Account:
    account = accounts[account_id]
    if account is None:
        raise Rejection(
            Reason.ACCOUNT_NOT_FOUND,
            f"Account {account_id} does not exist.",
            metadata={"account_id": account_id},
        )
    return account


require_account = _require_account  # the same lookup, for the hold rules (holds.py)


def _change_status(
    command: FreezeAccount | UnfreezeAccount | CloseAccount,
    accounts: Mapping[str, Account | None],
) -> Decision:
    account = _require_account(accounts, command.account_id)
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
    legs: list[_Leg],
    subject_account_id: str,
    description: str,
    accounts: Mapping[str, Account | None],
    new_id: Callable[[], str],
) -> Decision:
    """Checks and posts one balanced journal entry; rules are checked in Reason order."""
    opened, events = _open_system_accounts(kind, legs, accounts)

    def state(account_id: str) -> Account:
        return opened.get(account_id) or _require_account(accounts, account_id)

    _check_postable(legs, state)
    entry_id = new_id()
    events.extend(_lines(kind, entry_id, legs, description, state))
    return Decision(account_id=subject_account_id, entry_id=entry_id, events=tuple(events))


def _open_system_accounts(
    kind: EntryKind, legs: list[_Leg], accounts: Mapping[str, Account | None]
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


def _check_postable(legs: list[_Leg], state: Callable[[str], Account]) -> None:
    """The rules that hold for each leg alone, each over every leg before the next
    (existence, closed, frozen, currency), so the first reason in Reason order wins."""
    for leg in legs:
        state(leg.account_id)
    for leg in legs:
        account = state(leg.account_id)
        if account.status is AccountStatus.CLOSED:
            raise Rejection(
                Reason.ACCOUNT_CLOSED,
                f"Account {account.account_id} is closed and accepts no postings.",
                metadata={"account_id": account.account_id},
            )
    for leg in legs:
        account = state(leg.account_id)
        # Frozen accounts accept credits (incoming money still lands) but no debits.
        if account.status is AccountStatus.FROZEN and leg.side is Side.DEBIT:
            raise Rejection(
                Reason.ACCOUNT_FROZEN,
                f"Account {account.account_id} is frozen and cannot be debited.",
                metadata={"account_id": account.account_id},
            )
    for leg in legs:
        account = state(leg.account_id)
        if account.currency != leg.amount.currency:
            raise Rejection(
                Reason.CURRENCY_MISMATCH,
                f"Account {account.account_id} holds {account.currency}, "
                f"not {leg.amount.currency}.",
                metadata={
                    "account_id": account.account_id,
                    "account_currency": account.currency,
                    "amount_currency": leg.amount.currency,
                },
            )


def _lines(
    kind: EntryKind,
    entry_id: str,
    legs: list[_Leg],
    description: str,
    state: Callable[[str], Account],
) -> list[DomainEvent]:
    """The entry's line events. The lines are walked in order, checking every running
    balance against its floor (so no statement line ever shows a balance below the
    limit) and the int64 range."""
    balances = {account_id: state(account_id).balance_minor for account_id in _ids(legs)}
    event_type = LINE_EVENT_BY_KIND[kind]
    events: list[DomainEvent] = []
    for index, leg in enumerate(legs):
        account = state(leg.account_id)
        balance_after = _balance_after(account, balances[leg.account_id], leg)
        balances[leg.account_id] = balance_after
        events.append(
            event_type(
                entry_id=entry_id,
                account_id=leg.account_id,
                side=leg.side,
                currency=leg.amount.currency,
                amount_minor=leg.amount.minor_units,
                balance_after_minor=balance_after,
                counterparty_account_id=leg.counterparty_account_id,
                description=description,
                line_index=index,
                pending_debits_after_minor=account.pending_debits_minor,
                pending_credits_after_minor=account.pending_credits_minor,
            )
        )
    return events


def _balance_after(account: Account, balance_minor: int, leg: _Leg) -> int:
    """The account's balance after ``leg``, refused below its floor or outside int64."""
    signed = leg.amount.minor_units if leg.side is Side.CREDIT else -leg.amount.minor_units
    balance_after = balance_minor + signed
    floor = account.balance_floor_minor
    # The limit binds the available balance: money held for a pending transfer is spent.
    held = account.pending_debits_minor
    if floor is not None and balance_after - held < floor:
        raise Rejection(
            Reason.INSUFFICIENT_FUNDS,
            f"Insufficient funds in account {account.account_id}: the available balance "
            f"is {balance_minor - held} {account.currency} minor units and the overdraft "
            f"limit {account.overdraft_limit_minor}, so at most "
            f"{balance_minor - held + account.overdraft_limit_minor} can be debited; "
            f"{leg.amount.minor_units} requested.",
            metadata={
                "account_id": account.account_id,
                "balance_minor": str(balance_minor),
                "requested_minor": str(leg.amount.minor_units),
            },
        )
    if balance_after > limits.INT64_MAX or balance_after < limits.INT64_MIN:
        raise Rejection(
            Reason.BALANCE_OVERFLOW,
            f"Account {account.account_id}'s balance would leave the signed 64-bit range.",
            metadata={"account_id": account.account_id},
        )
    return balance_after


def _ids(legs: list[_Leg]) -> list[str]:
    return list(dict.fromkeys(leg.account_id for leg in legs))

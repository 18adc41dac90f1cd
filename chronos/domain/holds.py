"""The rules of holds (two-phase transfers): place, post (all or part), void, expire.

A hold reserves an amount on its from account (a pending debit, which lowers the
available balance at once) and promises it to its to account (a pending credit, which
never counts as available). It then ends exactly once: posted (the money moves; a
partial post releases the rest), voided by a client, or expired by the ledger itself
once its timeout passed. Each change is one event per account, carrying the pending
amounts right after it, so the read side folds available balances like posted ones.

Decided rules, where the contract leaves a choice:

- A frozen from account takes no new hold and no post (a post debits it, and a frozen
  account accepts no debits); a void or an expiry is allowed, since it only gives the
  reserved money back. A frozen to account accepts holds and posts, as it accepts
  credits. A closed account accepts nothing (and cannot be closed with open holds).
- A hold whose timeout has passed is refused to a post or a void
  (``PENDING_TRANSFER_NOT_PENDING``) even before the expiry job has run: the client
  sees the same outcome whichever ran first.

Pure: the clock (``now``) and the ids are injected.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from chronos.domain import limits
from chronos.domain.accounts import Account, AccountStatus
from chronos.domain.commands import (
    CreatePendingTransfer,
    ExpirePendingTransfer,
    HoldCommand,
    PostPendingTransfer,
    Side,
    VoidPendingTransfer,
)
from chronos.domain.errors import Reason, Rejection
from chronos.domain.events import (
    DomainEvent,
    HoldLine,
    PendingTransferCreated,
    PendingTransferExpired,
    PendingTransferPosted,
    PendingTransferVoided,
)
from chronos.domain.ledger import Decision
from chronos.domain.movement_metadata import with_metadata
from chronos.domain.postings import require_account


class HoldState(enum.Enum):
    PENDING = "PENDING"
    POSTED = "POSTED"
    VOIDED = "VOIDED"
    EXPIRED = "EXPIRED"


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingTransfer:
    """A hold's current state (write side)."""

    pending_id: str
    from_account_id: str
    to_account_id: str
    currency: str
    amount_minor: int
    state: HoldState
    posted_minor: int = 0
    # None: never expires.
    expires_at: datetime | None = None
    description: str = ""
    placed_at: datetime | None = None
    # The metadata it was placed with, carried by each of its events (hold_metadata).
    metadata: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class HoldDecision:
    """What a hold command decided: the account events and the hold's new state."""

    decision: Decision
    hold: PendingTransfer


def decide_hold(
    command: HoldCommand,
    accounts: Mapping[str, Account | None],
    holds: Mapping[str, PendingTransfer | None],
    new_id: Callable[[], str],
    now: datetime,
) -> HoldDecision:
    """Decides a hold command against its accounts and its hold.

    Args:
        command: Validated, canonical; a post or void has its hold's accounts filled in.
        accounts: State of each account the command touches (None: not opened).
        holds: State of the hold a post, void or expiry names (None or absent: unknown).
        new_id: Fresh ids (pending ids, entry ids).
        now: The ledger's clock, for timeouts.

    Raises:
        Rejection: In ``Reason`` order.
    """
    decided = _decide(command, accounts, holds, new_id, now)
    # An expiry is the ledger's own act: its lines carry no request metadata.
    if isinstance(command, ExpirePendingTransfer):
        return decided
    events = with_metadata(decided.decision.events, command.metadata)
    return replace(decided, decision=replace(decided.decision, events=events))


def _decide(
    command: HoldCommand,
    accounts: Mapping[str, Account | None],
    holds: Mapping[str, PendingTransfer | None],
    new_id: Callable[[], str],
    now: datetime,
) -> HoldDecision:
    if isinstance(command, CreatePendingTransfer):
        return _create(command, accounts, new_id, now)
    hold = holds.get(command.pending_id)
    if hold is None:
        raise Rejection(
            Reason.PENDING_TRANSFER_NOT_FOUND,
            f"No pending transfer has the id {command.pending_id}.",
            metadata={"pending_id": command.pending_id},
        )
    source = _present(accounts, hold.from_account_id)
    target = _present(accounts, hold.to_account_id)
    match command:
        case PostPendingTransfer():
            return _post(command, hold, source, target, new_id, now)
        case VoidPendingTransfer():
            _require_pending(hold, now)
            return _release(hold, source, target, PendingTransferVoided, command.reason)
        case ExpirePendingTransfer():
            if hold.state is not HoldState.PENDING or not _due(hold, now):
                raise _not_pending(hold, "it is not due to expire", hold.state)
            return _release(hold, source, target, PendingTransferExpired, "")


def _present(accounts: Mapping[str, Account | None], account_id: str) -> Account:
    account = accounts.get(account_id)
    # A hold's accounts existed when it was placed, and accounts are never removed.
    assert account is not None, f"the account {account_id} of a hold is missing"
    return account


def _create(
    command: CreatePendingTransfer,
    accounts: Mapping[str, Account | None],
    new_id: Callable[[], str],
    now: datetime,
) -> HoldDecision:
    source = require_account(accounts, command.from_account_id)
    target = require_account(accounts, command.to_account_id)
    for account in (source, target):
        if account.status is AccountStatus.CLOSED:
            raise Rejection(
                Reason.ACCOUNT_CLOSED,
                f"Account {account.account_id} is closed and accepts no holds.",
                metadata={"account_id": account.account_id},
            )
    _refuse_frozen(source, "place a hold on")
    currency, amount = command.amount.currency, command.amount.minor_units
    for account in (source, target):
        _check_currency(account, currency)
    _check_available(source, amount, currency)
    for account, pending in (
        (source, source.pending_debits_minor),
        (target, target.pending_credits_minor),
    ):
        if pending + amount > limits.INT64_MAX:
            raise _overflow(account)
    expires_at = (
        now + timedelta(seconds=command.timeout_seconds) if command.timeout_seconds else None
    )
    hold = PendingTransfer(
        pending_id=new_id(),
        from_account_id=source.account_id,
        to_account_id=target.account_id,
        currency=currency,
        amount_minor=amount,
        state=HoldState.PENDING,
        expires_at=expires_at,
        description=command.description,
        placed_at=now,
        metadata=command.metadata,
    )
    events = _hold_lines(hold, source, target, PendingTransferCreated, hold.amount_minor)
    decision = Decision(
        account_id=source.account_id, entry_id="", events=tuple(events), pending_id=hold.pending_id
    )
    return HoldDecision(decision=decision, hold=hold)


def _check_available(source: Account, amount: int, currency: str) -> None:
    available = source.available_minor
    if available - amount < -source.overdraft_limit_minor:
        raise Rejection(
            Reason.INSUFFICIENT_FUNDS,
            f"Insufficient funds in account {source.account_id}: the available balance is "
            f"{available} {currency} minor units and the overdraft limit "
            f"{source.overdraft_limit_minor}, so at most "
            f"{available + source.overdraft_limit_minor} can be held; {amount} requested.",
            metadata={
                "account_id": source.account_id,
                "available_minor": str(available),
                "requested_minor": str(amount),
            },
        )


def _hold_lines(
    hold: PendingTransfer, source: Account, target: Account, event_type: type[HoldLine], change: int
) -> list[DomainEvent]:
    """The hold's line on each of its accounts: ``change`` to the pending side of each."""
    events: list[DomainEvent] = []
    for index, (account, side) in enumerate(((source, Side.DEBIT), (target, Side.CREDIT))):
        debits, credits = _pending(account, side, change)
        line = event_type(
            pending_id=hold.pending_id,
            account_id=account.account_id,
            side=side,
            currency=hold.currency,
            amount_minor=hold.amount_minor,
            balance_after_minor=account.balance_minor,
            pending_debits_after_minor=debits,
            pending_credits_after_minor=credits,
            counterparty_account_id=_other(hold, account),
            description=hold.description,
            line_index=index,
            placed_at=hold.placed_at,
            expires_at=hold.expires_at,
            hold_metadata=hold.metadata,
        )
        events.append(line)
    return events


def _post(
    command: PostPendingTransfer,
    hold: PendingTransfer,
    source: Account,
    target: Account,
    new_id: Callable[[], str],
    now: datetime,
) -> HoldDecision:
    _refuse_frozen(source, "post a hold from")
    if command.amount.currency:
        for account in (source, target):
            _check_currency(account, command.amount.currency)
    _require_pending(hold, now)
    posted = command.amount.minor_units or hold.amount_minor
    if posted > hold.amount_minor:
        raise Rejection(
            Reason.AMOUNT_EXCEEDS_PENDING,
            f"The pending transfer {hold.pending_id} holds {hold.amount_minor} "
            f"{hold.currency} minor units; {posted} cannot be posted from it.",
            metadata={
                "pending_id": hold.pending_id,
                "pending_minor": str(hold.amount_minor),
                "requested_minor": str(posted),
            },
        )
    if target.balance_minor + posted > limits.INT64_MAX:
        raise _overflow(target)
    released = hold.amount_minor - posted
    entry_id = new_id()
    events: list[DomainEvent] = []
    for index, (account, side) in enumerate(((source, Side.DEBIT), (target, Side.CREDIT))):
        debits, credits = _pending(account, side, -hold.amount_minor)
        signed = posted if side is Side.CREDIT else -posted
        events.append(
            PendingTransferPosted(
                entry_id=entry_id,
                account_id=account.account_id,
                side=side,
                currency=hold.currency,
                amount_minor=posted,
                balance_after_minor=account.balance_minor + signed,
                counterparty_account_id=_other(hold, account),
                description=hold.description,
                line_index=index,
                pending_debits_after_minor=debits,
                pending_credits_after_minor=credits,
                pending_id=hold.pending_id,
                released_minor=released,
                placed_at=hold.placed_at,
                expires_at=hold.expires_at,
                hold_metadata=hold.metadata,
            )
        )
    decision = Decision(
        account_id=source.account_id,
        entry_id=entry_id,
        events=tuple(events),
        pending_id=hold.pending_id,
    )
    changed = replace(hold, state=HoldState.POSTED, posted_minor=posted)
    return HoldDecision(decision=decision, hold=changed)


def _release(
    hold: PendingTransfer,
    source: Account,
    target: Account,
    event_type: type[PendingTransferVoided] | type[PendingTransferExpired],
    reason: str,
) -> HoldDecision:
    events = [
        replace(line, reason=reason) if isinstance(line, PendingTransferVoided) else line
        for line in _hold_lines(hold, source, target, event_type, -hold.amount_minor)
    ]
    state = HoldState.VOIDED if event_type is PendingTransferVoided else HoldState.EXPIRED
    decision = Decision(
        account_id=source.account_id, entry_id="", events=tuple(events), pending_id=hold.pending_id
    )
    return HoldDecision(decision=decision, hold=replace(hold, state=state))


def _due(hold: PendingTransfer, now: datetime) -> bool:
    return hold.expires_at is not None and hold.expires_at <= now


def _require_pending(hold: PendingTransfer, now: datetime) -> None:
    if hold.state is not HoldState.PENDING:
        raise _not_pending(hold, f"it was already {hold.state.value.lower()}")
    if _due(hold, now):
        raise _not_pending(hold, "its timeout has passed, so it expired")


def _not_pending(hold: PendingTransfer, why: str, state: HoldState | None = None) -> Rejection:
    """The refusal of a hold that is not pending; ``state`` for its metadata defaults to
    how the hold ended (a pending hold past its timeout has, in effect, expired)."""
    if state is None:
        state = HoldState.EXPIRED if hold.state is HoldState.PENDING else hold.state
    return Rejection(
        Reason.PENDING_TRANSFER_NOT_PENDING,
        f"The pending transfer {hold.pending_id} is no longer pending: {why}.",
        metadata={"pending_id": hold.pending_id, "state": state.value},
    )


def _refuse_frozen(account: Account, action: str) -> None:
    if account.status is AccountStatus.FROZEN:
        raise Rejection(
            Reason.ACCOUNT_FROZEN,
            f"Account {account.account_id} is frozen: cannot {action} it.",
            metadata={"account_id": account.account_id},
        )


def _check_currency(account: Account, currency: str) -> None:
    if account.currency != currency:
        raise Rejection(
            Reason.CURRENCY_MISMATCH,
            f"Account {account.account_id} holds {account.currency}, not {currency}.",
            metadata={
                "account_id": account.account_id,
                "account_currency": account.currency,
                "amount_currency": currency,
            },
        )


def _overflow(account: Account) -> Rejection:
    return Rejection(
        Reason.BALANCE_OVERFLOW,
        f"Account {account.account_id}'s balance would leave the signed 64-bit range.",
        metadata={"account_id": account.account_id},
    )


def _pending(account: Account, side: Side, change: int) -> tuple[int, int]:
    if side is Side.DEBIT:
        return account.pending_debits_minor + change, account.pending_credits_minor
    return account.pending_debits_minor, account.pending_credits_minor + change


def _other(hold: PendingTransfer, account: Account) -> str:
    if account.account_id == hold.from_account_id:
        return hold.to_account_id
    return hold.from_account_id

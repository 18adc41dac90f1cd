"""An account's state, and how each event evolves it.

``evolve`` is the one place that applies an event to an account: the command server
folds the locked accounts' new events with it, and its assertions (each version follows
the last, every line's balance matches the stream) hold wherever an account is rebuilt.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from chronos.domain.commands import Side
from chronos.domain.events import (
    AccountClosed,
    AccountFrozen,
    AccountKind,
    AccountOpened,
    AccountUnfrozen,
    DomainEvent,
    HoldLine,
    LinePosted,
    PendingTransferPosted,
)


class AccountStatus(enum.Enum):
    ACTIVE = "ACTIVE"
    FROZEN = "FROZEN"
    CLOSED = "CLOSED"


@dataclass(frozen=True, slots=True, kw_only=True)
class Account:
    """Current state of one account: the fold of its stream up to ``version``."""

    account_id: str
    kind: AccountKind
    owner_name: str
    currency: str
    overdraft_limit_minor: int
    status: AccountStatus
    balance_minor: int
    version: int
    metadata: tuple[tuple[str, str], ...] = ()
    # Open holds: money reserved on this account (debits) and promised to it (credits).
    pending_debits_minor: int = 0
    pending_credits_minor: int = 0

    @property
    def available_minor(self) -> int:
        """Posted balance less pending debits; pending credits never count."""
        return self.balance_minor - self.pending_debits_minor

    @property
    def balance_floor_minor(self) -> int | None:
        """The lowest balance the account may reach; None for a system account, which
        only the signed 64-bit range bounds (leaving it is ``BALANCE_OVERFLOW``)."""
        if self.kind is AccountKind.SYSTEM:
            return None
        return -self.overdraft_limit_minor


def evolve(account: Account | None, event: DomainEvent, version: int) -> Account:
    """Applies ``event`` (the ``version``-th of the stream) to ``account``.

    Raises:
        AssertionError: the event does not follow the account's current version, or
            does not fit its state. Both are programming errors: ``decide`` only
            produces events that fit.
    """
    if isinstance(event, AccountOpened):
        assert account is None, f"account {event.account_id} opened twice"
        assert version == 1, f"AccountOpened must be version 1, got {version}"
        return Account(
            account_id=event.account_id,
            kind=event.kind,
            owner_name=event.owner_name,
            currency=event.currency,
            overdraft_limit_minor=event.overdraft_limit_minor,
            status=AccountStatus.ACTIVE,
            balance_minor=0,
            version=1,
            metadata=event.metadata,
        )
    assert account is not None, f"event {type(event).__name__} for an unopened account"
    assert version == account.version + 1, (
        f"stream {account.account_id}: version {version} after {account.version}"
    )
    assert event.account_id == account.account_id
    if isinstance(event, LinePosted):
        return _evolve_line(account, event, version)
    if isinstance(event, HoldLine):
        return _evolve_hold(account, event, version)
    if isinstance(event, AccountFrozen):
        return replace(account, status=AccountStatus.FROZEN, version=version)
    if isinstance(event, AccountUnfrozen):
        return replace(account, status=AccountStatus.ACTIVE, version=version)
    if isinstance(event, AccountClosed):
        assert account.balance_minor == 0
        assert account.pending_debits_minor == account.pending_credits_minor == 0
        return replace(account, status=AccountStatus.CLOSED, version=version)
    raise AssertionError(f"unknown event type {type(event).__name__}")


def _pending_after(debits: int, credits: int, side: Side, change: int) -> tuple[int, int]:
    """The pending (debits, credits) after ``change`` on the ``side`` of a hold."""
    if side is Side.DEBIT:
        return debits + change, credits
    return debits, credits + change


def _evolve_line(account: Account, event: LinePosted, version: int) -> Account:
    assert event.currency == account.currency
    balance = account.balance_minor + event.signed_amount_minor
    assert balance == event.balance_after_minor, "balance_after does not match the stream"
    debits, credits = account.pending_debits_minor, account.pending_credits_minor
    if isinstance(event, PendingTransferPosted):
        held = event.amount_minor + event.released_minor
        debits, credits = _pending_after(debits, credits, event.side, -held)
    assert (debits, credits) == (
        event.pending_debits_after_minor,
        event.pending_credits_after_minor,
    ), "pending after does not match the stream"
    return replace(
        account,
        balance_minor=balance,
        pending_debits_minor=debits,
        pending_credits_minor=credits,
        version=version,
    )


def _evolve_hold(account: Account, event: HoldLine, version: int) -> Account:
    assert event.currency == account.currency
    assert event.balance_after_minor == account.balance_minor
    debits, credits = _pending_after(
        account.pending_debits_minor,
        account.pending_credits_minor,
        event.side,
        event.pending_change_minor,
    )
    assert debits >= 0 and credits >= 0, "a hold released more than was pending"
    assert (debits, credits) == (
        event.pending_debits_after_minor,
        event.pending_credits_after_minor,
    ), "pending after does not match the stream"
    return replace(
        account, pending_debits_minor=debits, pending_credits_minor=credits, version=version
    )

"""Posting an entry's legs: the rules every line of every entry obeys.

The ledger's money movements (:mod:`chronos.domain.ledger`) and reversals
(:mod:`chronos.domain.reversals`) post through here, so a line is checked the same
way whatever posted it: the account exists and is open, a frozen account takes no
debit, the currencies match, each debit keeps the available balance (posted less the
money held for pending transfers) at or above the account's floor, and every balance
stays inside the signed 64-bit range. Pure, like the rest of the domain.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from chronos.domain import limits
from chronos.domain.accounts import Account, AccountStatus
from chronos.domain.commands import Money, Side
from chronos.domain.errors import Reason, Rejection
from chronos.domain.events import LINE_EVENT_BY_KIND, DomainEvent, EntryKind


@dataclass(frozen=True, slots=True)
class Leg:
    """One line of an entry before it is posted: an amount on one side of one account."""

    account_id: str
    side: Side
    amount: Money
    counterparty_account_id: str = ""


def require_account(accounts: Mapping[str, Account | None], account_id: str) -> Account:
    """The state of ``account_id``; ACCOUNT_NOT_FOUND when it does not exist."""
    account = accounts[account_id]
    if account is None:
        raise Rejection(
            Reason.ACCOUNT_NOT_FOUND,
            f"Account {account_id} does not exist.",
            metadata={"account_id": account_id},
        )
    return account


def check_postable(legs: list[Leg], state: Callable[[str], Account]) -> None:
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


def line_events(
    kind: EntryKind,
    entry_id: str,
    legs: list[Leg],
    description: str,
    state: Callable[[str], Account],
) -> list[DomainEvent]:
    """The entry's line events. The lines are walked in order, checking each debit's
    running balance against its floor (so no debit leaves a statement line below the
    limit; only a forced reversal can, and credits to such an account are taken) and
    every running balance against the int64 range."""
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


def _balance_after(account: Account, balance_minor: int, leg: Leg) -> int:
    """The account's balance after ``leg``, refused below its floor or outside int64."""
    signed = leg.amount.minor_units if leg.side is Side.CREDIT else -leg.amount.minor_units
    balance_after = balance_minor + signed
    floor = account.balance_floor_minor
    # The limit binds the available balance: money held for a pending transfer is spent.
    held = account.pending_debits_minor
    # Only a debit is held to the floor. A credit only raises the balance, so it is taken
    # even by an account already below its floor (a forced reversal can leave one there):
    # refusing it would keep the account overdrawn and bounce the money that repays it.
    if floor is not None and leg.side is Side.DEBIT and balance_after - held < floor:
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


def _ids(legs: list[Leg]) -> list[str]:
    return list(dict.fromkeys(leg.account_id for leg in legs))

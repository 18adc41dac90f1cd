"""A small, pure reference model of the ledger, written for the model-based test.

It is written from the contract (issue 17 and docs/api.md), not from
``chronos.domain``, and imports nothing from ``chronos``: the test compares the real
service with it, so sharing code would let one mistake pass in both. Each command
returns the expected outcome (``OK`` or the name of the reason the ledger must refuse
it with, the first in the ledger's precedence) and changes the model only when it is
accepted.

The rules it holds the ledger to:

- ``available`` = posted balance - pending debits; pending credits never count.
- A debit (withdrawal, the debit side of a transfer or of a reversal) and a new hold
  are refused when they would take a user account's ``available`` below
  ``-overdraft_limit``. A credit is never refused for the limit: money arriving on an
  account that is below its floor (after a forced reversal) only brings it closer.
  Deposits and withdrawals post against the currency's system account, which has no
  floor.
- A frozen account takes credits, but no debit, no new hold as its from account and
  no post of a hold it is the from account of; a void or an expiry is allowed (they
  give the reserved money back). A closed account accepts nothing, and only an
  account with a zero balance and no open hold can be closed.
- A hold ends once: posted (all or part; the rest is released), voided or expired. A
  post above its amount is ``AMOUNT_EXCEEDS_PENDING``.
- An entry is reversed at most once; a reversal and a hold's post are not
  reversible; ``force`` waives the overdraft limit and nothing else.
- An atomic batch commits whole or not at all: when one command fails, it answers its
  own reason and every other command ``LINKED_COMMAND_FAILED``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

OK = "OK"
LINKED_COMMAND_FAILED = "LINKED_COMMAND_FAILED"
# Refused before the ledger looks at any state (here: a transfer or hold to itself).
VALIDATION_FAILED = "VALIDATION_FAILED"

ACTIVE, FROZEN, CLOSED = "ACTIVE", "FROZEN", "CLOSED"
PENDING, POSTED, VOIDED, EXPIRED = "PENDING", "POSTED", "VOIDED", "EXPIRED"
DEBIT, CREDIT = "DEBIT", "CREDIT"
# Entry kinds, as far as a reversal cares.
MOVEMENT, HOLD_POST, REVERSAL = "MOVEMENT", "HOLD_POST", "REVERSAL"

# An account's (posted, pending debits, pending credits, available) balances.
Sums = tuple[int, int, int, int]


def system_key(currency: str) -> str:
    """The model's name of a currency's system account (deposits' source)."""
    return f"system:{currency}"


@dataclass
class ModelAccount:
    account_id: str
    currency: str
    limit_minor: int
    status: str = ACTIVE
    balance_minor: int = 0
    pending_debits_minor: int = 0
    pending_credits_minor: int = 0
    system: bool = False

    @property
    def available_minor(self) -> int:
        return self.balance_minor - self.pending_debits_minor

    def sums(self) -> Sums:
        """(posted, pending debits, pending credits, available)."""
        return (
            self.balance_minor,
            self.pending_debits_minor,
            self.pending_credits_minor,
            self.available_minor,
        )


@dataclass
class ModelHold:
    pending_id: str
    from_id: str
    to_id: str
    amount_minor: int
    timeout_seconds: int
    state: str = PENDING
    posted_minor: int = 0


@dataclass(frozen=True)
class Leg:
    account_id: str
    side: str
    amount_minor: int


@dataclass
class ModelEntry:
    entry_id: str
    kind: str
    legs: tuple[Leg, ...]
    reversed: bool = False


@dataclass(frozen=True)
class Answer:
    """An expected answer: the outcome and, when accepted, the balances the answer
    carries (right after the command) of each user account it touched."""

    outcome: str
    balances: tuple[tuple[str, Sums], ...] = ()


class Refused(Exception):
    """A command the model refuses, with the reason the ledger must give."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class LedgerModel:
    accounts: dict[str, ModelAccount] = field(default_factory=dict)
    holds: dict[str, ModelHold] = field(default_factory=dict)
    entries: dict[str, ModelEntry] = field(default_factory=dict)

    # --- accounts -------------------------------------------------------------

    def open(self, account_id: str, currency: str, limit_minor: int) -> Answer:
        def run() -> tuple[str, ...]:
            self.accounts[account_id] = ModelAccount(account_id, currency, limit_minor)
            return (account_id,)

        return self._attempt(run)

    def freeze(self, account_id: str) -> Answer:
        return self._attempt(lambda: self._status(account_id, to=FROZEN))

    def unfreeze(self, account_id: str) -> Answer:
        return self._attempt(lambda: self._status(account_id, to=ACTIVE))

    def close(self, account_id: str) -> Answer:
        return self._attempt(lambda: self._status(account_id, to=CLOSED))

    def _status(self, account_id: str, to: str) -> tuple[str, ...]:
        account = self.accounts[account_id]
        if account.status == CLOSED:
            raise Refused("ACCOUNT_CLOSED")
        if to == FROZEN and account.status == FROZEN:
            raise Refused("ACCOUNT_FROZEN")
        if to == ACTIVE and account.status != FROZEN:
            raise Refused("ACCOUNT_NOT_FROZEN")
        if to == CLOSED:
            if account.balance_minor != 0:
                raise Refused("ACCOUNT_NOT_EMPTY")
            if account.pending_debits_minor or account.pending_credits_minor:
                raise Refused("ACCOUNT_HAS_PENDING")
        account.status = to
        return (account_id,)

    # --- money movements ------------------------------------------------------

    def deposit(self, account_id: str, currency: str, amount: int, entry_id: str) -> Answer:
        legs = (Leg(system_key(currency), DEBIT, amount), Leg(account_id, CREDIT, amount))
        return self._attempt(lambda: self._post(entry_id, MOVEMENT, legs, currency))

    def withdraw(self, account_id: str, currency: str, amount: int, entry_id: str) -> Answer:
        legs = (Leg(account_id, DEBIT, amount), Leg(system_key(currency), CREDIT, amount))
        return self._attempt(lambda: self._post(entry_id, MOVEMENT, legs, currency))

    def transfer(
        self, from_id: str, to_id: str, currency: str, amount: int, entry_id: str
    ) -> Answer:
        if from_id == to_id:
            return Answer(VALIDATION_FAILED)
        legs = (Leg(from_id, DEBIT, amount), Leg(to_id, CREDIT, amount))
        return self._attempt(lambda: self._post(entry_id, MOVEMENT, legs, currency))

    def reverse(self, entry_id: str, force: bool, reversal_entry_id: str) -> Answer:
        def run() -> tuple[str, ...]:
            entry = self.entries.get(entry_id)
            if entry is None:
                raise Refused("ENTRY_NOT_FOUND")
            if entry.kind != MOVEMENT:
                raise Refused("ENTRY_NOT_REVERSIBLE")
            if entry.reversed:
                raise Refused("ENTRY_ALREADY_REVERSED")
            mirror = tuple(
                Leg(leg.account_id, CREDIT if leg.side == DEBIT else DEBIT, leg.amount_minor)
                for leg in entry.legs
            )
            currency = self._account(entry.legs[0].account_id).currency
            touched = self._post(reversal_entry_id, REVERSAL, mirror, currency, force=force)
            entry.reversed = True
            return touched

        return self._attempt(run)

    def _post(
        self, entry_id: str, kind: str, legs: tuple[Leg, ...], currency: str, force: bool = False
    ) -> tuple[str, ...]:
        """Checks every leg, rule by rule in the ledger's precedence, then posts them."""
        accounts = [self._account(leg.account_id) for leg in legs]
        if any(account.status == CLOSED for account in accounts):
            raise Refused("ACCOUNT_CLOSED")
        for leg, account in zip(legs, accounts, strict=True):
            if leg.side == DEBIT and account.status == FROZEN:
                raise Refused("ACCOUNT_FROZEN")
        if any(account.currency != currency for account in accounts):
            raise Refused("CURRENCY_MISMATCH")
        for leg, account in zip(legs, accounts, strict=True):
            # Only a debit is held to the floor; a system account has none, and a forced
            # reversal waives it.
            bound = leg.side == DEBIT and not account.system and not force
            if bound and account.available_minor - leg.amount_minor < -account.limit_minor:
                raise Refused("INSUFFICIENT_FUNDS")
        for leg, account in zip(legs, accounts, strict=True):
            signed = leg.amount_minor if leg.side == CREDIT else -leg.amount_minor
            account.balance_minor += signed
        self.entries[entry_id] = ModelEntry(entry_id, kind, legs)
        return tuple(leg.account_id for leg in legs if not self._account(leg.account_id).system)

    def _account(self, account_id: str) -> ModelAccount:
        if account_id.startswith("system:"):
            currency = account_id.removeprefix("system:")
            return self.accounts.setdefault(
                account_id, ModelAccount(account_id, currency, 0, system=True)
            )
        return self.accounts[account_id]

    # --- holds ----------------------------------------------------------------

    def create_hold(
        self,
        from_id: str,
        to_id: str,
        currency: str,
        amount: int,
        timeout_seconds: int,
        pending_id: str,
    ) -> Answer:
        if from_id == to_id:
            return Answer(VALIDATION_FAILED)

        def run() -> tuple[str, ...]:
            source, target = self.accounts[from_id], self.accounts[to_id]
            if CLOSED in (source.status, target.status):
                raise Refused("ACCOUNT_CLOSED")
            if source.status == FROZEN:
                raise Refused("ACCOUNT_FROZEN")
            if source.currency != currency or target.currency != currency:
                raise Refused("CURRENCY_MISMATCH")
            if source.available_minor - amount < -source.limit_minor:
                raise Refused("INSUFFICIENT_FUNDS")
            source.pending_debits_minor += amount
            target.pending_credits_minor += amount
            self.holds[pending_id] = ModelHold(pending_id, from_id, to_id, amount, timeout_seconds)
            return (from_id, to_id)

        return self._attempt(run)

    def post_hold(self, pending_id: str, amount: int, entry_id: str) -> Answer:
        """Posts ``amount`` of the hold (0: all of it)."""

        def run() -> tuple[str, ...]:
            hold = self._hold(pending_id)
            source, target = self.accounts[hold.from_id], self.accounts[hold.to_id]
            if source.status == FROZEN:
                raise Refused("ACCOUNT_FROZEN")
            if hold.state != PENDING:
                raise Refused("PENDING_TRANSFER_NOT_PENDING")
            posted = amount or hold.amount_minor
            if posted > hold.amount_minor:
                raise Refused("AMOUNT_EXCEEDS_PENDING")
            self._release(hold, POSTED)
            hold.posted_minor = posted
            source.balance_minor -= posted
            target.balance_minor += posted
            legs = (Leg(hold.from_id, DEBIT, posted), Leg(hold.to_id, CREDIT, posted))
            self.entries[entry_id] = ModelEntry(entry_id, HOLD_POST, legs)
            return (hold.from_id, hold.to_id)

        return self._attempt(run)

    def void_hold(self, pending_id: str) -> Answer:
        def run() -> tuple[str, ...]:
            hold = self._hold(pending_id)
            if hold.state != PENDING:
                raise Refused("PENDING_TRANSFER_NOT_PENDING")
            self._release(hold, VOIDED)
            return (hold.from_id, hold.to_id)

        return self._attempt(run)

    def expire(self, horizon_seconds: int) -> list[str]:
        """The ledger's clock moves ``horizon_seconds`` ahead: every pending hold with a
        timeout at most that long expires. Returns their ids."""
        due = [
            hold
            for hold in self.holds.values()
            if hold.state == PENDING and 0 < hold.timeout_seconds <= horizon_seconds
        ]
        for hold in due:
            self._release(hold, EXPIRED)
        return [hold.pending_id for hold in due]

    def expirable(self) -> bool:
        """Whether a pending hold has a timeout (so that moving the clock can matter)."""
        return any(h.state == PENDING and h.timeout_seconds for h in self.holds.values())

    def _hold(self, pending_id: str) -> ModelHold:
        hold = self.holds.get(pending_id)
        if hold is None:
            raise Refused("PENDING_TRANSFER_NOT_FOUND")
        return hold

    def _release(self, hold: ModelHold, state: str) -> None:
        self.accounts[hold.from_id].pending_debits_minor -= hold.amount_minor
        self.accounts[hold.to_id].pending_credits_minor -= hold.amount_minor
        hold.state = state

    # --- batches --------------------------------------------------------------

    def batch(self, items: list[Callable[[LedgerModel], Answer]], atomic: bool) -> list[Answer]:
        """Runs ``items`` in order, each seeing what the ones before it did.

        An atomic batch with a refused item changes nothing. When items are invalid,
        the ledger decides none of the batch: each invalid item keeps its reason and
        every other item answers LINKED_COMMAND_FAILED. Otherwise the first item the
        ledger refused keeps its reason and every other item answers
        LINKED_COMMAND_FAILED (a later one's own refusal was decided against a state
        that never was)."""
        before = copy.deepcopy((self.accounts, self.holds, self.entries))
        answers = [item(self) for item in items]
        refused = [i for i, a in enumerate(answers) if a.outcome != OK]
        if not atomic or not refused:
            return answers
        self.accounts, self.holds, self.entries = before
        invalid = [i for i in refused if answers[i].outcome == VALIDATION_FAILED]
        kept = set(invalid or refused[:1])
        return [
            answers[index] if index in kept else Answer(LINKED_COMMAND_FAILED)
            for index in range(len(items))
        ]

    # --- plumbing -------------------------------------------------------------

    def _attempt(self, run: Callable[[], tuple[str, ...]]) -> Answer:
        """Runs a command against a copy: a refused command changes nothing."""
        before = copy.deepcopy((self.accounts, self.holds, self.entries))
        try:
            touched = run()
        except Refused as refused:
            self.accounts, self.holds, self.entries = before
            return Answer(refused.reason)
        return Answer(OK, tuple((key, self.accounts[key].sums()) for key in dict.fromkeys(touched)))

    def user_accounts(self) -> dict[str, ModelAccount]:
        return {key: account for key, account in self.accounts.items() if not account.system}

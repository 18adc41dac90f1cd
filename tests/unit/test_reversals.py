"""The reversal rules on the pure domain (no database): decide_batch with ReverseEntry."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest

from chronos.domain import validation
from chronos.domain.accounts import Account
from chronos.domain.commands import (
    CloseAccount,
    Command,
    Deposit,
    FreezeAccount,
    Money,
    OpenAccount,
    ReverseEntry,
    TransferFunds,
    UnfreezeAccount,
    Withdraw,
)
from chronos.domain.errors import Reason, Rejection
from chronos.domain.events import EntryKind, EntryReversed, LinePosted
from chronos.domain.ledger import accounts_touched, system_account_id
from chronos.domain.reversals import original_line
from chronos.event_store.decisions import Accepted, decide_batch

A = "00000000-0000-4000-8000-00000000000a"
B = "00000000-0000-4000-8000-00000000000b"
EUR = "EUR"


class Books:
    """Runs commands through decide_batch on an in-memory state, keeping every entry's
    lines and the reversals, as the event store does."""

    def __init__(self) -> None:
        self.accounts: dict[str, Account | None] = {}
        self.lines: dict[str, list[LinePosted]] = {}
        self.reversed_by: dict[str, str] = {}
        self.ids = itertools.count(1)

    def new_id(self) -> str:
        return f"00000000-0000-4000-8000-{next(self.ids):012d}"

    def with_original(self, command: Command) -> Command:
        if not isinstance(command, ReverseEntry):
            return command
        original = tuple(original_line(line) for line in self.lines.get(command.entry_id, []))
        return replace(command, original=original)

    def run_batch(self, commands: list[Command]) -> list[Accepted | Rejection | None]:
        prepared: list[Command] = []
        for command in commands:
            validation.validate(command)
            prepared.append(self.with_original(validation.canonicalize(command)))
        touched = {a for c in prepared for a in accounts_touched(c)}
        view = {a: self.accounts.get(a) for a in touched}
        decision = decide_batch(prepared, view, self.new_id, reversed_by=self.reversed_by)
        for account in decision.accounts:
            self.accounts[account.account_id] = account
        for new in decision.events():
            if isinstance(new.event, LinePosted):
                self.lines.setdefault(new.event.entry_id, []).append(new.event)
        self.reversed_by.update(decision.reversals)
        return list(decision.outcomes)

    def run(self, command: Command) -> Accepted:
        (outcome,) = self.run_batch([command])
        if isinstance(outcome, Rejection):
            raise outcome
        assert isinstance(outcome, Accepted)
        return outcome

    def balance(self, account_id: str) -> int:
        account = self.accounts[account_id]
        assert account is not None
        return account.balance_minor


def money(minor: int) -> Money:
    return Money(currency=EUR, minor_units=minor)


def reverse(entry_id: str, request_id: str = "r", **kwargs: object) -> ReverseEntry:
    return ReverseEntry(request_id=request_id, entry_id=entry_id, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def books() -> Books:
    books = Books()
    books.run(OpenAccount(request_id="o1", account_id=A, owner_name="A", currency=EUR))
    books.run(OpenAccount(request_id="o2", account_id=B, owner_name="B", currency=EUR))
    books.run(Deposit(request_id="d1", account_id=A, amount=money(1000)))
    return books


def transfer(books: Books, minor: int = 300) -> str:
    return books.run(
        TransferFunds(request_id="t", from_account_id=A, to_account_id=B, amount=money(minor))
    ).entry_id


def test_a_reversal_mirrors_every_line_and_restores_the_balances(books: Books) -> None:
    entry_id = transfer(books)
    accepted = books.run(reverse(entry_id, reason="sent twice", metadata=(("case", "17"),)))
    assert (books.balance(A), books.balance(B)) == (1000, 0)
    lines = [new.event for new in accepted.events]
    assert all(isinstance(line, EntryReversed) for line in lines)
    original = books.lines[entry_id]
    for line, mirrored in zip(original, lines, strict=True):
        assert isinstance(mirrored, EntryReversed)
        assert (mirrored.account_id, mirrored.amount_minor, mirrored.line_index) == (
            line.account_id,
            line.amount_minor,
            line.line_index,
        )
        assert mirrored.side is not line.side
        assert mirrored.kind is EntryKind.REVERSAL
        assert mirrored.reverses_entry_id == entry_id
        assert mirrored.description == "sent twice"
        assert mirrored.metadata == (("case", "17"),)
    assert accepted.entry_id != entry_id and accepted.account_id == A
    assert books.reversed_by[entry_id] == accepted.entry_id


def test_a_deposit_reversal_debits_the_account_and_credits_the_system_account(
    books: Books,
) -> None:
    (deposit,) = [e for e, lines in books.lines.items() if lines[0].kind is EntryKind.DEPOSIT]
    books.run(reverse(deposit))
    assert books.balance(A) == 0
    assert books.balance(system_account_id(EUR)) == 0


def test_an_unknown_entry_is_not_found(books: Books) -> None:
    with pytest.raises(Rejection) as caught:
        books.run(reverse("00000000-0000-4000-8000-0000000000ff"))
    assert caught.value.reason is Reason.ENTRY_NOT_FOUND


def test_an_entry_is_reversed_at_most_once(books: Books) -> None:
    entry_id = transfer(books)
    first = books.run(reverse(entry_id, "r1"))
    with pytest.raises(Rejection) as caught:
        books.run(reverse(entry_id, "r2"))
    assert caught.value.reason is Reason.ENTRY_ALREADY_REVERSED
    assert caught.value.metadata["reversal_entry_id"] == first.entry_id
    assert (books.balance(A), books.balance(B)) == (1000, 0)


def test_two_reversals_of_one_entry_in_one_batch_accept_only_the_first(books: Books) -> None:
    entry_id = transfer(books)
    first, second = books.run_batch([reverse(entry_id, "r1"), reverse(entry_id, "r2")])
    assert isinstance(first, Accepted)
    assert isinstance(second, Rejection)
    assert second.reason is Reason.ENTRY_ALREADY_REVERSED
    assert (books.balance(A), books.balance(B)) == (1000, 0)


def test_a_reversal_is_not_reversible(books: Books) -> None:
    reversal = books.run(reverse(transfer(books))).entry_id
    with pytest.raises(Rejection) as caught:
        books.run(reverse(reversal, "r2"))
    assert caught.value.reason is Reason.ENTRY_NOT_REVERSIBLE
    assert "cannot be reversed" in caught.value.message


def test_below_the_limit_is_refused_unless_forced(books: Books) -> None:
    entry_id = transfer(books, 300)
    books.run(Withdraw(request_id="w", account_id=B, amount=money(200)))
    with pytest.raises(Rejection) as caught:
        books.run(reverse(entry_id, "r1"))
    assert caught.value.reason is Reason.INSUFFICIENT_FUNDS
    assert books.balance(B) == 100
    books.run(reverse(entry_id, "r2", force=True))
    assert (books.balance(A), books.balance(B)) == (1000, -200)


def test_an_account_below_its_limit_takes_credits_and_refuses_debits(books: Books) -> None:
    """Found by the model-based test: a credit to an account that a forced reversal left
    below its floor was refused as INSUFFICIENT_FUNDS (a deposit, a transfer in, and the
    credit line of a reversal alike), which kept it overdrawn."""
    books.run(Deposit(request_id="d0", account_id=B, amount=money(100)))
    paid_back = books.run(
        TransferFunds(request_id="t0", from_account_id=B, to_account_id=A, amount=money(100))
    ).entry_id
    entry_id = transfer(books, 300)
    books.run(Withdraw(request_id="w", account_id=B, amount=money(300)))
    books.run(reverse(entry_id, "r1", force=True))
    assert books.balance(B) == -300
    books.run(Deposit(request_id="d2", account_id=B, amount=money(50)))
    books.run(TransferFunds(request_id="t2", from_account_id=A, to_account_id=B, amount=money(20)))
    books.run(reverse(paid_back, "r2"))
    assert books.balance(B) == -130
    with pytest.raises(Rejection) as caught:
        books.run(Withdraw(request_id="w2", account_id=B, amount=money(1)))
    assert caught.value.reason is Reason.INSUFFICIENT_FUNDS
    assert books.balance(B) == -130


def test_a_frozen_account_takes_the_credit_but_not_the_debit(books: Books) -> None:
    entry_id = transfer(books)
    books.run(FreezeAccount(request_id="f1", account_id=B))
    with pytest.raises(Rejection) as caught:
        books.run(reverse(entry_id, "r1", force=True))
    assert caught.value.reason is Reason.ACCOUNT_FROZEN
    assert caught.value.metadata["account_id"] == B
    books.run(UnfreezeAccount(request_id="u1", account_id=B))
    books.run(FreezeAccount(request_id="f2", account_id=A))
    books.run(reverse(entry_id, "r2"))
    assert (books.balance(A), books.balance(B)) == (1000, 0)


def test_a_closed_account_refuses_the_reversal(books: Books) -> None:
    entry_id = transfer(books, 300)
    books.run(Withdraw(request_id="w", account_id=B, amount=money(300)))
    books.run(CloseAccount(request_id="c", account_id=B))
    with pytest.raises(Rejection) as caught:
        books.run(reverse(entry_id, "r1", force=True))
    assert caught.value.reason is Reason.ACCOUNT_CLOSED


def test_validation_names_the_entry_id_and_the_metadata() -> None:
    with pytest.raises(Rejection) as caught:
        validation.validate(reverse("not-a-uuid", metadata=(("", "x"),)))
    fields = {violation.field for violation in caught.value.violations}
    assert "entry_id" in fields
    assert any(field.startswith("metadata") for field in fields)


def test_the_entry_id_is_compared_canonically() -> None:
    command = validation.canonicalize(reverse("{" + A.upper() + "}"))
    assert isinstance(command, ReverseEntry) and command.entry_id == A

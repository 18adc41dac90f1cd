"""Ledger rules on the pure domain (no database): decide + evolve."""

from __future__ import annotations

import itertools

import pytest

from chronos.domain import validation
from chronos.domain.accounts import Account, AccountStatus, evolve
from chronos.domain.commands import (
    CloseAccount,
    Command,
    Deposit,
    FreezeAccount,
    JournalLine,
    Money,
    OpenAccount,
    PostJournalEntry,
    Side,
    TransferFunds,
    UnfreezeAccount,
    Withdraw,
)
from chronos.domain.errors import Reason, Rejection
from chronos.domain.events import AccountKind, FundsTransferred, LinePosted
from chronos.domain.ledger import accounts_touched, decide, system_account_id

A = "00000000-0000-4000-8000-00000000000a"
B = "00000000-0000-4000-8000-00000000000b"
C = "00000000-0000-4000-8000-00000000000c"


class FakeLedger:
    """Runs commands the way the writer does, on an in-memory dict."""

    def __init__(self) -> None:
        self.accounts: dict[str, Account] = {}
        self.counter = itertools.count(1)
        self.events: list[tuple[str, int, object]] = []

    def new_id(self) -> str:
        return f"id-{next(self.counter)}"

    def run(self, command: Command) -> list[object]:
        validation.validate(command)
        command = validation.canonicalize(command)
        view = {a: self.accounts.get(a) for a in accounts_touched(command)}
        decision = decide(command, view, self.new_id)
        for event in decision.events:
            current = self.accounts.get(event.account_id)
            version = 1 if current is None else current.version + 1
            self.accounts[event.account_id] = evolve(current, event, version)
            self.events.append((event.account_id, version, event))
        return list(decision.events)

    def balance(self, account_id: str) -> int:
        return self.accounts[account_id].balance_minor


def eur(minor: int) -> Money:
    return Money(currency="EUR", minor_units=minor)


@pytest.fixture
def ledger() -> FakeLedger:
    ledger = FakeLedger()
    ledger.run(OpenAccount(request_id="o1", account_id=A, owner_name="Ada", currency="EUR"))
    ledger.run(
        OpenAccount(
            request_id="o2",
            account_id=B,
            owner_name="Bob",
            currency="EUR",
            overdraft_limit_minor=500,
        )
    )
    return ledger


def rejection_of(ledger: FakeLedger, command: Command) -> Rejection:
    with pytest.raises(Rejection) as caught:
        ledger.run(command)
    return caught.value


def test_deposit_posts_against_the_currency_system_account(ledger: FakeLedger) -> None:
    events = ledger.run(Deposit(request_id="d", account_id=A, amount=eur(1000)))
    system = system_account_id("EUR")
    assert ledger.balance(A) == 1000
    assert ledger.balance(system) == -1000
    assert ledger.accounts[system].kind is AccountKind.SYSTEM
    lines = [e for e in events if isinstance(e, LinePosted)]
    assert [(line.account_id, line.side) for line in lines] == [
        (system, Side.DEBIT),
        (A, Side.CREDIT),
    ]


def test_every_currency_sums_to_zero(ledger: FakeLedger) -> None:
    ledger.run(Deposit(request_id="d", account_id=A, amount=eur(1000)))
    ledger.run(TransferFunds(request_id="t", from_account_id=A, to_account_id=B, amount=eur(400)))
    ledger.run(Withdraw(request_id="w", account_id=B, amount=eur(100)))
    assert sum(a.balance_minor for a in ledger.accounts.values()) == 0
    assert ledger.balance(A) == 600 and ledger.balance(B) == 300


def test_balance_never_below_minus_overdraft_limit(ledger: FakeLedger) -> None:
    rejection = rejection_of(ledger, Withdraw(request_id="w", account_id=A, amount=eur(1)))
    assert rejection.reason is Reason.INSUFFICIENT_FUNDS
    ledger.run(Withdraw(request_id="w2", account_id=B, amount=eur(500)))
    assert ledger.balance(B) == -500
    rejection = rejection_of(ledger, Withdraw(request_id="w3", account_id=B, amount=eur(1)))
    assert rejection.reason is Reason.INSUFFICIENT_FUNDS


def test_frozen_account_accepts_credits_but_no_debits(ledger: FakeLedger) -> None:
    ledger.run(Deposit(request_id="d", account_id=A, amount=eur(1000)))
    ledger.run(FreezeAccount(request_id="f", account_id=A, reason="fraud check"))
    ledger.run(Deposit(request_id="d2", account_id=A, amount=eur(5)))
    assert ledger.balance(A) == 1005
    rejection = rejection_of(
        ledger, TransferFunds(request_id="t", from_account_id=A, to_account_id=B, amount=eur(1))
    )
    assert rejection.reason is Reason.ACCOUNT_FROZEN
    assert rejection_of(ledger, FreezeAccount(request_id="f2", account_id=A)).reason is (
        Reason.ACCOUNT_FROZEN
    )
    ledger.run(UnfreezeAccount(request_id="u", account_id=A))
    ledger.run(TransferFunds(request_id="t2", from_account_id=A, to_account_id=B, amount=eur(1)))
    assert rejection_of(ledger, UnfreezeAccount(request_id="u2", account_id=A)).reason is (
        Reason.ACCOUNT_NOT_FROZEN
    )


def test_close_only_at_zero_and_closed_accepts_nothing(ledger: FakeLedger) -> None:
    ledger.run(Deposit(request_id="d", account_id=A, amount=eur(10)))
    assert rejection_of(ledger, CloseAccount(request_id="c", account_id=A)).reason is (
        Reason.ACCOUNT_NOT_EMPTY
    )
    ledger.run(Withdraw(request_id="w", account_id=A, amount=eur(10)))
    ledger.run(CloseAccount(request_id="c2", account_id=A))
    assert ledger.accounts[A].status is AccountStatus.CLOSED
    for command in (
        Deposit(request_id="d3", account_id=A, amount=eur(1)),
        TransferFunds(request_id="t", from_account_id=B, to_account_id=A, amount=eur(1)),
        FreezeAccount(request_id="f", account_id=A),
        CloseAccount(request_id="c3", account_id=A),
    ):
        assert rejection_of(ledger, command).reason is Reason.ACCOUNT_CLOSED


def test_currency_mismatch(ledger: FakeLedger) -> None:
    ledger.run(OpenAccount(request_id="o3", account_id=C, owner_name="Cy", currency="USD"))
    ledger.run(Deposit(request_id="d", account_id=A, amount=eur(10)))
    rejection = rejection_of(
        ledger, TransferFunds(request_id="t", from_account_id=A, to_account_id=C, amount=eur(1))
    )
    assert rejection.reason is Reason.CURRENCY_MISMATCH
    rejection = rejection_of(
        ledger,
        Deposit(request_id="d2", account_id=A, amount=Money(currency="USD", minor_units=1)),
    )
    assert rejection.reason is Reason.CURRENCY_MISMATCH


def test_unknown_account_and_duplicate_open(ledger: FakeLedger) -> None:
    rejection = rejection_of(ledger, Deposit(request_id="d", account_id=C, amount=eur(1)))
    assert rejection.reason is Reason.ACCOUNT_NOT_FOUND
    assert rejection.metadata["account_id"] == C
    rejection = rejection_of(
        ledger, OpenAccount(request_id="o", account_id=A, owner_name="X", currency="EUR")
    )
    assert rejection.reason is Reason.ACCOUNT_EXISTS


def test_journal_entry_with_fee_is_atomic_and_balanced(ledger: FakeLedger) -> None:
    ledger.run(OpenAccount(request_id="o3", account_id=C, owner_name="Fees", currency="EUR"))
    ledger.run(Deposit(request_id="d", account_id=A, amount=eur(1000)))
    entry = PostJournalEntry(
        request_id="j",
        lines=(
            JournalLine(account_id=A, amount=eur(110), side=Side.DEBIT),
            JournalLine(account_id=B, amount=eur(100), side=Side.CREDIT),
            JournalLine(account_id=C, amount=eur(10), side=Side.CREDIT),
        ),
    )
    ledger.run(entry)
    assert (ledger.balance(A), ledger.balance(B), ledger.balance(C)) == (890, 100, 10)
    too_much = PostJournalEntry(
        request_id="j2",
        lines=(
            JournalLine(account_id=C, amount=eur(5), side=Side.CREDIT),
            JournalLine(account_id=A, amount=eur(5000), side=Side.DEBIT),
            JournalLine(account_id=B, amount=eur(4995), side=Side.CREDIT),
        ),
    )
    assert rejection_of(ledger, too_much).reason is Reason.INSUFFICIENT_FUNDS
    assert (ledger.balance(A), ledger.balance(B), ledger.balance(C)) == (890, 100, 10)


@pytest.mark.parametrize(
    ("command", "fields"),
    [
        (Deposit(request_id="", account_id=A, amount=eur(1)), {"request_id"}),
        (Deposit(request_id="x" * 129, account_id=A, amount=eur(1)), {"request_id"}),
        (Deposit(request_id="r", account_id="nope", amount=eur(1)), {"account_id"}),
        (Deposit(request_id="r", account_id=A, amount=eur(0)), {"amount.minor_units"}),
        (Deposit(request_id="r", account_id=A, amount=eur(-5)), {"amount.minor_units"}),
        (
            Deposit(request_id="r", account_id=A, amount=Money(currency="EURO", minor_units=1)),
            {"amount.currency"},
        ),
        (
            Deposit(request_id="r", account_id=A, amount=Money(currency="ZZZ", minor_units=1)),
            {"amount.currency"},
        ),
        (
            TransferFunds(
                request_id="r", from_account_id=A, to_account_id=A.upper(), amount=eur(1)
            ),
            {"to_account_id"},
        ),
        (PostJournalEntry(request_id="r", lines=()), {"lines"}),
        (
            PostJournalEntry(
                request_id="r",
                lines=(
                    JournalLine(account_id=A, amount=eur(5), side=Side.DEBIT),
                    JournalLine(account_id=B, amount=eur(4), side=Side.CREDIT),
                ),
            ),
            {"lines"},
        ),
        (
            PostJournalEntry(
                request_id="r",
                lines=(
                    JournalLine(account_id=A, amount=eur(5), side=None),
                    JournalLine(account_id=B, amount=eur(5), side=Side.CREDIT),
                ),
            ),
            {"lines[0].side"},
        ),
        (
            OpenAccount(request_id="r", account_id="", owner_name="", currency="EUR"),
            {"owner_name"},
        ),
        (
            OpenAccount(request_id="r", account_id="", owner_name="n" * 201, currency="EUR"),
            {"owner_name"},
        ),
        (
            OpenAccount(
                request_id="r",
                account_id=system_account_id("EUR"),
                owner_name="sneaky",
                currency="EUR",
            ),
            {"account_id"},
        ),
        (
            Deposit(request_id="r", account_id=system_account_id("EUR"), amount=eur(1)),
            {"account_id"},
        ),
        (
            Deposit(request_id="r", account_id=A, amount=eur(1), description="d" * 501),
            {"description"},
        ),
        # PostgreSQL refuses NUL in text; other control characters have no place in a
        # name or a key, and free text keeps only tabs and line breaks.
        (
            OpenAccount(request_id="r", account_id="", owner_name="A\x00da", currency="EUR"),
            {"owner_name"},
        ),
        (
            OpenAccount(request_id="r", account_id="", owner_name="Ada\n", currency="EUR"),
            {"owner_name"},
        ),
        # Only format characters and combining marks: nothing a listing would show.
        (
            OpenAccount(request_id="r", account_id="", owner_name="\u200b\u0301", currency="EUR"),
            {"owner_name"},
        ),
        (
            OpenAccount(
                request_id="r",
                account_id="",
                owner_name="Ada",
                currency="EUR",
                metadata=(("k\x00", "v"), ("ok", "line\nbreak\ttab"), ("x", "\x1b[31m")),
            ),
            {"metadata['k\\x00']", "metadata['x']"},
        ),
        (
            Withdraw(request_id="r", account_id=A, amount=eur(1), description="a\x00"),
            {"description"},
        ),
        (
            CloseAccount(request_id="r", account_id=A, reason="\x9b2J"),
            {"reason"},
        ),
    ],
)
def test_validation_reports_each_bad_field(command: Command, fields: set[str]) -> None:
    with pytest.raises(Rejection) as caught:
        validation.validate(command)
    assert caught.value.reason is Reason.VALIDATION_FAILED
    assert {v.field for v in caught.value.violations} == fields


def test_overflowing_balance_is_refused(ledger: FakeLedger) -> None:
    ledger.run(Deposit(request_id="d", account_id=A, amount=eur(2**63 - 1)))
    rejection = rejection_of(ledger, Deposit(request_id="d2", account_id=A, amount=eur(1)))
    assert rejection.reason is Reason.BALANCE_OVERFLOW
    assert ledger.balance(A) == 2**63 - 1


def test_text_may_hold_line_breaks_and_any_script_but_no_control_characters(
    ledger: FakeLedger,
) -> None:
    ledger.run(
        OpenAccount(
            request_id="o",
            account_id=C,
            # A zero-width non-joiner (U+200C, a format character, not a control one)
            # belongs in Persian names.
            owner_name="Zoë \u0645\u06cc\u200c\u0634\u0648\u062f 👩‍💻",
            currency="EUR",
            metadata=(("note", "two\r\nlines\tand a tab"),),
        )
    )
    ledger.run(Deposit(request_id="d", account_id=C, amount=eur(1), description="a\nb"))
    assert ledger.balance(C) == 1
    rejection = rejection_of(
        ledger, Deposit(request_id="d2", account_id=C, amount=eur(1), description="a\x07b")
    )
    assert rejection.reason is Reason.VALIDATION_FAILED
    assert [(v.field, v.description) for v in rejection.violations] == [
        (
            "description",
            "must not contain control characters other than tab and line breaks "
            "(U+0007 at index 1)",
        )
    ]


def test_a_system_account_leaving_the_int64_range_is_an_overflow(ledger: FakeLedger) -> None:
    # A system account has no overdraft limit: only the signed 64-bit range bounds it,
    # so going below it is an overflow, not a lack of funds.
    ledger.run(Deposit(request_id="d", account_id=A, amount=eur(2**63 - 1)))
    system = system_account_id("EUR")
    assert ledger.balance(system) == -(2**63 - 1)
    rejection = rejection_of(ledger, Deposit(request_id="d2", account_id=B, amount=eur(2)))
    assert rejection.reason is Reason.BALANCE_OVERFLOW
    assert rejection.metadata == {"account_id": system}
    assert ledger.balance(B) == 0


def test_evolve_refuses_a_version_gap(ledger: FakeLedger) -> None:
    event = FundsTransferred(
        entry_id="e",
        account_id=A,
        side=Side.CREDIT,
        currency="EUR",
        amount_minor=1,
        balance_after_minor=1,
    )
    with pytest.raises(AssertionError):
        evolve(ledger.accounts[A], event, ledger.accounts[A].version + 2)


def test_fingerprint_ignores_id_case_but_not_amount() -> None:
    def fingerprint(command: Command) -> bytes:
        return validation.fingerprint(validation.canonicalize(command))

    lower = Deposit(request_id="r", account_id=A, amount=eur(1))
    upper = Deposit(request_id="r", account_id=A.upper(), amount=eur(1))
    other = Deposit(request_id="r", account_id=A, amount=eur(2))
    assert fingerprint(lower) == fingerprint(upper)
    assert fingerprint(lower) != fingerprint(other)

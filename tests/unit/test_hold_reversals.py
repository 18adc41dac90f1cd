"""Reversals and holds together, without a database: a hold is not reversible, and a
reversal obeys the available balance (posted less held) like every other posting."""

from __future__ import annotations

from dataclasses import replace

from chronos.domain.commands import Command, Deposit, ReverseEntry
from chronos.domain.errors import Reason, Rejection
from chronos.domain.events import EntryReversed, LinePosted
from chronos.domain.reversals import original_line
from chronos.event_store.decisions import Accepted
from tests.unit.test_holds import A, B, Ledger, eur


class Books(Ledger):
    """The holds' in-memory ledger, also keeping every entry's lines, as the event store
    does, so that a ReverseEntry carries the lines of the entry it names."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: dict[str, list[LinePosted]] = {}

    def attempt(self, command: Command) -> Accepted | Rejection:
        if isinstance(command, ReverseEntry):
            lines = self.lines.get(command.entry_id, [])
            command = replace(command, original=tuple(original_line(line) for line in lines))
        outcome = super().attempt(command)
        if isinstance(outcome, Accepted):
            for new in outcome.events:
                if isinstance(new.event, LinePosted):
                    self.lines.setdefault(new.event.entry_id, []).append(new.event)
        return outcome

    def deposit(self, account_id: str, minor: int) -> str:
        command = Deposit(request_id=self.request(), account_id=account_id, amount=eur(minor))
        return self.run(command).entry_id

    def reverse(self, entry_id: str, *, force: bool = False) -> ReverseEntry:
        return ReverseEntry(request_id=self.request(), entry_id=entry_id, force=force)


def books_with_a_hold(deposit_minor: int, hold_minor: int) -> tuple[Books, str, str]:
    """A funded by one deposit, then a hold of ``hold_minor`` from A to B."""
    books = Books()
    books.open(A)
    books.open(B)
    deposit = books.deposit(A, deposit_minor)
    return books, deposit, books.hold(hold_minor)


def test_the_post_of_a_hold_is_not_reversible() -> None:
    books, _, pending_id = books_with_a_hold(1000, 300)
    captured = books.run(books.post(pending_id, 200)).entry_id
    assert captured and captured in books.lines
    refusal = books.refused(books.reverse(captured), Reason.ENTRY_NOT_REVERSIBLE)
    assert "hold" in refusal.message
    assert refusal.metadata == {"entry_id": captured}
    # Nor when forced: force waives the limit only.
    books.refused(books.reverse(captured, force=True), Reason.ENTRY_NOT_REVERSIBLE)
    assert books.sums(A) == (800, 0, 0, 800)
    assert books.sums(B) == (200, 0, 0, 200)


def test_a_pending_id_names_no_entry() -> None:
    # Placing, voiding or expiring a hold posts no entry: there is nothing to reverse.
    books, _, pending_id = books_with_a_hold(1000, 300)
    books.refused(books.reverse(pending_id), Reason.ENTRY_NOT_FOUND)
    books.run(books.void(pending_id))
    books.refused(books.reverse(pending_id), Reason.ENTRY_NOT_FOUND)


def test_a_reversal_cannot_spend_money_held_for_a_hold() -> None:
    # Balance 1,000, of which 700 is held: available 300. Reversing the deposit would
    # leave a balance of 0, which the posted balance alone would allow, but an available
    # balance of -700 below the floor of 0.
    books, deposit, _ = books_with_a_hold(1000, 700)
    refusal = books.refused(books.reverse(deposit), Reason.INSUFFICIENT_FUNDS)
    assert "available balance is 300" in refusal.message
    assert refusal.metadata["account_id"] == A
    assert books.sums(A) == (1000, 700, 0, 300)


def test_a_reversal_goes_through_once_the_hold_is_voided() -> None:
    books, deposit, pending_id = books_with_a_hold(1000, 700)
    books.run(books.void(pending_id))
    accepted = books.run(books.reverse(deposit))
    assert books.sums(A) == (0, 0, 0, 0)
    assert all(isinstance(new.event, EntryReversed) for new in accepted.events)


def test_a_forced_reversal_may_spend_held_money_and_its_lines_show_the_hold() -> None:
    books, deposit, _ = books_with_a_hold(1000, 700)
    accepted = books.run(books.reverse(deposit, force=True))
    assert books.sums(A) == (0, 700, 0, -700)
    (line,) = [
        new.event
        for new in accepted.events
        if isinstance(new.event, EntryReversed) and new.event.account_id == A
    ]
    # The statement line shows the account's open hold, so its available balance.
    assert (line.balance_after_minor, line.pending_debits_after_minor) == (0, 700)
    assert line.reverses_entry_id == deposit

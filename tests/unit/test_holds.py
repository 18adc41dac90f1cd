"""The rules of holds, without a database: place, post (all or part), void, expire.

Each step runs through ``decide_batch`` (as the writer does) against a small in-memory
ledger whose clock the test sets, and folds the accepted events with ``evolve``, so the
account assertions (versions, balances, pending sums) hold at every step. Covers every
hold reason and the failure cases other ledgers' users reported (Blnk #41, #42, #62,
#182, #293).
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from chronos.domain.accounts import Account, AccountStatus
from chronos.domain.commands import (
    CloseAccount,
    Command,
    CreatePendingTransfer,
    Deposit,
    ExpirePendingTransfer,
    FreezeAccount,
    Money,
    OpenAccount,
    PostPendingTransfer,
    TransferFunds,
    VoidPendingTransfer,
    Withdraw,
)
from chronos.domain.errors import Reason, Rejection
from chronos.domain.events import (
    PendingTransferCreated,
    PendingTransferExpired,
    PendingTransferPosted,
    PendingTransferVoided,
)
from chronos.domain.holds import HoldState, PendingTransfer
from chronos.domain.ledger import accounts_touched
from chronos.domain.validation import validate
from chronos.event_store import hold_events, mapper
from chronos.event_store.decisions import Accepted, decide_batch
from chronos.read_model.documents import EventRecord
from chronos.read_model.hold_documents import hold_document
from command_server.holds import with_hold_accounts

A = "00000000-0000-4000-8000-00000000000a"
B = "00000000-0000-4000-8000-00000000000b"
C = "00000000-0000-4000-8000-00000000000c"
UNKNOWN = "00000000-0000-4000-8000-0000000000ff"
START = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def eur(minor: int) -> Money:
    return Money(currency="EUR", minor_units=minor)


class Ledger:
    """Accounts and holds, changed only by accepted decisions; ``now`` is the clock."""

    def __init__(self) -> None:
        self.accounts: dict[str, Account | None] = {}
        self.holds: dict[str, PendingTransfer | None] = {}
        self.now = START
        self._ids = itertools.count(1)
        self._requests = itertools.count(1)

    def new_id(self) -> str:
        return f"00000000-0000-4000-8000-{next(self._ids):012d}"

    def run(self, command: Command) -> Accepted:
        outcome = self.attempt(command)
        assert isinstance(outcome, Accepted), outcome
        return outcome

    def attempt(self, command: Command) -> Accepted | Rejection:
        validate(command)
        if isinstance(command, PostPendingTransfer | VoidPendingTransfer):
            # As the server does: the hold's accounts are filled in from the hold.
            hold = self.holds.get(command.pending_id)
            if hold is not None:
                command = replace(
                    command,
                    from_account_id=hold.from_account_id,
                    to_account_id=hold.to_account_id,
                )
        # As the writer loads them: every touched account, None when not opened.
        snapshot = {a: self.accounts.get(a) for a in accounts_touched(command)}
        decision = decide_batch([command], snapshot, self.new_id, holds=self.holds, now=self.now)
        (outcome,) = decision.outcomes
        assert outcome is not None
        for account in decision.accounts:
            self.accounts[account.account_id] = account
        for hold in decision.holds:
            self.holds[hold.pending_id] = hold
        return outcome

    def refused(self, command: Command, reason: Reason) -> Rejection:
        before = (dict(self.accounts), dict(self.holds))
        outcome = self.attempt(command)
        assert isinstance(outcome, Rejection), outcome
        assert outcome.reason is reason, outcome
        assert outcome.message
        # A refusal changes nothing.
        assert (dict(self.accounts), dict(self.holds)) == before
        return outcome

    def request(self) -> str:
        return f"r-{next(self._requests)}"

    def account(self, account_id: str) -> Account:
        account = self.accounts[account_id]
        assert account is not None
        return account

    def sums(self, account_id: str) -> tuple[int, int, int, int]:
        """(balance, pending debits, pending credits, available)."""
        account = self.account(account_id)
        return (
            account.balance_minor,
            account.pending_debits_minor,
            account.pending_credits_minor,
            account.available_minor,
        )

    def open(self, account_id: str, *, deposit_minor: int = 0, limit_minor: int = 0) -> None:
        self.run(
            OpenAccount(
                request_id=self.request(),
                account_id=account_id,
                owner_name="Owner",
                currency="EUR",
                overdraft_limit_minor=limit_minor,
            )
        )
        if deposit_minor:
            self.run(
                Deposit(request_id=self.request(), account_id=account_id, amount=eur(deposit_minor))
            )

    def hold(
        self, minor: int, *, timeout_seconds: int = 0, source: str = A, target: str = B
    ) -> str:
        accepted = self.run(
            self.create(minor, timeout_seconds=timeout_seconds, source=source, target=target)
        )
        assert accepted.pending_id
        return accepted.pending_id

    def create(
        self, minor: int, *, timeout_seconds: int = 0, source: str = A, target: str = B
    ) -> CreatePendingTransfer:
        return CreatePendingTransfer(
            request_id=self.request(),
            from_account_id=source,
            to_account_id=target,
            amount=eur(minor),
            description="card authorization",
            timeout_seconds=timeout_seconds,
        )

    def post(self, pending_id: str, minor: int = 0, currency: str = "") -> PostPendingTransfer:
        return PostPendingTransfer(
            request_id=self.request(),
            pending_id=pending_id,
            amount=Money(currency=currency, minor_units=minor),
        )

    def void(self, pending_id: str) -> VoidPendingTransfer:
        return VoidPendingTransfer(
            request_id=self.request(), pending_id=pending_id, reason="cancelled"
        )

    def expire(self, pending_id: str) -> ExpirePendingTransfer:
        hold = self.holds[pending_id]
        assert hold is not None
        return ExpirePendingTransfer(
            request_id=f"expire:{pending_id}",
            pending_id=pending_id,
            from_account_id=hold.from_account_id,
            to_account_id=hold.to_account_id,
        )


@pytest.fixture
def ledger() -> Ledger:
    ledger = Ledger()
    ledger.open(A, deposit_minor=1000)
    ledger.open(B)
    return ledger


def test_a_hold_lowers_available_not_the_balance(ledger: Ledger) -> None:
    accepted = ledger.hold(300)
    assert ledger.sums(A) == (1000, 300, 0, 700)
    # Pending credits never count as available.
    assert ledger.sums(B) == (0, 0, 300, 0)
    hold = ledger.holds[accepted]
    assert hold is not None and hold.state is HoldState.PENDING and hold.expires_at is None


def test_the_answer_reports_pending_and_available(ledger: Ledger) -> None:
    accepted = ledger.run(ledger.create(300))
    balances = {b.account_id: b for b in accepted.balances}
    assert (balances[A].balance_minor, balances[A].pending_debits_minor) == (1000, 300)
    assert balances[A].available_minor == 700
    assert balances[B].pending_credits_minor == 300
    assert [type(e.event) for e in accepted.events] == [PendingTransferCreated] * 2


def test_post_in_full_moves_the_money_and_ends_the_hold(ledger: Ledger) -> None:
    pending_id = ledger.hold(300)
    accepted = ledger.run(ledger.post(pending_id))
    assert accepted.entry_id and accepted.pending_id == pending_id
    assert ledger.sums(A) == (700, 0, 0, 700)
    assert ledger.sums(B) == (300, 0, 0, 300)
    events = [e.event for e in accepted.events]
    assert all(isinstance(e, PendingTransferPosted) for e in events)
    hold = ledger.holds[pending_id]
    assert hold is not None and (hold.state, hold.posted_minor) == (HoldState.POSTED, 300)


def test_a_partial_post_moves_part_and_releases_the_rest(ledger: Ledger) -> None:
    pending_id = ledger.hold(300)
    accepted = ledger.run(ledger.post(pending_id, 120, "EUR"))
    assert ledger.sums(A) == (880, 0, 0, 880)
    assert ledger.sums(B) == (120, 0, 0, 120)
    posted = accepted.events[0].event
    assert isinstance(posted, PendingTransferPosted)
    assert (posted.amount_minor, posted.released_minor) == (120, 180)


def test_void_releases_the_hold(ledger: Ledger) -> None:
    pending_id = ledger.hold(300)
    accepted = ledger.run(ledger.void(pending_id))
    assert [type(e.event) for e in accepted.events] == [PendingTransferVoided] * 2
    assert ledger.sums(A) == (1000, 0, 0, 1000)
    assert ledger.sums(B) == (0, 0, 0, 0)


def test_expiry_with_an_injected_clock(ledger: Ledger) -> None:
    pending_id = ledger.hold(300, timeout_seconds=60)
    hold = ledger.holds[pending_id]
    assert hold is not None and hold.expires_at == START + timedelta(seconds=60)
    ledger.now = START + timedelta(seconds=59)
    ledger.refused(ledger.expire(pending_id), Reason.PENDING_TRANSFER_NOT_PENDING)
    ledger.run(ledger.post(pending_id, 1))  # still pending a second before its timeout
    pending_id = ledger.hold(300, timeout_seconds=60)
    ledger.now = START + timedelta(seconds=120)
    accepted = ledger.run(ledger.expire(pending_id))
    assert [type(e.event) for e in accepted.events] == [PendingTransferExpired] * 2
    assert ledger.sums(A) == (999, 0, 0, 999)
    expired = ledger.holds[pending_id]
    assert expired is not None and expired.state is HoldState.EXPIRED
    # Each hold expires once.
    ledger.refused(ledger.expire(pending_id), Reason.PENDING_TRANSFER_NOT_PENDING)


def test_a_hold_past_its_timeout_cannot_be_posted_or_voided_before_the_job_ran(
    ledger: Ledger,
) -> None:
    pending_id = ledger.hold(300, timeout_seconds=10)
    ledger.now = START + timedelta(seconds=10)
    for command in (ledger.post(pending_id), ledger.void(pending_id)):
        refusal = ledger.refused(command, Reason.PENDING_TRANSFER_NOT_PENDING)
        assert refusal.metadata["state"] == "EXPIRED"
    assert ledger.sums(A) == (1000, 300, 0, 700)  # until the expiry job runs


def test_blnk_41_void_twice_releases_once(ledger: Ledger) -> None:
    pending_id = ledger.hold(300)
    ledger.run(ledger.void(pending_id))
    refusal = ledger.refused(ledger.void(pending_id), Reason.PENDING_TRANSFER_NOT_PENDING)
    assert refusal.metadata == {"pending_id": pending_id, "state": "VOIDED"}
    assert ledger.sums(A) == (1000, 0, 0, 1000)


def test_blnk_42_no_post_after_a_void(ledger: Ledger) -> None:
    pending_id = ledger.hold(300)
    ledger.run(ledger.void(pending_id))
    ledger.refused(ledger.post(pending_id), Reason.PENDING_TRANSFER_NOT_PENDING)
    assert ledger.sums(B) == (0, 0, 0, 0)


def test_no_void_after_a_post_and_no_second_post(ledger: Ledger) -> None:
    pending_id = ledger.hold(300)
    ledger.run(ledger.post(pending_id, 100))
    ledger.refused(ledger.void(pending_id), Reason.PENDING_TRANSFER_NOT_PENDING)
    refusal = ledger.refused(ledger.post(pending_id, 100), Reason.PENDING_TRANSFER_NOT_PENDING)
    assert refusal.metadata["state"] == "POSTED"


def test_blnk_62_post_above_the_amount_is_refused(ledger: Ledger) -> None:
    pending_id = ledger.hold(300)
    refusal = ledger.refused(ledger.post(pending_id, 301), Reason.AMOUNT_EXCEEDS_PENDING)
    assert refusal.metadata["pending_minor"] == "300"
    ledger.run(ledger.post(pending_id, 300))  # the hold stayed pending


def test_blnk_182_a_refused_hold_leaves_nothing_to_post(ledger: Ledger) -> None:
    ledger.refused(ledger.create(1001), Reason.INSUFFICIENT_FUNDS)
    assert ledger.holds == {}
    # The ids the refused hold would have had are unknown to the ledger.
    ledger.refused(ledger.post(UNKNOWN), Reason.PENDING_TRANSFER_NOT_FOUND)


def test_blnk_293_nothing_stays_pending_after_a_hold_ends(ledger: Ledger) -> None:
    ends = [
        lambda pending_id: ledger.post(pending_id),
        lambda pending_id: ledger.post(pending_id, 1),
        lambda pending_id: ledger.void(pending_id),
    ]
    for end in ends:
        pending_id = ledger.hold(100)
        ledger.run(end(pending_id))
        hold = ledger.holds[pending_id]
        assert hold is not None and hold.state is not HoldState.PENDING
    pending_id = ledger.hold(100, timeout_seconds=1)
    ledger.now += timedelta(seconds=1)
    ledger.run(ledger.expire(pending_id))
    for account_id in (A, B):
        assert ledger.sums(account_id)[1:3] == (0, 0)
    ledger.run(Withdraw(request_id="all", account_id=B, amount=eur(101)))
    ledger.run(CloseAccount(request_id="close", account_id=B))


def test_the_limit_binds_available_for_every_debit(ledger: Ledger) -> None:
    ledger.hold(800)
    ledger.refused(
        Withdraw(request_id="w", account_id=A, amount=eur(201)), Reason.INSUFFICIENT_FUNDS
    )
    ledger.refused(
        TransferFunds(request_id="t", from_account_id=A, to_account_id=B, amount=eur(201)),
        Reason.INSUFFICIENT_FUNDS,
    )
    ledger.refused(ledger.create(201), Reason.INSUFFICIENT_FUNDS)
    ledger.run(Withdraw(request_id="w", account_id=A, amount=eur(200)))
    assert ledger.sums(A) == (800, 800, 0, 0)


def test_the_overdraft_limit_applies_to_holds() -> None:
    ledger = Ledger()
    ledger.open(A, limit_minor=500)
    ledger.open(B)
    ledger.hold(500)
    assert ledger.sums(A) == (0, 500, 0, -500)
    ledger.refused(ledger.create(1), Reason.INSUFFICIENT_FUNDS)


def test_pending_credits_are_not_spendable(ledger: Ledger) -> None:
    ledger.hold(300)
    ledger.refused(
        TransferFunds(request_id="t", from_account_id=B, to_account_id=A, amount=eur(1)),
        Reason.INSUFFICIENT_FUNDS,
    )


def test_frozen_from_account_takes_no_hold_and_no_post_but_may_void(ledger: Ledger) -> None:
    first, second = ledger.hold(100), ledger.hold(100)
    ledger.run(FreezeAccount(request_id="f", account_id=A))
    ledger.refused(ledger.create(100), Reason.ACCOUNT_FROZEN)
    ledger.refused(ledger.post(first), Reason.ACCOUNT_FROZEN)
    ledger.run(ledger.void(first))
    ledger.now += timedelta(days=1)
    assert ledger.account(A).status is AccountStatus.FROZEN
    ledger.run(ledger.void(second))
    assert ledger.sums(A) == (1000, 0, 0, 1000)


def test_a_frozen_to_account_still_receives(ledger: Ledger) -> None:
    ledger.run(FreezeAccount(request_id="f", account_id=B))
    pending_id = ledger.hold(100)
    ledger.run(ledger.post(pending_id))
    assert ledger.sums(B) == (100, 0, 0, 100)


def test_closed_accounts_accept_no_hold_and_open_holds_block_closing(ledger: Ledger) -> None:
    ledger.open(C)
    ledger.run(CloseAccount(request_id="close-c", account_id=C))
    ledger.refused(ledger.create(100, target=C), Reason.ACCOUNT_CLOSED)
    ledger.refused(ledger.create(100, source=C), Reason.ACCOUNT_CLOSED)
    pending_id = ledger.hold(100)
    # B has a pending credit, A a pending debit: neither closes.
    refusal = ledger.refused(
        CloseAccount(request_id="close-b", account_id=B), Reason.ACCOUNT_HAS_PENDING
    )
    assert refusal.metadata == {"account_id": B}
    ledger.run(ledger.void(pending_id))
    ledger.run(CloseAccount(request_id="close-b", account_id=B))


def test_unknown_accounts_and_currencies(ledger: Ledger) -> None:
    ledger.refused(ledger.create(100, target=C), Reason.ACCOUNT_NOT_FOUND)
    ledger.refused(
        replace(ledger.create(100), amount=Money(currency="USD", minor_units=100)),
        Reason.CURRENCY_MISMATCH,
    )
    pending_id = ledger.hold(100)
    ledger.refused(ledger.post(pending_id, 50, "USD"), Reason.CURRENCY_MISMATCH)
    ledger.refused(ledger.void(UNKNOWN), Reason.PENDING_TRANSFER_NOT_FOUND)


@pytest.mark.parametrize(
    ("command", "field"),
    [
        (
            CreatePendingTransfer(
                request_id="r", from_account_id=A, to_account_id=A, amount=eur(1)
            ),
            "to_account_id",
        ),
        (
            CreatePendingTransfer(
                request_id="r", from_account_id=A, to_account_id=B, amount=eur(0)
            ),
            "amount.minor_units",
        ),
        (
            CreatePendingTransfer(
                request_id="r",
                from_account_id=A,
                to_account_id=B,
                amount=eur(1),
                timeout_seconds=-1,
            ),
            "timeout_seconds",
        ),
        (PostPendingTransfer(request_id="r", pending_id="nope"), "pending_id"),
        (PostPendingTransfer(request_id="r", pending_id=A, amount=eur(-1)), "amount.minor_units"),
        (VoidPendingTransfer(request_id="r", pending_id=""), "pending_id"),
    ],
)
def test_invalid_hold_commands(command: Command, field: str) -> None:
    with pytest.raises(Rejection) as raised:
        validate(command)
    assert raised.value.reason is Reason.VALIDATION_FAILED
    assert field in [violation.field for violation in raised.value.violations]


def test_hold_events_round_trip_through_their_payloads(ledger: Ledger) -> None:
    pending_id = ledger.hold(300, timeout_seconds=30)
    events = [e.event for e in ledger.run(ledger.post(pending_id, 100)).events]
    second = ledger.hold(50)
    events += [e.event for e in ledger.run(ledger.void(second)).events]
    third = ledger.hold(50, timeout_seconds=1)
    created = ledger.run(ledger.create(10)).events[0].event
    ledger.now += timedelta(seconds=5)
    events += [e.event for e in ledger.run(ledger.expire(third)).events]
    events.append(created)
    for event in events:
        event_type, schema_version, payload = mapper.encode(event)
        assert schema_version == 1
        assert mapper.decode(event_type, schema_version, payload) == event
    assert set(hold_events.HOLD_EVENT_TYPES) == {
        "PendingTransferCreated",
        "PendingTransferVoided",
        "PendingTransferExpired",
    }


def test_the_server_fills_in_the_hold_accounts_before_authorizing() -> None:
    asked: list[str] = []

    async def lookup(pending_id: str) -> tuple[str, str] | None:
        asked.append(pending_id)
        return (A, B) if pending_id == C else None

    async def resolve(command: Command) -> Command:
        return await with_hold_accounts(command, lookup)

    known = asyncio.run(resolve(PostPendingTransfer(request_id="r", pending_id=C.upper())))
    assert isinstance(known, PostPendingTransfer)
    assert (known.from_account_id, known.to_account_id) == (A, B)
    unknown = asyncio.run(resolve(VoidPendingTransfer(request_id="r", pending_id=UNKNOWN)))
    assert isinstance(unknown, VoidPendingTransfer) and unknown.from_account_id == ""
    # A malformed id is not looked up (validation refuses it), nor are other commands.
    asyncio.run(resolve(PostPendingTransfer(request_id="r", pending_id="nope")))
    asyncio.run(resolve(Withdraw(request_id="r", account_id=A, amount=eur(1))))
    assert asked == [C, UNKNOWN]


def test_every_event_of_a_hold_makes_its_whole_document(ledger: Ledger) -> None:
    pending_id = ledger.hold(300, timeout_seconds=60)
    events = [e for e in ledger.run(ledger.post(pending_id, 100)).events]
    documents = []
    for version, new in enumerate(events, start=10):
        record = EventRecord(
            event_id=new.event_id,
            stream_id=new.stream_id,
            stream_version=version,
            position=version,
            recorded_at=START + timedelta(seconds=5),
            event=new.event,
        )
        documents.append(hold_document(record))
    # Only the from account's event makes the document; the to account's twin does not.
    (made, twin) = documents
    assert twin is None and made is not None
    assert made[:2] == (pending_id, 10)
    source = made[2]
    assert (source["state"], source["amount_minor"], source["posted_minor"]) == ("POSTED", 300, 100)
    assert (source["from_account_id"], source["to_account_id"]) == (A, B)
    assert source["placed_at"] == "2026-12-05T12:00:00.000000Z"
    assert source["expires_at"] == "2026-12-05T12:01:00.000000Z"

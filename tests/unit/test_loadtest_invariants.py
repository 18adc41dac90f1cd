"""The load test's invariant checks fail on hand-made histories that break them.

Each check is fed a small history that keeps its rule (it passes) and one that breaks
it in one way (it fails and says where), so a check that cannot fail is caught here.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
import pytest

from chronos.domain.commands import Side
from chronos.domain.events import (
    AccountKind,
    AccountOpened,
    DomainEvent,
    EntryReversed,
    FundsDeposited,
    FundsTransferred,
    HoldLine,
    LinePosted,
    PendingTransferCreated,
    PendingTransferExpired,
    PendingTransferPosted,
    PendingTransferVoided,
)
from chronos.v1 import ledger_pb2, queries_pb2
from chronos_dev.loadtest.check_result import CheckResult, Problems
from chronos_dev.loadtest.invariants import (
    StoreFold,
    check_conservation,
    check_exactly_once,
    check_limits,
)
from chronos_dev.loadtest.invariants_holds import (
    check_holds_end_once,
    check_reversed_at_most_once,
)
from chronos_dev.loadtest.invariants_projection import (
    account_difference,
    compare_pending_index,
)
from chronos_dev.loadtest.outcomes import Outcomes

USER, OTHER, WORLD = "user-a", "user-b", "system-eur"
LIMIT = 100
T0 = datetime(2026, 1, 1, tzinfo=UTC)
NOT_PENDING = "PENDING_TRANSFER_NOT_PENDING"


class History:
    """Builds a StoreFold event by event, keeping positions and stream versions."""

    def __init__(self) -> None:
        self.fold = StoreFold(head=0)
        self._versions: dict[str, int] = {}
        for account, kind in ((USER, AccountKind.USER), (OTHER, AccountKind.USER)):
            self.add(account, _opened(account, kind))
        self.add(WORLD, _opened(WORLD, AccountKind.SYSTEM))

    def add(self, stream_id: str, event: DomainEvent) -> None:
        self.fold.head += 1
        self._versions[stream_id] = self._versions.get(stream_id, 0) + 1
        self.fold.apply_event(self.fold.head, stream_id, self._versions[stream_id], event)

    def deposit(self, account: str, amount: int, balance_after: int, world_after: int) -> None:
        self.add(account, _line(FundsDeposited, "d", account, Side.CREDIT, amount, balance_after))
        self.add(WORLD, _line(FundsDeposited, "d", WORLD, Side.DEBIT, amount, world_after))

    def hold(self, event_type: type[HoldLine], pending_id: str, amount: int, **after: int) -> None:
        """A hold event on both sides: USER pays (debit side), OTHER is paid."""
        for account, side in ((USER, Side.DEBIT), (OTHER, Side.CREDIT)):
            self.add(
                account,
                event_type(
                    pending_id=pending_id,
                    account_id=account,
                    side=side,
                    currency="EUR",
                    amount_minor=amount,
                    balance_after_minor=after.get(f"{side.name.lower()}_balance", 0),
                    pending_debits_after_minor=after.get(f"{side.name.lower()}_debits", 0),
                    pending_credits_after_minor=after.get(f"{side.name.lower()}_credits", 0),
                    expires_at=(
                        T0 + timedelta(seconds=after["expires"]) if after.get("expires") else None
                    ),
                ),
            )

    def place(self, pending_id: str, amount: int, *, balance: int, recorded_debits: int) -> None:
        """USER (posted ``balance``, no other hold) reserves ``amount`` for OTHER."""
        self.hold(
            PendingTransferCreated,
            pending_id,
            amount,
            debit_balance=balance,
            debit_debits=recorded_debits,
            credit_credits=amount,
        )


def _opened(account: str, kind: AccountKind) -> AccountOpened:
    return AccountOpened(
        account_id=account, owner_name="x", currency="EUR", overdraft_limit_minor=LIMIT, kind=kind
    )


def _line(
    event_type: type[LinePosted], entry_id: str, account: str, side: Side, amount: int, after: int
) -> LinePosted:
    return event_type(
        entry_id=entry_id,
        account_id=account,
        side=side,
        currency="EUR",
        amount_minor=amount,
        balance_after_minor=after,
    )


def _assert_fails(result: CheckResult, text: str) -> None:
    assert not result.passed
    assert text in result.detail, result.detail


# --- conservation and limits -----------------------------------------------------------


def test_conservation_holds_when_the_world_account_mirrors_deposits() -> None:
    history = History()
    history.deposit(USER, 500, 500, -500)
    assert check_conservation(history.fold).passed


def test_conservation_fails_when_a_currency_does_not_sum_to_zero() -> None:
    history = History()
    history.add(USER, _line(FundsDeposited, "d", USER, Side.CREDIT, 500, 500))
    _assert_fails(check_conservation(history.fold), "EUR +500")


def test_limits_fail_when_a_hold_takes_the_available_balance_below_the_limit() -> None:
    history = History()
    history.deposit(USER, 50, 50, -50)
    assert check_limits(history.fold).passed
    # Posted 50, reserved 200: available -150 < -100, though the posted balance is fine.
    history.place("h1", 200, balance=50, recorded_debits=200)
    _assert_fails(check_limits(history.fold), "available after -150 < -100")


def test_limits_ignore_system_accounts() -> None:
    history = History()
    history.deposit(USER, 5000, 5000, -5000)
    assert check_limits(history.fold).passed


def test_limits_fail_when_recorded_pending_sums_disagree_with_the_amounts() -> None:
    history = History()
    history.deposit(USER, 500, 500, -500)
    history.place("h1", 200, balance=500, recorded_debits=150)
    _assert_fails(check_limits(history.fold), "running sums (500, 200, 0)")


def test_a_partial_post_moves_the_posted_amount_and_releases_the_rest() -> None:
    history = History()
    history.deposit(USER, 500, 500, -500)
    history.place("h1", 200, balance=500, recorded_debits=200)
    for account, side, after in ((USER, Side.DEBIT, 380), (OTHER, Side.CREDIT, 120)):
        history.add(
            account,
            PendingTransferPosted(
                entry_id="e1",
                account_id=account,
                side=side,
                currency="EUR",
                amount_minor=120,
                released_minor=80,
                balance_after_minor=after,
                pending_id="h1",
            ),
        )
    assert check_limits(history.fold).passed
    assert check_conservation(history.fold).passed
    account = history.fold.accounts[USER]
    assert (account.balance_minor, account.pending_debits_minor) == (380, 0)
    assert history.fold.holds.holds["h1"].posted_minor == 120


# --- every hold ends exactly once ------------------------------------------------------


def _placed_and_ended(*ends: type[HoldLine], expires: int = 0) -> History:
    history = History()
    history.deposit(USER, 500, 500, -500)
    history.hold(
        PendingTransferCreated,
        "h1",
        100,
        debit_balance=500,
        debit_debits=100,
        credit_credits=100,
        expires=expires,
    )
    for end in ends:
        history.hold(end, "h1", 100, debit_balance=500)
    return history


def _end_check(
    history: History, write_side: dict[str, tuple[str, int]], outcomes: Outcomes | None = None
) -> CheckResult:
    due_before = T0 + timedelta(seconds=60)
    return check_holds_end_once(
        history.fold.holds, write_side, outcomes or Outcomes(), due_before=due_before
    )


def test_a_hold_voided_once_passes() -> None:
    history = _placed_and_ended(PendingTransferVoided)
    result = _end_check(history, {"h1": ("VOIDED", 0)})
    assert result.passed, result.detail
    assert "1 voided" in result.detail


def test_a_hold_ended_twice_fails() -> None:
    history = _placed_and_ended(PendingTransferVoided, PendingTransferExpired, expires=5)
    _assert_fails(_end_check(history, {"h1": ("VOIDED", 0)}), "h1: ended 2 times (VOIDED, EXPIRED)")


def test_an_end_of_a_hold_never_placed_fails() -> None:
    history = History()
    history.hold(PendingTransferVoided, "ghost", 100)
    _assert_fails(_end_check(history, {}), "never placed")


def test_a_hold_past_its_timeout_still_pending_fails() -> None:
    history = _placed_and_ended(expires=5)
    _assert_fails(_end_check(history, {"h1": ("PENDING", 0)}), "still pending")


def test_a_pending_hold_not_yet_due_or_without_timeout_passes() -> None:
    assert _end_check(_placed_and_ended(expires=600), {"h1": ("PENDING", 0)}).passed
    assert _end_check(_placed_and_ended(), {"h1": ("PENDING", 0)}).passed


def test_an_expiry_of_a_hold_without_timeout_fails() -> None:
    history = _placed_and_ended(PendingTransferExpired)
    _assert_fails(_end_check(history, {"h1": ("EXPIRED", 0)}), "no timeout")


@pytest.mark.parametrize(
    "write_side",
    [{"h1": ("PENDING", 0)}, {}, {"h1": ("VOIDED", 0), "h2": ("PENDING", 0)}],
    ids=["other-state", "row-missing", "row-without-events"],
)
def test_a_write_side_disagreeing_with_the_events_fails(
    write_side: dict[str, tuple[str, int]],
) -> None:
    history = _placed_and_ended(PendingTransferVoided)
    assert not _end_check(history, write_side).passed


def test_a_client_race_with_two_winners_fails_the_hold_check() -> None:
    outcomes = Outcomes()
    ok = (grpc.StatusCode.OK, "")
    outcomes.record_race("hold", "h1", [ok, ok], NOT_PENDING)
    history = _placed_and_ended(PendingTransferVoided)
    _assert_fails(
        _end_check(history, {"h1": ("VOIDED", 0)}, outcomes=outcomes), "2 of 2 racing requests won"
    )


# --- races as the clients saw them -----------------------------------------------------


@pytest.mark.parametrize(
    ("answers", "violated"),
    [
        ([(grpc.StatusCode.OK, ""), (grpc.StatusCode.FAILED_PRECONDITION, NOT_PENDING)], False),
        ([(grpc.StatusCode.OK, ""), (grpc.StatusCode.OK, "")], True),
        ([(grpc.StatusCode.FAILED_PRECONDITION, NOT_PENDING)] * 2, True),
        (
            [(grpc.StatusCode.UNAVAILABLE, ""), (grpc.StatusCode.FAILED_PRECONDITION, NOT_PENDING)],
            False,
        ),
    ],
    ids=["one-winner", "two-winners", "no-winner", "winner-unknown"],
)
def test_record_race(answers: list[tuple[grpc.StatusCode, str]], violated: bool) -> None:
    outcomes = Outcomes()
    outcomes.record_race("hold", "h1", answers, NOT_PENDING)
    merged = Outcomes()
    merged.merge(outcomes)
    assert merged.races == {"hold": 1}
    assert merged.race_violations.get("hold", 0) == (1 if violated else 0)


# --- every entry reversed at most once -------------------------------------------------


def _reversal(entry_id: str, reverses: str, account: str, side: Side) -> EntryReversed:
    return EntryReversed(
        entry_id=entry_id,
        account_id=account,
        side=side,
        currency="EUR",
        amount_minor=10,
        balance_after_minor=0,
        reverses_entry_id=reverses,
    )


def _transfer_reversed(*reversal_ids: str) -> History:
    history = History()
    history.add(USER, _line(FundsTransferred, "t1", USER, Side.DEBIT, 10, -10))
    history.add(OTHER, _line(FundsTransferred, "t1", OTHER, Side.CREDIT, 10, 10))
    for reversal_id in reversal_ids:
        history.add(USER, _reversal(reversal_id, "t1", USER, Side.CREDIT))
        history.add(OTHER, _reversal(reversal_id, "t1", OTHER, Side.DEBIT))
    return history


def test_an_entry_reversed_once_passes() -> None:
    result = check_reversed_at_most_once(
        _transfer_reversed("r1").fold.holds, {"t1": "r1"}, Outcomes()
    )
    assert result.passed, result.detail
    assert "1 entries reversed" in result.detail


@pytest.mark.parametrize(
    "write_side",
    [{}, {"t1": "r9"}, {"t1": "r1", "t2": "r2"}],
    ids=["row-missing", "other-reversal", "row-without-lines"],
)
def test_a_write_side_disagreeing_with_the_reversal_lines_fails(
    write_side: dict[str, str],
) -> None:
    history = _transfer_reversed("r1")
    assert not check_reversed_at_most_once(history.fold.holds, write_side, Outcomes()).passed


def test_an_entry_reversed_twice_fails() -> None:
    _assert_fails(
        check_reversed_at_most_once(
            _transfer_reversed("r1", "r2").fold.holds, {"t1": "r1"}, Outcomes()
        ),
        "t1: reversed by 2 entries",
    )


def test_a_reversed_reversal_fails() -> None:
    history = _transfer_reversed("r1")
    history.add(USER, _reversal("r2", "r1", USER, Side.DEBIT))
    _assert_fails(
        check_reversed_at_most_once(history.fold.holds, {"t1": "r1"}, Outcomes()),
        "a reversal was reversed",
    )


def test_a_reversal_race_with_two_winners_fails() -> None:
    outcomes = Outcomes()
    ok = (grpc.StatusCode.OK, "")
    outcomes.record_race("reversal", "t1", [ok, ok], "ENTRY_ALREADY_REVERSED")
    result = check_reversed_at_most_once(
        _transfer_reversed("r1").fold.holds, {"t1": "r1"}, outcomes
    )
    assert not result.passed


# --- exactly once and the projection ---------------------------------------------------


def test_a_hold_command_answered_with_the_wrong_event_count_fails() -> None:
    outcomes = Outcomes()
    outcomes.record_ok(
        "lt-x-hold-1", "CreatePendingTransfer", event_count=3, position=9, replayed=False
    )
    _assert_fails(
        check_exactly_once(outcomes, {"lt-x-hold-1": (3, 9)}),
        "CreatePendingTransfer answered with 3 events",
    )
    outcomes = Outcomes()
    outcomes.record_ok(
        "lt-x-hold-1", "CreatePendingTransfer", event_count=2, position=9, replayed=False
    )
    assert check_exactly_once(outcomes, {"lt-x-hold-1": (2, 9)}).passed


def _money(minor: int) -> ledger_pb2.Money:
    return ledger_pb2.Money(currency="EUR", minor_units=minor)


def test_get_account_differing_in_pending_or_available_is_a_difference() -> None:
    history = History()
    history.deposit(USER, 500, 500, -500)
    history.place("h1", 200, balance=500, recorded_debits=200)
    want = history.fold.accounts[USER]
    right = queries_pb2.GetAccountResponse(
        balance=_money(500),
        pending_debits=_money(200),
        pending_credits=_money(0),
        available=_money(300),
        version=want.version,
        currency="EUR",
    )
    assert account_difference(USER, want, right) is None
    for wrong_field, value in (("pending_debits", 0), ("available", 500)):
        wrong = queries_pb2.GetAccountResponse()
        wrong.CopyFrom(right)
        getattr(wrong, wrong_field).CopyFrom(_money(value))
        difference = account_difference(USER, want, wrong)
        assert difference is not None and "(500, 200, 0, 300," in difference


def test_the_pending_index_must_show_the_write_side_states() -> None:
    write_side = {"h1": ("POSTED", 120), "h2": ("EXPIRED", 0)}
    same = {
        "h1": {"pending_id": "h1", "state": "POSTED", "posted_minor": 120},
        "h2": {"pending_id": "h2", "state": "EXPIRED", "posted_minor": 0},
    }
    problems = Problems()
    compare_pending_index(write_side, same, problems)
    assert problems.count == 0
    stale = {**same, "h2": {"pending_id": "h2", "state": "PENDING", "posted_minor": 0}}
    extra = {**same, "h3": {"pending_id": "h3", "state": "PENDING", "posted_minor": 0}}
    missing = {"h1": same["h1"]}
    for documents in (stale, extra, missing):
        problems = Problems()
        compare_pending_index(write_side, documents, problems)
        assert problems.count == 1, documents

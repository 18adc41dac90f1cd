"""The writer's batch decisions without a database: decide_batch, the lock set, admission."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence

import pytest

from chronos.domain.accounts import Account, AccountStatus
from chronos.domain.commands import (
    Command,
    Deposit,
    FreezeAccount,
    Money,
    OpenAccount,
    TransferFunds,
    Withdraw,
)
from chronos.domain.errors import Reason, Rejection
from chronos.domain.events import AccountKind, AccountOpened, LinePosted
from chronos.domain.ledger import system_account_id
from chronos.event_store.committer import PendingCommand, admit
from chronos.event_store.context import CommandContext
from chronos.event_store.decisions import (
    Accepted,
    BatchDecision,
    accounts_to_lock,
    decide_batch,
)
from chronos.event_store.results import AccountBalance, CommandResult

A = "00000000-0000-4000-8000-00000000000a"
B = "00000000-0000-4000-8000-00000000000b"
C = "00000000-0000-4000-8000-00000000000c"
SYSTEM_EUR = system_account_id("EUR")


def eur(minor: int) -> Money:
    return Money(currency="EUR", minor_units=minor)


def account(account_id: str, balance_minor: int, version: int, limit_minor: int = 0) -> Account:
    return Account(
        account_id=account_id,
        kind=AccountKind.USER,
        owner_name="Owner",
        currency="EUR",
        overdraft_limit_minor=limit_minor,
        status=AccountStatus.ACTIVE,
        balance_minor=balance_minor,
        version=version,
    )


def counter() -> Callable[[], str]:
    numbers = itertools.count(1)
    return lambda: f"id-{next(numbers)}"


def run(
    commands: Sequence[Command | None], accounts: Mapping[str, Account | None]
) -> BatchDecision:
    return decide_batch(commands, accounts, counter())


def accepted(decision: BatchDecision, index: int) -> Accepted:
    outcome = decision.outcomes[index]
    assert isinstance(outcome, Accepted), outcome
    return outcome


def rejection(decision: BatchDecision, index: int) -> Rejection:
    outcome = decision.outcomes[index]
    assert isinstance(outcome, Rejection), outcome
    return outcome


def transfer(from_id: str, to_id: str, minor: int, request_id: str = "t") -> TransferFunds:
    return TransferFunds(
        request_id=request_id, from_account_id=from_id, to_account_id=to_id, amount=eur(minor)
    )


def test_each_command_sees_the_state_the_ones_before_it_left() -> None:
    loaded: dict[str, Account | None] = {A: account(A, 100, 4), B: account(B, 0, 1)}
    snapshot = dict(loaded)
    decision = run(
        [transfer(A, B, 60, "t1"), transfer(A, B, 30, "t2"), transfer(B, A, 5, "t3")], loaded
    )
    assert loaded == snapshot  # the loaded state is not changed in place
    first, second, third = (accepted(decision, i) for i in range(3))
    assert [(e.stream_id, e.stream_version) for e in first.events] == [(A, 5), (B, 2)]
    assert [(e.stream_id, e.stream_version) for e in second.events] == [(A, 6), (B, 3)]
    assert [(e.stream_id, e.stream_version) for e in third.events] == [(B, 4), (A, 7)]
    # The balances of each answer are those right after its own events.
    assert first.balances == (
        AccountBalance(account_id=A, currency="EUR", balance_minor=40, version=5),
        AccountBalance(account_id=B, currency="EUR", balance_minor=60, version=2),
    )
    assert [(b.account_id, b.balance_minor) for b in second.balances] == [(A, 10), (B, 90)]
    assert [(b.account_id, b.balance_minor) for b in third.balances] == [(B, 85), (A, 15)]
    assert {a.account_id: (a.balance_minor, a.version) for a in decision.accounts} == {
        A: (15, 7),
        B: (85, 4),
    }
    assert decision.opened == frozenset()


def test_a_rejection_in_the_middle_changes_nothing_for_the_others() -> None:
    decision = run(
        [
            Deposit(request_id="d", account_id=A, amount=eur(10)),
            Withdraw(request_id="w", account_id=A, amount=eur(500)),
            transfer(A, B, 50),
        ],
        {A: account(A, 100, 2), B: account(B, 0, 1), SYSTEM_EUR: None},
    )
    assert rejection(decision, 1).reason is Reason.INSUFFICIENT_FUNDS
    assert [i for i, _ in decision.rejected()] == [1]
    assert [i for i, _ in decision.accepted()] == [0, 2]
    # The transfer's versions follow the deposit's directly: the rejection took none.
    assert [(e.stream_id, e.stream_version) for e in accepted(decision, 2).events] == [
        (A, 4),
        (B, 2),
    ]
    assert [b.balance_minor for b in accepted(decision, 2).balances] == [60, 50]
    assert all(isinstance(e.event, LinePosted) for e in decision.events()[1:])
    assert len(decision.events()) == 5  # system account opened, two lines, two lines


def test_a_command_on_an_account_the_batch_opens_earlier_sees_it_open() -> None:
    decision = run(
        [
            transfer(A, C, 1, "too early"),
            OpenAccount(request_id="o", account_id=C, owner_name="Cy", currency="EUR"),
            transfer(A, C, 1, "after"),
        ],
        {A: account(A, 5, 1), C: None},
    )
    assert rejection(decision, 0).reason is Reason.ACCOUNT_NOT_FOUND
    assert [(e.stream_id, e.stream_version) for e in accepted(decision, 1).events] == [(C, 1)]
    assert [(e.stream_id, e.stream_version) for e in accepted(decision, 2).events] == [
        (A, 2),
        (C, 2),
    ]
    assert decision.opened == frozenset({C})
    # Accounts come in the order the batch first changed them.
    assert [a.account_id for a in decision.accounts] == [C, A]
    opened = next(a for a in decision.accounts if a.account_id == C)
    assert (opened.balance_minor, opened.version) == (1, 2)


def test_the_first_deposit_in_a_currency_opens_its_system_account() -> None:
    decision = run(
        [Deposit(request_id="d1", account_id=A, amount=eur(7))],
        {A: account(A, 0, 1), SYSTEM_EUR: None},
    )
    events = accepted(decision, 0).events
    assert isinstance(events[0].event, AccountOpened)
    assert (events[0].stream_id, events[0].stream_version) == (SYSTEM_EUR, 1)
    assert decision.opened == frozenset({SYSTEM_EUR})
    system = next(a for a in decision.accounts if a.account_id == SYSTEM_EUR)
    assert (system.kind, system.balance_minor, system.version) == (AccountKind.SYSTEM, -7, 2)


def test_ids_come_entry_first_then_one_per_event_in_order() -> None:
    decision = run(
        [transfer(A, B, 1, "t1"), FreezeAccount(request_id="f", account_id=B), transfer(A, B, 1)],
        {A: account(A, 10, 1), B: account(B, 0, 1)},
    )
    first, freeze, last = (accepted(decision, i) for i in range(3))
    assert (first.entry_id, [e.event_id for e in first.events]) == ("id-1", ["id-2", "id-3"])
    assert (freeze.entry_id, [e.event_id for e in freeze.events]) == ("", ["id-4"])
    # A frozen account still accepts credits.
    assert (last.entry_id, [e.event_id for e in last.events]) == ("id-5", ["id-6", "id-7"])
    assert (first.account_id, freeze.account_id) == (A, B)


def test_commands_already_answered_are_skipped_and_take_no_ids() -> None:
    decision = run([None, transfer(A, B, 1), None], {A: account(A, 10, 3), B: account(B, 0, 1)})
    assert decision.outcomes[0] is None and decision.outcomes[2] is None
    assert [e.event_id for e in accepted(decision, 1).events] == ["id-2", "id-3"]
    assert [i for i, _ in decision.accepted()] == [1]


def test_a_batch_of_rejections_changes_no_account() -> None:
    decision = run(
        [transfer(A, C, 11), transfer(B, A, 1)],
        {A: account(A, 10, 3), B: None, C: account(C, 0, 1)},
    )
    assert [r.reason for _, r in decision.rejected()] == [
        Reason.INSUFFICIENT_FUNDS,
        Reason.ACCOUNT_NOT_FOUND,
    ]
    assert (decision.accounts, decision.opened, decision.events()) == ((), frozenset(), [])


def test_the_lock_set_is_every_touched_account_once_in_sorted_order() -> None:
    commands: list[Command] = [
        transfer(C, A, 1),
        Deposit(request_id="d", account_id=B, amount=eur(1)),
        transfer(A, C, 1),
    ]
    assert accounts_to_lock(commands) == sorted({A, B, C, SYSTEM_EUR})
    assert accounts_to_lock([]) == []


def test_admission_drops_abandoned_commands_and_defers_later_copies_of_a_request_id() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()

        def pending(request_id: str, *, cancelled: bool = False) -> PendingCommand:
            future: asyncio.Future[CommandResult] = loop.create_future()
            if cancelled:
                future.cancel()
            command = Deposit(request_id=request_id, account_id=A, amount=eur(1))
            context = CommandContext(request_id=request_id)
            return PendingCommand(command, b"hash", context, future)

        batch = [
            pending("r1"),
            pending("r2", cancelled=True),
            pending("r1"),
            pending("r3"),
            pending("r1"),
            pending("r4", cancelled=True),
            pending("r4"),
        ]
        admission = admit(batch)
        assert admission.run == [batch[0], batch[3], batch[6]]
        assert admission.deferred == [batch[2], batch[4]]
        assert admission.abandoned == 2

    asyncio.run(body())


@pytest.mark.parametrize("module", ["chronos.event_store.decisions"])
def test_the_decision_module_loads_no_driver(module: str) -> None:
    drivers = ("psycopg", "psycopg_pool", "grpc", "confluent_kafka", "elasticsearch")
    probe = (
        f"import sys, {module}; "
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {drivers!r}))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], check=True, capture_output=True, text=True
    ).stdout
    assert loaded.strip() == "[]"

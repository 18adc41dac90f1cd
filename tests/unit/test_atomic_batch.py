"""All-or-nothing batches without a database: how their commands answer, and what a
failed one forgets (chronos.event_store.atomic, settle_outcomes, the batch checks)."""

from __future__ import annotations

import itertools
from collections.abc import Callable

from chronos.domain.accounts import Account
from chronos.domain.commands import Command, Deposit, Money, OpenAccount, TransferFunds, Withdraw
from chronos.domain.errors import Reason, Rejection
from chronos.domain.ledger import system_account_id
from chronos.event_store.atomic import all_or_nothing, linked_answers, linked_failure
from chronos.event_store.context import CommandContext
from chronos.event_store.decisions import Accepted, decide_batch, settle_outcomes
from chronos.event_store.results import CommandResult
from chronos.v1 import commands_pb2
from command_server.batch_checks import batch_violation, repeated_request_ids
from tests.unit.test_batch_decisions import account

A = "00000000-0000-4000-8000-00000000000a"
B = "00000000-0000-4000-8000-00000000000b"
SYSTEM_EUR = system_account_id("EUR")


def eur(minor: int) -> Money:
    return Money(currency="EUR", minor_units=minor)


def counter() -> Callable[[], str]:
    numbers = itertools.count(1)
    return lambda: f"00000000-0000-4000-8000-{next(numbers):012d}"


def active(account_id: str, balance_minor: int) -> Account:
    return account(account_id, balance_minor, version=1)


def funds_short() -> Rejection:
    return Rejection(Reason.INSUFFICIENT_FUNDS, "Not enough.")


def test_no_failure_settles_nothing() -> None:
    assert all_or_nothing(["a", "b", None]) is None


def test_the_first_failure_keeps_its_reason_and_every_other_command_names_it() -> None:
    later = Rejection(Reason.ACCOUNT_FROZEN, "Frozen.")
    answers = all_or_nothing(["ok", funds_short(), "ok", later])
    assert answers is not None
    assert [a.reason for a in answers if isinstance(a, Rejection)] == [
        Reason.LINKED_COMMAND_FAILED,
        Reason.INSUFFICIENT_FUNDS,
        Reason.LINKED_COMMAND_FAILED,
        Reason.LINKED_COMMAND_FAILED,
    ]
    linked = answers[0]
    assert isinstance(linked, Rejection)
    assert linked.metadata == {"failed_index": "1", "failed_reason": "INSUFFICIENT_FUNDS"}
    assert "command 1 failed with INSUFFICIENT_FUNDS" in linked.message


def test_refusals_before_the_ledger_each_keep_their_own_reason() -> None:
    denied = Rejection(Reason.PERMISSION_DENIED, "No.")
    invalid = Rejection(Reason.VALIDATION_FAILED, "Bad.")
    answers = linked_answers({3: invalid, 1: denied}, 4)
    assert [a.reason for a in answers] == [
        Reason.LINKED_COMMAND_FAILED,
        Reason.PERMISSION_DENIED,
        Reason.LINKED_COMMAND_FAILED,
        Reason.VALIDATION_FAILED,
    ]
    assert answers[0].metadata["failed_index"] == "1"


def test_an_atomic_batch_sees_its_own_effects_in_order_and_commits_whole() -> None:
    commands: list[Command | None] = [
        OpenAccount(request_id="r1", account_id=A, owner_name="A", currency="EUR"),
        Deposit(request_id="r2", account_id=A, amount=eur(500)),
        OpenAccount(request_id="r3", account_id=B, owner_name="B", currency="EUR"),
        TransferFunds(request_id="r4", from_account_id=A, to_account_id=B, amount=eur(200)),
    ]
    accounts: dict[str, Account | None] = {A: None, B: None, SYSTEM_EUR: None}
    decision = decide_batch(commands, accounts, counter())
    assert all(isinstance(outcome, Accepted) for outcome in decision.outcomes)
    outcomes, forgotten, failed = settle_outcomes(4, {}, decision, atomic=True)
    assert (outcomes, forgotten, failed) == ([None] * 4, [], False)


def test_a_failed_atomic_batch_forgets_its_own_placeholders_not_a_stored_answer() -> None:
    stored = CommandResult(position=7, account_id=A, entry_id="", balances=(), event_ids=())
    commands: list[Command | None] = [
        None,  # a duplicate whose answer was stored by an earlier call
        Deposit(request_id="r2", account_id=A, amount=eur(100)),
        Withdraw(request_id="r3", account_id=A, amount=eur(1_000)),
        Deposit(request_id="r4", account_id=A, amount=eur(100)),
    ]
    decision = decide_batch(commands, {A: active(A, 0), SYSTEM_EUR: None}, counter())
    outcomes, forgotten, failed = settle_outcomes(4, {0: stored}, decision, atomic=True)
    assert failed
    reasons = [o.reason if isinstance(o, Rejection) else o for o in outcomes]
    assert reasons == [
        Reason.LINKED_COMMAND_FAILED,
        Reason.LINKED_COMMAND_FAILED,
        Reason.INSUFFICIENT_FUNDS,
        Reason.LINKED_COMMAND_FAILED,
    ]
    assert [index for index, _ in forgotten] == [1, 2, 3]


def test_an_ordered_batch_settles_as_before() -> None:
    commands: list[Command | None] = [
        Withdraw(request_id="r1", account_id=A, amount=eur(1_000)),
        Deposit(request_id="r2", account_id=A, amount=eur(100)),
    ]
    decision = decide_batch(commands, {A: active(A, 0), SYSTEM_EUR: None}, counter())
    outcomes, forgotten, failed = settle_outcomes(2, {}, decision, atomic=False)
    assert not failed
    assert isinstance(outcomes[0], Rejection) and outcomes[1] is None
    assert [index for index, _ in forgotten] == [0]


def test_a_linked_failure_says_the_batch_may_be_sent_again() -> None:
    rejection = linked_failure(0, funds_short())
    assert rejection.reason is Reason.LINKED_COMMAND_FAILED
    assert "same request_ids may be reused" in rejection.message


def test_an_atomic_batch_refuses_a_repeated_request_id() -> None:
    context = CommandContext(request_id="x")
    prepared = [
        (Deposit(request_id=rid, account_id=A, amount=eur(1)), b"", context)
        for rid in ("x", "y", "x")
    ]
    repeats = repeated_request_ids(prepared, [0, 2, 5])
    assert list(repeats) == [5]
    (violation,) = repeats[5].violations
    assert violation.field == "request_id"
    assert "command 0" in violation.description


def test_the_batch_size_rule_is_unchanged() -> None:
    empty = commands_pb2.ExecuteBatchRequest(atomic=True)
    assert batch_violation(empty) == "must hold 1 to 1000 commands, got 0"
    one = commands_pb2.ExecuteBatchRequest(
        commands=[commands_pb2.BatchCommand(deposit=commands_pb2.DepositRequest())]
    )
    assert batch_violation(one) is None

"""Atomic batches and metadata on money movements through the real, secured pipeline
(command server, outbox poller, projector, query server; TLS and tokens on).

An atomic ExecuteBatch commits whole or not at all: when one command fails (a ledger
rule, invalid fields, a refused account), every command answers and PostgreSQL shows
nothing written, so the same request_ids work once the batch is fixed. Metadata on a
movement is stored, fingerprinted, and comes back on the statement lines, where it
filters them.
"""

# The secured pipeline fixture is test_authorization's, imported: every test here names it
# as its parameter, which ruff reads as redefining the import.
# ruff: noqa: F811

from __future__ import annotations

from typing import Any

import grpc
import pytest

from chronos.security import scopes
from chronos.v1 import commands_pb2 as c
from chronos.v1 import ledger_pb2, queries_pb2
from tests.e2e.helpers import details_of
from tests.e2e.test_authorization import (  # noqa: F401
    CALL_TIMEOUT_SECONDS,
    READ_WAIT_SECONDS,
    Pipeline,
    open_funded,
    pipeline,
    refused,
)
from tests.integration.authorization_support import (
    error_info,
    eur,
    new_id,
    request_ids_recorded,
    written,
)

ABORTED = grpc.StatusCode.ABORTED.value[0]


def opening(account_id: str) -> c.BatchCommand:
    return c.BatchCommand(
        open_account=c.OpenAccountRequest(
            request_id=new_id(), account_id=account_id, owner_name="Owner", currency="EUR"
        )
    )


def deposit(account_id: str, minor: int, request_id: str = "", **kw: Any) -> c.BatchCommand:
    return c.BatchCommand(
        deposit=c.DepositRequest(
            request_id=request_id or new_id(), account_id=account_id, amount=eur(minor), **kw
        )
    )


def withdrawal(account_id: str, minor: int, request_id: str = "", **kw: Any) -> c.BatchCommand:
    return c.BatchCommand(
        withdraw=c.WithdrawRequest(
            request_id=request_id or new_id(), account_id=account_id, amount=eur(minor), **kw
        )
    )


def transfer(from_id: str, to_id: str, minor: int, request_id: str = "") -> c.BatchCommand:
    return c.BatchCommand(
        transfer_funds=c.TransferFundsRequest(
            request_id=request_id or new_id(),
            from_account_id=from_id,
            to_account_id=to_id,
            amount=eur(minor),
        )
    )


def request_id_of(item: c.BatchCommand) -> str:
    return str(getattr(item, str(item.WhichOneof("command"))).request_id)


def run_batch(
    pipeline: Pipeline, items: list[c.BatchCommand], metadata: Any = None
) -> c.ExecuteBatchResponse:
    return pipeline.commands.ExecuteBatch(  # type: ignore[no-any-return]
        c.ExecuteBatchRequest(commands=items, atomic=True),
        metadata=metadata or pipeline.tokens.admin,
        timeout=CALL_TIMEOUT_SECONDS,
    )


def reasons_of(response: c.ExecuteBatchResponse) -> list[str]:
    return [
        details_of(result.error)[0] if result.HasField("error") else "OK"
        for result in response.results
    ]


def assert_nothing_written(
    pipeline: Pipeline, before: dict[str, int], items: list[c.BatchCommand]
) -> None:
    assert written(pipeline.dsn) == before
    assert request_ids_recorded(pipeline.dsn, [request_id_of(item) for item in items]) == set()


def linked_to(result: c.BatchResult, failed_index: int, failed_reason: str) -> None:
    assert result.error.code == ABORTED
    info = error_info(result.error)
    assert info.reason == "LINKED_COMMAND_FAILED"
    assert dict(info.metadata) == {
        "failed_index": str(failed_index),
        "failed_reason": failed_reason,
    }
    assert f"command {failed_index} failed with {failed_reason}" in result.error.message


def test_an_atomic_batch_opens_funds_and_transfers_in_one_go(pipeline: Pipeline) -> None:
    a, b = new_id(), new_id()
    items = [opening(a), deposit(a, 500), opening(b), transfer(a, b, 200)]
    before = written(pipeline.dsn)
    admin = pipeline.tokens.admin  # one caller: request_ids are per principal
    first = run_batch(pipeline, items, admin)
    assert reasons_of(first) == ["OK"] * 4
    moved = {x.account_id: x.balance.minor_units for x in first.results[3].response.balances}
    assert moved == {a: 300, b: 200}
    after = written(pipeline.dsn)
    assert after["idempotency"] - before["idempotency"] == 4
    # Two openings, a deposit's two lines (and the system account's opening, at most)
    # and a transfer's two lines.
    assert after["events"] - before["events"] in (6, 7)
    again = run_batch(pipeline, items, admin)
    assert [result.response.replayed for result in again.results] == [True] * 4
    assert [r.response.position for r in again.results] == [
        r.response.position for r in first.results
    ]
    assert written(pipeline.dsn) == after


def test_one_command_short_of_funds_fails_the_whole_batch(pipeline: Pipeline) -> None:
    mine, _ = open_funded(pipeline, 1_000)
    other, _ = open_funded(pipeline, 0)

    def items(withdraw_minor: int) -> list[c.BatchCommand]:
        return [
            transfer(mine, other, 300, ids[0]),
            withdrawal(mine, withdraw_minor, ids[1]),
            deposit(other, 5, ids[2]),
        ]

    ids = [new_id() for _ in range(3)]
    before = written(pipeline.dsn)
    admin = pipeline.tokens.admin
    failed = run_batch(pipeline, items(900), admin)  # 1,000 - 300 leaves 700
    assert reasons_of(failed) == [
        "LINKED_COMMAND_FAILED",
        "INSUFFICIENT_FUNDS",
        "LINKED_COMMAND_FAILED",
    ]
    assert failed.results[1].error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    for index in (0, 2):
        linked_to(failed.results[index], 1, "INSUFFICIENT_FUNDS")
    assert_nothing_written(pipeline, before, items(900))
    # Fixed, the same request_ids go through, once.
    fixed = run_batch(pipeline, items(700), admin)
    assert reasons_of(fixed) == ["OK"] * 3
    assert {x.account_id: x.balance.minor_units for x in fixed.results[1].response.balances}[
        mine
    ] == 0
    assert request_ids_recorded(pipeline.dsn, ids) == set(ids)


def test_an_invalid_command_fails_the_whole_batch_before_the_ledger(pipeline: Pipeline) -> None:
    mine, _ = open_funded(pipeline, 1_000)
    items = [deposit(mine, 1), deposit(mine, 0), withdrawal(mine, 1, metadata={"": "no key"})]
    before = written(pipeline.dsn)
    response = run_batch(pipeline, items)
    assert reasons_of(response) == [
        "LINKED_COMMAND_FAILED",
        "VALIDATION_FAILED",
        "VALIDATION_FAILED",
    ]
    linked_to(response.results[0], 1, "VALIDATION_FAILED")
    assert "metadata" in response.results[2].error.message
    assert details_of(response.results[2].error)[1] == ["metadata['']"]
    assert_nothing_written(pipeline, before, items)


def test_a_refused_account_fails_the_whole_batch(pipeline: Pipeline) -> None:
    mine, _ = open_funded(pipeline, 1_000)
    other, _ = open_funded(pipeline, 1_000)
    items = [withdrawal(mine, 100), withdrawal(other, 100)]
    customer = pipeline.tokens.caller(scopes.FUNDS_WRITE, accounts=(mine,))
    before = written(pipeline.dsn)
    response = run_batch(pipeline, items, customer)
    assert reasons_of(response) == ["LINKED_COMMAND_FAILED", "PERMISSION_DENIED"]
    assert dict(error_info(response.results[1].error).metadata) == {"account_id": other}
    linked_to(response.results[0], 1, "PERMISSION_DENIED")
    assert_nothing_written(pipeline, before, items)


def test_an_atomic_batch_needs_distinct_request_ids(pipeline: Pipeline) -> None:
    mine, _ = open_funded(pipeline, 1_000)
    repeated = new_id()
    items = [deposit(mine, 1, repeated) for _ in range(2)]
    before = written(pipeline.dsn)
    response = run_batch(pipeline, items)
    assert reasons_of(response) == ["LINKED_COMMAND_FAILED", "VALIDATION_FAILED"]
    assert "repeats the request_id of command 0" in response.results[1].error.message
    assert_nothing_written(pipeline, before, items)


def test_an_ordered_batch_still_commits_command_by_command(pipeline: Pipeline) -> None:
    mine, _ = open_funded(pipeline, 100)
    items = [withdrawal(mine, 500), deposit(mine, 5)]
    response = pipeline.commands.ExecuteBatch(
        c.ExecuteBatchRequest(commands=items),
        metadata=pipeline.tokens.admin,
        timeout=CALL_TIMEOUT_SECONDS,
    )
    assert reasons_of(response) == ["INSUFFICIENT_FUNDS", "OK"]
    assert request_ids_recorded(pipeline.dsn, [request_id_of(i) for i in items]) == {
        request_id_of(items[1])
    }


def statement(pipeline: Pipeline, account_id: str, position: int, **filters: str) -> list[Any]:
    answer = pipeline.queries.ListTransactions(
        queries_pb2.ListTransactionsRequest(
            account_id=account_id, min_position=position, metadata=filters
        ),
        metadata=pipeline.tokens.admin,
        timeout=READ_WAIT_SECONDS,
    )
    return list(answer.lines)


def test_metadata_reaches_the_statement_lines_and_filters_them(pipeline: Pipeline) -> None:
    mine, _ = open_funded(pipeline, 0)
    other, _ = open_funded(pipeline, 0)
    admin = pipeline.tokens.admin
    order = {"order_id": "A-17", "channel": "web"}
    pipeline.commands.Deposit(
        c.DepositRequest(request_id=new_id(), account_id=mine, amount=eur(1_000), metadata=order),
        metadata=admin,
        timeout=CALL_TIMEOUT_SECONDS,
    )
    pipeline.commands.TransferFunds(
        c.TransferFundsRequest(
            request_id=new_id(),
            from_account_id=mine,
            to_account_id=other,
            amount=eur(100),
            metadata={"order_id": "A-18", "dotted.key": "x"},
        ),
        metadata=admin,
        timeout=CALL_TIMEOUT_SECONDS,
    )
    journal = pipeline.commands.PostJournalEntry(
        c.PostJournalEntryRequest(
            request_id=new_id(),
            lines=[
                c.JournalLine(account_id=mine, amount=eur(10), side=ledger_pb2.SIDE_DEBIT),
                c.JournalLine(account_id=other, amount=eur(10), side=ledger_pb2.SIDE_CREDIT),
            ],
            metadata={"order_id": "A-17"},
        ),
        metadata=admin,
        timeout=CALL_TIMEOUT_SECONDS,
    )
    withdrawn = run_batch(pipeline, [withdrawal(mine, 1, metadata={"k": "v"})])
    position = max(journal.position, withdrawn.results[0].response.position)
    lines = statement(pipeline, mine, position)
    assert [dict(line.metadata) for line in lines] == [
        {"k": "v"},
        {"order_id": "A-17"},
        {"order_id": "A-18", "dotted.key": "x"},
        order,
    ]
    by_order = statement(pipeline, mine, position, order_id="A-17")
    assert [line.amount.minor_units for line in by_order] == [10, 1_000]
    both = statement(pipeline, mine, position, order_id="A-17", channel="web")
    assert [line.amount.minor_units for line in both] == [1_000]
    assert [
        line.amount.minor_units
        for line in statement(pipeline, mine, position, **{"dotted.key": "x"})
    ] == [100]
    assert statement(pipeline, mine, position, order_id="A-1") == []
    assert [
        dict(line.metadata) for line in statement(pipeline, other, position, order_id="A-17")
    ] == [{"order_id": "A-17"}]


def test_metadata_is_part_of_the_request_fingerprint(pipeline: Pipeline) -> None:
    mine, _ = open_funded(pipeline, 0)
    request = c.DepositRequest(
        request_id=new_id(), account_id=mine, amount=eur(10), metadata={"order_id": "A-17"}
    )
    admin = pipeline.tokens.admin
    first = pipeline.commands.Deposit(request, metadata=admin, timeout=CALL_TIMEOUT_SECONDS)
    again = pipeline.commands.Deposit(request, metadata=admin, timeout=CALL_TIMEOUT_SECONDS)
    assert again.replayed and again.entry_id == first.entry_id
    changed = c.DepositRequest()
    changed.CopyFrom(request)
    changed.metadata["order_id"] = "A-18"
    code, reason, _, _ = refused(pipeline.commands.Deposit, changed, admin)
    assert (code, reason) == (grpc.StatusCode.ALREADY_EXISTS, "IDEMPOTENCY_KEY_REUSED")


def test_a_metadata_filter_is_checked_like_metadata(pipeline: Pipeline) -> None:
    mine, _ = open_funded(pipeline, 0)
    with pytest.raises(grpc.RpcError) as caught:
        pipeline.queries.ListTransactions(
            queries_pb2.ListTransactionsRequest(account_id=mine, metadata={"k" * 65: "v"}),
            metadata=pipeline.tokens.admin,
            timeout=CALL_TIMEOUT_SECONDS,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "key must be 1-64 characters" in (caught.value.details() or "")

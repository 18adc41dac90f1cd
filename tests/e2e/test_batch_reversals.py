"""ReverseEntry as an ExecuteBatch item, through the real, secured pipeline processes:
in an ordered and in an atomic batch a reversal item is decided against the entry it
names, as the RPC is, and its statement lines come back through Kafka and
Elasticsearch; a second reversal of the same entry in one batch is
ENTRY_ALREADY_REVERSED (failing an atomic batch whole); the item needs journal:write
from an unrestricted token.
"""

# The pipeline fixture is test_reversals', imported: every test here names it as its
# parameter, which ruff reads as redefining the import.
# ruff: noqa: F811

from __future__ import annotations

from typing import Any

import grpc

from chronos.security import scopes
from chronos.v1 import commands_pb2 as c
from chronos.v1 import ledger_pb2
from tests.e2e.test_atomic_batch_and_metadata import reasons_of
from tests.e2e.test_reversals import (  # noqa: F401
    CALL_TIMEOUT_SECONDS,
    Ledger,
    balances,
    ledger,
)
from tests.integration.authorization_support import error_info, eur, new_id, request_ids_recorded

FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION.value[0]
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED.value[0]


def reversal_item(entry_id: str, **fields: Any) -> c.BatchCommand:
    return c.BatchCommand(
        reverse_entry=c.ReverseEntryRequest(
            request_id=fields.pop("request_id", new_id()), entry_id=entry_id, **fields
        )
    )


def deposit_item(account_id: str, minor: int) -> c.BatchCommand:
    return c.BatchCommand(
        deposit=c.DepositRequest(request_id=new_id(), account_id=account_id, amount=eur(minor))
    )


def run_batch(
    ledger: Ledger, items: list[c.BatchCommand], caller: Any = None, *, atomic: bool = False
) -> c.ExecuteBatchResponse:
    return ledger.commands.ExecuteBatch(  # type: ignore[no-any-return]
        c.ExecuteBatchRequest(commands=items, atomic=atomic),
        metadata=caller or ledger.tokens.admin,
        timeout=CALL_TIMEOUT_SECONDS,
    )


def request_ids(items: list[c.BatchCommand]) -> list[str]:
    return [getattr(item, str(item.WhichOneof("command"))).request_id for item in items]


def test_an_ordered_batch_reverses_once_and_refuses_the_second_reversal(ledger: Ledger) -> None:
    source, target = ledger.open(1_000), ledger.open(0)
    transfer = ledger.transfer(source, target, 300)
    unknown = new_id()
    items = [
        reversal_item(transfer.entry_id, reason="sent twice", metadata={"case": "C-43"}),
        reversal_item(transfer.entry_id),
        reversal_item(unknown),
        deposit_item(target, 5),
    ]
    caller = ledger.journal
    response = run_batch(ledger, items, ledger.tokens.admin)
    assert reasons_of(response) == ["OK", "ENTRY_ALREADY_REVERSED", "ENTRY_NOT_FOUND", "OK"]
    reversal = response.results[0].response
    assert balances(reversal) == {source: 1_000, target: 0}
    again = response.results[1].error
    assert again.code == FAILED_PRECONDITION
    assert dict(error_info(again).metadata) == {
        "entry_id": transfer.entry_id,
        "reversal_entry_id": reversal.entry_id,
    }
    # A later batch (and the RPC) find the reversal recorded.
    later = run_batch(ledger, [reversal_item(transfer.entry_id)], caller)
    assert reasons_of(later) == ["ENTRY_ALREADY_REVERSED"]

    # Command -> outbox poller -> Kafka -> projector -> Elasticsearch -> query server.
    lines = ledger.statement(target, response.results[3].response.position)
    assert [(line.entry_id, line.kind) for line in lines[1:3]] == [
        (reversal.entry_id, ledger_pb2.ENTRY_KIND_REVERSAL),
        (transfer.entry_id, ledger_pb2.ENTRY_KIND_TRANSFER),
    ]
    assert lines[1].reverses_entry_id == transfer.entry_id
    assert lines[1].description == "sent twice"
    assert dict(lines[1].metadata) == {"case": "C-43"}
    assert lines[0].balance_after.minor_units == 5


def test_an_atomic_batch_with_two_reversals_of_one_entry_writes_nothing(ledger: Ledger) -> None:
    source, target = ledger.open(1_000), ledger.open(0)
    transfer = ledger.transfer(source, target, 300)
    twice = [deposit_item(source, 1), reversal_item(transfer.entry_id)]
    twice.append(reversal_item(transfer.entry_id))
    before = ledger.written()
    failed = run_batch(ledger, twice, atomic=True)
    assert reasons_of(failed) == [
        "LINKED_COMMAND_FAILED",
        "LINKED_COMMAND_FAILED",
        "ENTRY_ALREADY_REVERSED",
    ]
    assert dict(error_info(failed.results[0].error).metadata) == {
        "failed_index": "2",
        "failed_reason": "ENTRY_ALREADY_REVERSED",
    }
    assert ledger.written() == before
    assert request_ids_recorded(ledger.dsn, request_ids(twice)) == set()

    # Without the repeat the same request_ids commit together, once.
    admin = ledger.tokens.admin
    once = twice[:2]
    committed = run_batch(ledger, once, admin, atomic=True)
    assert reasons_of(committed) == ["OK", "OK"]
    reversal = committed.results[1].response
    assert balances(reversal) == {source: 1_001, target: 0}
    replay = run_batch(ledger, once, admin, atomic=True)
    assert [result.response.replayed for result in replay.results] == [True, True]
    assert replay.results[1].response.entry_id == reversal.entry_id
    lines = ledger.statement(source, reversal.position)
    assert lines[0].reverses_entry_id == transfer.entry_id
    assert lines[0].balance_after.minor_units == 1_001


def test_a_reversal_item_below_the_limit_needs_force(ledger: Ledger) -> None:
    source, target = ledger.open(1_000), ledger.open(0)
    transfer = ledger.transfer(source, target, 300)
    spend = c.BatchCommand(
        withdraw=c.WithdrawRequest(request_id=new_id(), account_id=target, amount=eur(200))
    )
    refused = run_batch(ledger, [spend, reversal_item(transfer.entry_id)])
    assert reasons_of(refused) == ["OK", "INSUFFICIENT_FUNDS"]
    forced = run_batch(ledger, [reversal_item(transfer.entry_id, force=True)], atomic=True)
    assert balances(forced.results[0].response) == {source: 1_000, target: -200}


def test_a_reversal_item_needs_journal_write_from_an_unrestricted_token(ledger: Ledger) -> None:
    source, target = ledger.open(1_000), ledger.open(0)
    transfer = ledger.transfer(source, target, 300)
    funds_only = ledger.tokens.caller(scopes.FUNDS_WRITE)
    items = [deposit_item(source, 7), reversal_item(transfer.entry_id)]
    ordered = run_batch(ledger, items, funds_only)
    assert reasons_of(ordered) == ["OK", "PERMISSION_DENIED"]
    assert ordered.results[1].error.code == PERMISSION_DENIED
    assert dict(error_info(ordered.results[1].error).metadata) == {
        "required_scope": scopes.JOURNAL_WRITE
    }

    restricted = ledger.tokens.caller(
        scopes.FUNDS_WRITE, scopes.JOURNAL_WRITE, accounts=(source, target)
    )
    items = [deposit_item(source, 7), reversal_item(transfer.entry_id)]
    before = ledger.written()
    atomic = run_batch(ledger, items, restricted, atomic=True)
    assert reasons_of(atomic) == ["LINKED_COMMAND_FAILED", "PERMISSION_DENIED"]
    assert dict(error_info(atomic.results[1].error).metadata) == {
        "restriction": scopes.ACCOUNTS_CLAIM
    }
    assert ledger.written() == before
    assert request_ids_recorded(ledger.dsn, request_ids(items)) == set()
    # The entry is still not reversed: an unrestricted journal token reverses it.
    allowed = run_batch(ledger, [reversal_item(transfer.entry_id)], ledger.journal)
    assert reasons_of(allowed) == ["OK"]

"""ReverseEntry through the real pipeline processes (command server, outbox poller,
projector, query server), secured as in production: a reversal restores the balances
and its statement lines, read back through Kafka and Elasticsearch, name the entry they
reverse; every refusal has its reason and writes nothing; rebuild and reconcile agree
with the event store after reversals.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import psycopg
import pytest
from elasticsearch import Elasticsearch
from grpc_status import rpc_status

from chronos import cli
from chronos.read_model.indices import IndexNames
from chronos.read_model.rebuild import rebuild
from chronos.security import scopes
from chronos.v1 import commands_pb2, commands_pb2_grpc, ledger_pb2, queries_pb2, queries_pb2_grpc
from tests.e2e.helpers import details_of
from tests.e2e.secured_pipeline import secured_pipeline
from tests.integration.authorization_support import (
    Metadata,
    Tokens,
    eur,
    new_id,
    refusal_of,
    written,
)

CALL_TIMEOUT_SECONDS = 15
READ_WAIT_SECONDS = 60
WRITTEN = ("events", "outbox", "idempotency", "accounts", "entry_lines", "entry_reversals")


@dataclass
class Ledger:
    commands: commands_pb2_grpc.CommandServiceStub
    queries: queries_pb2_grpc.QueryServiceStub
    tokens: Tokens
    dsn: str
    es_url: str
    names: IndexNames

    @property
    def journal(self) -> Metadata:
        return self.tokens.caller(scopes.JOURNAL_WRITE)

    def reverse(self, entry_id: str, caller: Metadata | None = None, **fields: Any) -> Any:
        request = commands_pb2.ReverseEntryRequest(
            request_id=fields.pop("request_id", new_id()), entry_id=entry_id, **fields
        )
        return self.commands.ReverseEntry(
            request, metadata=caller or self.journal, timeout=CALL_TIMEOUT_SECONDS
        )

    def refusal(self, entry_id: str, **fields: Any) -> tuple[Any, ...]:
        with pytest.raises(grpc.RpcError) as caught:
            self.reverse(entry_id, **fields)
        return refusal_of(caught.value)

    def open(self, funds_minor: int) -> str:
        account_id = new_id()
        admin = self.tokens.admin
        self.commands.OpenAccount(
            commands_pb2.OpenAccountRequest(
                request_id=new_id(), account_id=account_id, owner_name="Owner", currency="EUR"
            ),
            metadata=admin,
            timeout=CALL_TIMEOUT_SECONDS,
        )
        if funds_minor:
            self.commands.Deposit(
                commands_pb2.DepositRequest(
                    request_id=new_id(), account_id=account_id, amount=eur(funds_minor)
                ),
                metadata=admin,
                timeout=CALL_TIMEOUT_SECONDS,
            )
        return account_id

    def transfer(self, source: str, target: str, minor: int) -> Any:
        return self.commands.TransferFunds(
            commands_pb2.TransferFundsRequest(
                request_id=new_id(), from_account_id=source, to_account_id=target, amount=eur(minor)
            ),
            metadata=self.tokens.admin,
            timeout=CALL_TIMEOUT_SECONDS,
        )

    def statement(self, account_id: str, position: int) -> list[Any]:
        response = self.queries.ListTransactions(
            queries_pb2.ListTransactionsRequest(account_id=account_id, min_position=position),
            metadata=self.tokens.admin,
            timeout=READ_WAIT_SECONDS,
        )
        return list(response.lines)

    def written(self) -> dict[str, int]:
        counts = written(self.dsn)
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            for table in WRITTEN[4:]:
                row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
                assert row is not None
                counts[table] = int(row[0])
        return counts


@pytest.fixture(scope="module")
def ledger(
    pg_dsn: str,
    kafka_bootstrap: str,
    es_url: str,
    es_client: Elasticsearch,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Ledger]:
    with secured_pipeline(
        pg_dsn, kafka_bootstrap, es_url, es_client, tmp_path_factory, "reversal"
    ) as running:
        yield Ledger(
            running.commands, running.queries, running.tokens, running.dsn, es_url, running.names
        )


def balances(response: Any) -> dict[str, int]:
    return {b.account_id: b.balance.minor_units for b in response.balances}


def test_a_reversed_transfer_restores_the_balances_and_both_entries_are_linked(
    ledger: Ledger,
) -> None:
    source, target = ledger.open(1_000), ledger.open(0)
    transfer = ledger.transfer(source, target, 300)
    request_id = new_id()
    # Idempotency is per principal: the replay below comes from the same caller.
    caller = ledger.journal
    fields: dict[str, Any] = {
        "request_id": request_id,
        "reason": "sent twice",
        "metadata": {"case": "C-17"},
    }
    reversal = ledger.reverse(transfer.entry_id, caller, **fields)
    assert balances(reversal) == {source: 1_000, target: 0}
    assert reversal.entry_id != transfer.entry_id and not reversal.replayed

    # The same request again: the stored answer, nothing new.
    before = ledger.written()
    replay = ledger.reverse(transfer.entry_id, caller, **fields)
    assert replay.replayed and replay.entry_id == reversal.entry_id
    assert replay.position == reversal.position
    assert ledger.written() == before

    # Command -> outbox poller -> Kafka -> projector -> Elasticsearch -> query server.
    lines = ledger.statement(target, reversal.position)
    assert [(line.entry_id, line.kind, line.direction) for line in lines] == [
        (reversal.entry_id, ledger_pb2.ENTRY_KIND_REVERSAL, ledger_pb2.SIDE_DEBIT),
        (transfer.entry_id, ledger_pb2.ENTRY_KIND_TRANSFER, ledger_pb2.SIDE_CREDIT),
    ]
    assert [line.reverses_entry_id for line in lines] == [transfer.entry_id, ""]
    assert [line.balance_after.minor_units for line in lines] == [0, 300]
    assert lines[0].description == "sent twice"
    assert lines[0].counterparty_account_id == source
    source_lines = ledger.statement(source, reversal.position)
    assert source_lines[0].reverses_entry_id == transfer.entry_id
    assert source_lines[0].direction == ledger_pb2.SIDE_CREDIT
    assert source_lines[0].balance_after.minor_units == 1_000


def test_each_refusal_has_its_reason_and_writes_nothing(ledger: Ledger) -> None:
    source, target = ledger.open(1_000), ledger.open(0)
    transfer = ledger.transfer(source, target, 300)
    reversal = ledger.reverse(transfer.entry_id)
    unknown = new_id()
    before = ledger.written()
    again = ledger.refusal(transfer.entry_id)
    assert again[:3] == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "ENTRY_ALREADY_REVERSED",
        {"entry_id": transfer.entry_id, "reversal_entry_id": reversal.entry_id},
    )
    assert "already reversed" in again[3]
    twice = ledger.refusal(reversal.entry_id)
    assert twice[:3] == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "ENTRY_NOT_REVERSIBLE",
        {"entry_id": reversal.entry_id},
    )
    assert "cannot be reversed" in twice[3]
    missing = ledger.refusal(unknown)
    assert missing[:3] == (grpc.StatusCode.NOT_FOUND, "ENTRY_NOT_FOUND", {"entry_id": unknown})
    with pytest.raises(grpc.RpcError) as caught:
        ledger.reverse("not-an-entry")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(caught.value)
    assert status is not None
    assert details_of(status) == ("VALIDATION_FAILED", ["entry_id"])
    funds_only = ledger.tokens.caller(scopes.FUNDS_WRITE, scopes.ACCOUNTS_WRITE)
    denied = ledger.refusal(transfer.entry_id, caller=funds_only)
    assert denied[:3] == (
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_DENIED",
        {"required_scope": scopes.JOURNAL_WRITE},
    )
    assert ledger.written() == before


def test_a_reversal_below_the_limit_is_refused_unless_forced(ledger: Ledger) -> None:
    source, target = ledger.open(1_000), ledger.open(0)
    transfer = ledger.transfer(source, target, 300)
    ledger.commands.Withdraw(
        commands_pb2.WithdrawRequest(request_id=new_id(), account_id=target, amount=eur(200)),
        metadata=ledger.tokens.admin,
        timeout=CALL_TIMEOUT_SECONDS,
    )
    before = ledger.written()
    refused = ledger.refusal(transfer.entry_id)
    assert refused[:2] == (grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS")
    assert refused[2]["account_id"] == target
    assert ledger.written() == before
    forced = ledger.reverse(transfer.entry_id, force=True)
    assert balances(forced) == {source: 1_000, target: -200}
    account = ledger.queries.GetAccount(
        queries_pb2.GetAccountRequest(account_id=target, min_position=forced.position),
        metadata=ledger.tokens.admin,
        timeout=READ_WAIT_SECONDS,
    )
    assert account.balance.minor_units == -200


def test_rebuild_and_reconcile_agree_after_reversals(
    ledger: Ledger, es_client: Elasticsearch, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, target = ledger.open(5_000), ledger.open(0)
    entries = [ledger.transfer(source, target, 100 + i).entry_id for i in range(4)]
    last = None
    for entry_id in entries[:3]:
        last = ledger.reverse(entry_id, force=True)
    assert last is not None
    ledger.statement(target, last.position)  # the projection has caught up
    monkeypatch.setenv("CHRONOS_PG_DSN", ledger.dsn)
    monkeypatch.setenv("CHRONOS_ES_URL", ledger.es_url)
    reconcile = ["reconcile", "--index-prefix", ledger.names.prefix, "--wait-seconds", "30"]
    assert cli.main(reconcile) == 0
    with psycopg.connect(ledger.dsn, autocommit=True) as conn:
        rebuild(conn, es_client, ledger.names)
    assert cli.main(reconcile) == 0
    lines = ledger.statement(target, last.position)
    reversed_ids = {line.reverses_entry_id for line in lines if line.reverses_entry_id}
    assert reversed_ids == set(entries[:3])
    assert lines[0].balance_after.minor_units == 103

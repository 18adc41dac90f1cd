"""Authorization against the real pipeline processes (command server, outbox poller,
projector, query server), served with TLS and authentication on, with real tokens
signed by a local key: a valid token lacking the scope, for every RPC; an
account-restricted token on another account (debit, freeze, read) and inside an
ExecuteBatch. Each refusal is PERMISSION_DENIED with the missing scope or the refused
account in ErrorInfo, and PostgreSQL shows nothing written by it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from elasticsearch import Elasticsearch

from chronos.security import scopes
from chronos.v1 import commands_pb2, commands_pb2_grpc, queries_pb2, queries_pb2_grpc
from tests.e2e.secured_pipeline import secured_pipeline
from tests.integration.authorization_support import (
    ALL_METHODS,
    COMMAND_SERVICE,
    EVERY_SCOPE_BUT_ADMIN,
    LATER,
    Metadata,
    Tokens,
    denied,
    error_info,
    eur,
    new_id,
    refusal_of,
    request_ids_recorded,
    required_scopes,
    valid_requests,
    written,
)

CALL_TIMEOUT_SECONDS = 15
READ_WAIT_SECONDS = 60


@dataclass
class Pipeline:
    commands: commands_pb2_grpc.CommandServiceStub
    queries: queries_pb2_grpc.QueryServiceStub
    tokens: Tokens
    dsn: str

    def of(self, method_full_name: str) -> Callable[..., Any]:
        service, _, method = method_full_name.rpartition(".")
        stub = self.commands if service == COMMAND_SERVICE.full_name else self.queries
        return getattr(stub, method)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def pipeline(
    pg_dsn: str,
    kafka_bootstrap: str,
    es_url: str,
    es_client: Elasticsearch,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Pipeline]:
    with secured_pipeline(
        pg_dsn, kafka_bootstrap, es_url, es_client, tmp_path_factory, "authz"
    ) as running:
        yield Pipeline(running.commands, running.queries, running.tokens, running.dsn)


def refused(call: Callable[..., Any], request: Any, metadata: Metadata) -> tuple[Any, ...]:
    with pytest.raises(grpc.RpcError) as caught:
        call(request, metadata=metadata, timeout=CALL_TIMEOUT_SECONDS)
    return refusal_of(caught.value)


def open_funded(pipeline: Pipeline, funds_minor: int) -> tuple[str, int]:
    """Opens and funds an account as admin; returns its id and the last position."""
    account_id = new_id()
    admin = pipeline.tokens.admin
    response = pipeline.commands.OpenAccount(
        commands_pb2.OpenAccountRequest(
            request_id=new_id(), account_id=account_id, owner_name="Owner", currency="EUR"
        ),
        metadata=admin,
        timeout=CALL_TIMEOUT_SECONDS,
    )
    if funds_minor:
        response = pipeline.commands.Deposit(
            commands_pb2.DepositRequest(
                request_id=new_id(), account_id=account_id, amount=eur(funds_minor)
            ),
            metadata=admin,
            timeout=CALL_TIMEOUT_SECONDS,
        )
    return account_id, response.position


def test_a_valid_token_lacking_the_scope_is_refused_every_rpc(pipeline: Pipeline) -> None:
    account_id, _ = open_funded(pipeline, 1_000)
    other_id, _ = open_funded(pipeline, 0)
    pipeline.commands.FreezeAccount(
        commands_pb2.FreezeAccountRequest(request_id=new_id(), account_id=other_id),
        metadata=pipeline.tokens.admin,
        timeout=CALL_TIMEOUT_SECONDS,
    )
    requests = valid_requests(account_id, other_id)
    before = written(pipeline.dsn)
    # The servers do authenticate: without a token, the answer is not about scopes.
    anonymous = refused(
        pipeline.commands.Deposit, requests[f"{COMMAND_SERVICE.full_name}.Deposit"], ()
    )
    assert anonymous[:2] == (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED")
    for method in ALL_METHODS:
        required = required_scopes(method)
        others = [scope for scope in EVERY_SCOPE_BUT_ADMIN if scope not in required]
        code, reason, metadata, message = refused(
            pipeline.of(method), requests[method], pipeline.tokens.caller(*others)
        )
        assert (code, reason, metadata) == denied({"required_scope": " ".join(sorted(required))})
        assert message.startswith("This token lacks "), message
    assert written(pipeline.dsn) == before


def test_a_restricted_token_cannot_debit_freeze_or_read_another_account(
    pipeline: Pipeline,
) -> None:
    mine, _ = open_funded(pipeline, 1_000)
    other, _ = open_funded(pipeline, 1_000)
    customer = pipeline.tokens.caller(
        scopes.FUNDS_WRITE, scopes.ACCOUNTS_WRITE, scopes.LEDGER_READ, accounts=(mine,)
    )
    c, q = commands_pb2, queries_pb2
    attempts = [
        (pipeline.commands.Withdraw, c.WithdrawRequest(account_id=other, amount=eur(1))),
        (
            pipeline.commands.TransferFunds,
            c.TransferFundsRequest(from_account_id=other, to_account_id=mine, amount=eur(1)),
        ),
        (pipeline.commands.FreezeAccount, c.FreezeAccountRequest(account_id=other)),
        (pipeline.queries.GetAccount, q.GetAccountRequest(account_id=other)),
        (pipeline.queries.ListTransactions, q.ListTransactionsRequest(account_id=other)),
        (pipeline.queries.GetBalanceAt, q.GetBalanceAtRequest(account_id=other, at_time=LATER)),
    ]
    before = written(pipeline.dsn)
    for call, request in attempts:
        if hasattr(request, "request_id"):
            request.request_id = new_id()
        assert refused(call, request, customer)[:3] == denied({"account_id": other})
    search = refused(pipeline.queries.SearchAccounts, q.SearchAccountsRequest(), customer)
    assert search[:3] == denied({"restriction": "chronos_accounts"})
    assert written(pipeline.dsn) == before

    # Its own account: debited, and read back once the pipeline has projected it.
    paid = pipeline.commands.TransferFunds(
        c.TransferFundsRequest(
            request_id=new_id(), from_account_id=mine, to_account_id=other, amount=eur(300)
        ),
        metadata=customer,
        timeout=CALL_TIMEOUT_SECONDS,
    )
    account = pipeline.queries.GetAccount(
        q.GetAccountRequest(account_id=mine, min_position=paid.position),
        metadata=customer,
        timeout=READ_WAIT_SECONDS,
    )
    assert account.balance.minor_units == 700
    statement = pipeline.queries.ListTransactions(
        q.ListTransactionsRequest(account_id=mine, min_position=paid.position),
        metadata=customer,
        timeout=READ_WAIT_SECONDS,
    )
    assert [line.balance_after.minor_units for line in statement.lines] == [700, 1_000]


def test_execute_batch_refuses_only_the_item_on_another_account(pipeline: Pipeline) -> None:
    mine, _ = open_funded(pipeline, 1_000)
    other, _ = open_funded(pipeline, 1_000)
    c = commands_pb2
    items = [
        c.BatchCommand(
            withdraw=c.WithdrawRequest(request_id=new_id(), account_id=mine, amount=eur(100))
        ),
        c.BatchCommand(
            withdraw=c.WithdrawRequest(request_id=new_id(), account_id=other, amount=eur(100))
        ),
        c.BatchCommand(
            freeze_account=c.FreezeAccountRequest(request_id=new_id(), account_id=other)
        ),
        c.BatchCommand(
            transfer_funds=c.TransferFundsRequest(
                request_id=new_id(), from_account_id=mine, to_account_id=other, amount=eur(50)
            )
        ),
    ]
    request_ids = [getattr(item, str(item.WhichOneof("command"))).request_id for item in items]
    customer = pipeline.tokens.caller(scopes.FUNDS_WRITE, scopes.ACCOUNTS_WRITE, accounts=(mine,))
    before = written(pipeline.dsn)
    response = pipeline.commands.ExecuteBatch(
        c.ExecuteBatchRequest(commands=items), metadata=customer, timeout=CALL_TIMEOUT_SECONDS
    )
    outcomes = [result.WhichOneof("outcome") for result in response.results]
    assert outcomes == ["response", "error", "error", "response"]
    for index in (1, 2):
        status = response.results[index].error
        info = error_info(status)
        assert status.code == grpc.StatusCode.PERMISSION_DENIED.value[0]
        assert (info.reason, dict(info.metadata)) == ("PERMISSION_DENIED", {"account_id": other})
    balances = {b.account_id: b.balance.minor_units for b in response.results[3].response.balances}
    assert balances == {mine: 850, other: 1_050}
    after = written(pipeline.dsn)
    assert after["idempotency"] - before["idempotency"] == 2
    assert after["events"] - before["events"] == 4
    assert request_ids_recorded(pipeline.dsn, request_ids) == {request_ids[0], request_ids[3]}

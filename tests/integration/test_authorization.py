"""Authorization through real gRPC servers in-process (127.0.0.1), over real PostgreSQL,
Kafka and Elasticsearch: scopes per method and per batch item, the account
restriction, and that a refused call writes nothing.

Callers carry real tokens, signed with a local key (chronos_dev.pki) and verified by
the servers' own authenticator against its JWKS file; the channel is plaintext, as TLS
is not what these tests are about (tests/e2e/test_authorization.py runs the server
processes with TLS).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from elasticsearch import Elasticsearch
from prometheus_client import REGISTRY

from chronos.event_store.writer import LedgerWriter, WriterSettings, writer_pool
from chronos.read_model.client import async_elasticsearch_client
from chronos.read_model.indices import IndexNames, ensure_indices
from chronos.read_model.queries import ReadModelQueries
from chronos.read_model.watermark import APPLIED, SEARCHABLE, AsyncWatermarkReader
from chronos.read_model.watermark_cache import WatermarkCache
from chronos.rpc import InFlightLimit, add_servicer
from chronos.security import scopes
from chronos.v1 import (
    commands_pb2,
    commands_pb2_grpc,
    queries_pb2,
    queries_pb2_grpc,
)
from chronos_dev.pki import ensure_local_pki
from command_server.servicer import CommandServicer, commands_in
from query_server.servicer import QueryServicer
from tests.integration.authorization_support import (
    ALL_METHODS,
    COMMAND_SERVICE,
    EVERY_SCOPE_BUT_ADMIN,
    LATER,
    QUERY_SERVICE,
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
from tests.integration.readside_support import (
    FakePoller,
    build_projector,
    fresh_database,
    project_until_visible,
    projector_config,
    stored_events,
    unique,
)


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> Tokens:
    return Tokens(ensure_local_pki(tmp_path_factory.mktemp("pki")))


@dataclass
class Stubs:
    command: commands_pb2_grpc.CommandServiceStub
    query: queries_pb2_grpc.QueryServiceStub
    tokens: Tokens

    def of(self, method_full_name: str) -> Any:
        service, _, method = method_full_name.rpartition(".")
        stub = self.command if service == COMMAND_SERVICE.full_name else self.query
        return getattr(stub, method)


@contextlib.asynccontextmanager
async def servers(dsn: str, es_url: str, names: IndexNames, tokens: Tokens) -> AsyncIterator[Stubs]:
    """Both servicers on one grpc.aio server on 127.0.0.1, registered as in production."""
    pool = writer_pool(dsn, min_size=1, max_size=3)
    await pool.open(wait=True, timeout=20)
    writer = LedgerWriter(pool, WriterSettings(lanes=2))
    writer.start()
    es = async_elasticsearch_client(es_url)
    searchable, applied = (
        WatermarkCache(AsyncWatermarkReader(es, names, kind), refresh_seconds=0.05)
        for kind in (SEARCHABLE, APPLIED)
    )
    read_model = ReadModelQueries(es, names, piggybacked=applied)
    queries = QueryServicer(
        read_model, searchable, min_position_wait_seconds_max=10, applied_watermark=applied
    )
    server = grpc.aio.server()
    limit = InFlightLimit(1000, "commands", weigh=commands_in)
    add_servicer(
        server, CommandServicer(writer), COMMAND_SERVICE, limit, tokens.authenticator("command")
    )
    add_servicer(
        server, queries, QUERY_SERVICE, InFlightLimit(100, "calls"), tokens.authenticator("query")
    )
    port = server.add_insecure_port("127.0.0.1:0")
    assert port
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Stubs(
            commands_pb2_grpc.CommandServiceStub(channel),
            queries_pb2_grpc.QueryServiceStub(channel),
            tokens,
        )
    finally:
        await channel.close()
        await server.stop(None)
        await read_model.close()
        await es.close()
        await writer.close()
        await pool.close()


def served(
    dsn: str,
    es_url: str,
    names: IndexNames,
    tokens: Tokens,
    body: Callable[[Stubs], Awaitable[Any]],
) -> Any:
    async def run() -> Any:
        async with servers(dsn, es_url, names, tokens) as stubs:
            return await body(stubs)

    return asyncio.run(run())


@pytest.fixture
def read_side(es_client: Elasticsearch, names: IndexNames) -> IndexNames:
    ensure_indices(es_client, names)
    return names


async def refusal(call: Awaitable[Any]) -> tuple[grpc.StatusCode, str, dict[str, str], str]:
    """The code, ErrorInfo reason and metadata and message of a call that must fail."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return refusal_of(caught.value)


async def open_funded(stubs: Stubs, funds_minor: int) -> str:
    account_id = new_id()
    await stubs.command.OpenAccount(
        commands_pb2.OpenAccountRequest(
            request_id=new_id(), account_id=account_id, owner_name="Owner", currency="EUR"
        ),
        metadata=stubs.tokens.admin,
    )
    if funds_minor:
        await stubs.command.Deposit(
            commands_pb2.DepositRequest(
                request_id=new_id(), account_id=account_id, amount=eur(funds_minor)
            ),
            metadata=stubs.tokens.admin,
        )
    return account_id


async def open_pair(stubs: Stubs) -> tuple[str, str]:
    """A funded account, and an empty frozen one: every command of valid_requests can
    then succeed (unfreezing and closing the second)."""
    account_id = await open_funded(stubs, 1_000)
    other_id = await open_funded(stubs, 0)
    await stubs.command.FreezeAccount(
        commands_pb2.FreezeAccountRequest(request_id=new_id(), account_id=other_id),
        metadata=stubs.tokens.admin,
    )
    return account_id, other_id


def refusals_counted(server: str) -> float:
    labels = {"server": server, "reason": "PERMISSION_DENIED"}
    return REGISTRY.get_sample_value("chronos_auth_refusals_total", labels) or 0.0


def test_every_method_refuses_a_token_lacking_its_scope_and_writes_nothing(
    ledger_dsn: str,
    es_url: str,
    read_side: IndexNames,
    tokens: Tokens,
) -> None:

    before_counted = {server: refusals_counted(server) for server in ("command", "query")}

    async def body(stubs: Stubs) -> tuple[dict[str, int], dict[str, Any]]:
        account_id, other_id = await open_pair(stubs)
        before = written(ledger_dsn)
        outcomes: dict[str, Any] = {}
        for method in ALL_METHODS:
            required = required_scopes(method)
            others = [scope for scope in EVERY_SCOPE_BUT_ADMIN if scope not in required]
            request = valid_requests(account_id, other_id)[method]
            empty = type(request)()
            # A valid request and an empty (invalid) one get the same answer: the caller
            # learns nothing about its request.
            outcomes[method] = [
                await refusal(stubs.of(method)(message, metadata=tokens.caller(*others)))
                for message in (request, empty)
            ]
        return before, outcomes

    before, outcomes = served(ledger_dsn, es_url, read_side, tokens, body)
    assert written(ledger_dsn) == before
    for method, answers in outcomes.items():
        required = " ".join(sorted(required_scopes(method)))
        for code, reason, metadata, message in answers:
            assert (code, reason, metadata) == denied({"required_scope": required}), method
            assert message.startswith("This token lacks "), message
    # Two refusals per CommandService method (ReverseEntry and the three hold
    # commands included since issue 17) and per QueryService method
    # (ListPendingTransfers included; ListEvents and GetEntry since issue 18).
    assert refusals_counted("command") - before_counted["command"] == 26
    assert refusals_counted("query") - before_counted["query"] == 14


def test_each_scope_lets_its_methods_through(
    ledger_dsn: str,
    es_url: str,
    read_side: IndexNames,
    tokens: Tokens,
) -> None:

    async def body(stubs: Stubs) -> dict[str, grpc.StatusCode]:
        codes = {}
        for method in ALL_METHODS:
            # Fresh accounts for each method, so that every command can succeed.
            account_id, other_id = await open_pair(stubs)
            pending_id = ""
            if method.endswith(("PostPendingTransfer", "VoidPendingTransfer")):
                placed = await stubs.command.CreatePendingTransfer(
                    commands_pb2.CreatePendingTransferRequest(
                        request_id=new_id(),
                        from_account_id=account_id,
                        to_account_id=other_id,
                        amount=eur(5),
                    ),
                    metadata=stubs.tokens.admin,
                )
                pending_id = placed.pending_id
            request = valid_requests(account_id, other_id, pending_id)[method]
            try:
                await stubs.of(method)(request, metadata=tokens.caller(required_scopes(method)[-1]))
                codes[method] = grpc.StatusCode.OK
            except grpc.aio.AioRpcError as error:
                codes[method] = error.code()
        return codes

    codes = served(ledger_dsn, es_url, read_side, tokens, body)
    # The reads name accounts not yet projected, and ReverseEntry and GetEntry an entry
    # nobody posted: NOT_FOUND, past authorization. (ListEvents lists none of the
    # unprojected account's events: OK.)
    reads = {
        f"chronos.v1.QueryService.{name}"
        for name in (
            "GetAccount",
            "ListTransactions",
            "GetBalanceAt",
            "ListPendingTransfers",
            "GetEntry",
        )
    } | {"chronos.v1.CommandService.ReverseEntry"}
    assert {method: code for method, code in codes.items() if method not in reads} == {
        method: grpc.StatusCode.OK for method in ALL_METHODS if method not in reads
    }
    assert {codes[method] for method in reads} == {grpc.StatusCode.NOT_FOUND}


def project_everything(
    dsn: str, es: Elasticsearch, es_url: str, kafka_bootstrap: str, topic: str, names: IndexNames
) -> None:
    """Brings every event of the ledger into Elasticsearch, as the poller and projector do."""
    events = stored_events(dsn)
    FakePoller(kafka_bootstrap, topic).publish(events)
    config = projector_config(kafka_bootstrap, es_url, topic, names, unique("authz"))
    projector = build_projector(es, config, pg_dsn=dsn)
    try:
        project_until_visible(projector, es, names, events[-1].position)
    finally:
        projector.close()


def test_a_restricted_token_debits_changes_and_reads_only_its_accounts(
    fresh_ledger: str,
    es_url: str,
    es_client: Elasticsearch,
    kafka_bootstrap: str,
    topic: str,
    read_side: IndexNames,
    tokens: Tokens,
) -> None:
    dsn = fresh_ledger

    async def setup(stubs: Stubs) -> tuple[str, str]:
        return await open_funded(stubs, 1_000), await open_funded(stubs, 1_000)

    mine, other = served(dsn, es_url, read_side, tokens, setup)
    customer = tokens.caller(
        scopes.LEDGER_READ, scopes.FUNDS_WRITE, scopes.ACCOUNTS_WRITE, accounts=(mine,)
    )
    c = commands_pb2
    refused_commands = {
        "Withdraw": c.WithdrawRequest(request_id=new_id(), account_id=other, amount=eur(1)),
        "TransferFunds": c.TransferFundsRequest(
            request_id=new_id(), from_account_id=other, to_account_id=mine, amount=eur(1)
        ),
        "Deposit": c.DepositRequest(request_id=new_id(), account_id=other, amount=eur(1)),
        "FreezeAccount": c.FreezeAccountRequest(request_id=new_id(), account_id=other),
        "UnfreezeAccount": c.UnfreezeAccountRequest(request_id=new_id(), account_id=other),
        "CloseAccount": c.CloseAccountRequest(request_id=new_id(), account_id=other),
        # Spelled in capitals: still the other account, once canonical.
        "OpenAccount": c.OpenAccountRequest(
            request_id=new_id(), account_id=new_id().upper(), owner_name="X", currency="EUR"
        ),
    }

    async def refused(stubs: Stubs) -> dict[str, Any]:
        return {
            name: await refusal(getattr(stubs.command, name)(request, metadata=customer))
            for name, request in refused_commands.items()
        }

    before = written(dsn)
    outcomes = served(dsn, es_url, read_side, tokens, refused)
    assert written(dsn) == before
    for name, (code, reason, metadata, message) in outcomes.items():
        if name == "OpenAccount":
            shown = refused_commands[name].account_id.lower()  # type: ignore[attr-defined]
            assert (code, reason, metadata) == denied({"account_id": shown})
        else:
            assert (code, reason, metadata) == denied({"account_id": other}), name
        assert "restricted to some accounts" in message

    async def allowed(stubs: Stubs) -> None:
        await stubs.command.Withdraw(
            c.WithdrawRequest(request_id=new_id(), account_id=mine, amount=eur(100)),
            metadata=customer,
        )
        # Paying someone: the receiving account need not be listed.
        await stubs.command.TransferFunds(
            c.TransferFundsRequest(
                request_id=new_id(), from_account_id=mine, to_account_id=other, amount=eur(200)
            ),
            metadata=customer,
        )

    served(dsn, es_url, read_side, tokens, allowed)
    project_everything(dsn, es_client, es_url, kafka_bootstrap, topic, read_side)
    q = queries_pb2

    async def reads(stubs: Stubs) -> tuple[list[Any], list[Any]]:
        own = [
            await stubs.query.GetAccount(q.GetAccountRequest(account_id=mine), metadata=customer),
            await stubs.query.ListTransactions(
                q.ListTransactionsRequest(account_id=mine), metadata=customer
            ),
            await stubs.query.GetBalanceAt(
                q.GetBalanceAtRequest(account_id=mine, at_time=LATER),
                metadata=customer,
            ),
        ]
        others = [
            await refusal(
                stubs.query.GetAccount(q.GetAccountRequest(account_id=other), metadata=customer)
            ),
            await refusal(
                stubs.query.ListTransactions(
                    q.ListTransactionsRequest(account_id=other), metadata=customer
                )
            ),
            await refusal(
                stubs.query.GetBalanceAt(q.GetBalanceAtRequest(account_id=other), metadata=customer)
            ),
            await refusal(stubs.query.SearchAccounts(q.SearchAccountsRequest(), metadata=customer)),
        ]
        return own, others

    own, others = served(dsn, es_url, read_side, tokens, reads)
    account, statement, balance_at = own
    assert account.balance.minor_units == 1_000 - 100 - 200
    assert len(statement.lines) == 3
    assert balance_at.balance.minor_units == 700
    assert [outcome[:3] for outcome in others] == [
        denied({"account_id": other}),
        denied({"account_id": other}),
        denied({"account_id": other}),
        denied({"restriction": "chronos_accounts"}),
    ]


def test_execute_batch_refuses_only_the_items_without_the_right(
    ledger_dsn: str,
    es_url: str,
    read_side: IndexNames,
    tokens: Tokens,
) -> None:
    c = commands_pb2

    async def body(stubs: Stubs) -> tuple[str, str, list[str], Any, dict[str, int], Any]:
        mine = await open_funded(stubs, 1_000)
        other = await open_funded(stubs, 1_000)
        items = [
            c.BatchCommand(
                withdraw=c.WithdrawRequest(request_id=new_id(), account_id=mine, amount=eur(100))
            ),
            c.BatchCommand(
                withdraw=c.WithdrawRequest(request_id=new_id(), account_id=other, amount=eur(100))
            ),
            c.BatchCommand(
                open_account=c.OpenAccountRequest(
                    request_id=new_id(), account_id=mine, owner_name="X", currency="EUR"
                )
            ),
            c.BatchCommand(
                transfer_funds=c.TransferFundsRequest(
                    request_id=new_id(), from_account_id=mine, to_account_id=other, amount=eur(50)
                )
            ),
            c.BatchCommand(
                freeze_account=c.FreezeAccountRequest(request_id=new_id(), account_id=mine)
            ),
        ]
        request_ids = [getattr(item, str(item.WhichOneof("command"))).request_id for item in items]
        before = written(ledger_dsn)
        customer = tokens.caller(scopes.FUNDS_WRITE, accounts=(mine,))
        response = await stubs.command.ExecuteBatch(
            c.ExecuteBatchRequest(commands=items), metadata=customer
        )
        # Without any write scope the batch as a whole is refused.
        whole = await refusal(
            stubs.command.ExecuteBatch(
                c.ExecuteBatchRequest(commands=items[:1]),
                metadata=tokens.caller(scopes.LEDGER_READ),
            )
        )
        return mine, other, request_ids, response, before, whole

    mine, other, request_ids, response, before, whole = served(
        ledger_dsn, es_url, read_side, tokens, body
    )
    outcomes = [result.WhichOneof("outcome") for result in response.results]
    assert outcomes == ["response", "error", "error", "response", "error"]
    refused = {index: error_info(response.results[index].error) for index in (1, 2, 4)}
    assert {index: response.results[index].error.code for index in refused} == {
        1: grpc.StatusCode.PERMISSION_DENIED.value[0],
        2: grpc.StatusCode.PERMISSION_DENIED.value[0],
        4: grpc.StatusCode.PERMISSION_DENIED.value[0],
    }
    assert {index: (info.reason, dict(info.metadata)) for index, info in refused.items()} == {
        1: ("PERMISSION_DENIED", {"account_id": other}),
        2: ("PERMISSION_DENIED", {"required_scope": "accounts:write"}),
        4: ("PERMISSION_DENIED", {"required_scope": "accounts:write"}),
    }
    transfer = response.results[3].response
    assert {b.account_id: b.balance.minor_units for b in transfer.balances} == {
        mine: 1_000 - 100 - 50,
        other: 1_000 + 50,
    }
    # Only the two allowed commands were recorded: a withdrawal's 2 events, a transfer's 2.
    after = written(ledger_dsn)
    assert after["idempotency"] - before["idempotency"] == 2
    assert after["events"] - before["events"] == after["outbox"] - before["outbox"] == 4
    assert request_ids_recorded(ledger_dsn, request_ids) == {request_ids[0], request_ids[3]}
    assert whole[:3] == denied({"required_scope": "accounts:write funds:write journal:write"})


@pytest.fixture
def fresh_ledger(pg_dsn: str) -> Iterator[str]:
    with fresh_database(pg_dsn) as dsn:
        yield dsn


def test_a_restricted_token_holds_and_ends_holds_only_on_its_accounts(
    fresh_ledger: str, es_url: str, read_side: IndexNames, tokens: Tokens
) -> None:
    dsn = fresh_ledger
    c = commands_pb2

    async def setup(stubs: Stubs) -> tuple[str, str, str]:
        mine, other = await open_funded(stubs, 1_000), await open_funded(stubs, 1_000)
        placed = await stubs.command.CreatePendingTransfer(
            c.CreatePendingTransferRequest(
                request_id=new_id(), from_account_id=other, to_account_id=mine, amount=eur(10)
            ),
            metadata=stubs.tokens.admin,
        )
        return mine, other, placed.pending_id

    mine, other, others_hold = served(dsn, es_url, read_side, tokens, setup)
    customer = tokens.caller(scopes.FUNDS_WRITE, accounts=(mine,))
    refused_calls = {
        "CreatePendingTransfer": c.CreatePendingTransferRequest(
            request_id=new_id(), from_account_id=other, to_account_id=mine, amount=eur(1)
        ),
        # The hold pays the customer's account, but is a debit of the other one.
        "PostPendingTransfer": c.PostPendingTransferRequest(
            request_id=new_id(), pending_id=others_hold
        ),
        "VoidPendingTransfer": c.VoidPendingTransferRequest(
            request_id=new_id(), pending_id=others_hold
        ),
    }

    async def refused(stubs: Stubs) -> list[Any]:
        outcomes = [
            await refusal(getattr(stubs.command, name)(request, metadata=customer))
            for name, request in refused_calls.items()
        ]
        # An unknown pending id tells a restricted token nothing either.
        outcomes.append(
            await refusal(
                stubs.command.PostPendingTransfer(
                    c.PostPendingTransferRequest(request_id=new_id(), pending_id=new_id()),
                    metadata=customer,
                )
            )
        )
        return outcomes

    before = written(dsn)
    outcomes = served(dsn, es_url, read_side, tokens, refused)
    assert written(dsn) == before
    assert [(code, reason, metadata) for code, reason, metadata, _ in outcomes] == [
        denied({"account_id": other}),
        denied({"account_id": other}),
        denied({"account_id": other}),
        denied({"account_id": ""}),
    ]

    async def allowed(stubs: Stubs) -> None:
        placed = await stubs.command.CreatePendingTransfer(
            c.CreatePendingTransferRequest(
                request_id=new_id(), from_account_id=mine, to_account_id=other, amount=eur(5)
            ),
            metadata=customer,
        )
        await stubs.command.PostPendingTransfer(
            c.PostPendingTransferRequest(request_id=new_id(), pending_id=placed.pending_id),
            metadata=customer,
        )

    served(dsn, es_url, read_side, tokens, allowed)

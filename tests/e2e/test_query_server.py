"""``python -m query_server`` as a real process, called through the generated stubs.

The read model behind it is real: a fresh event store written by the ``LedgerWriter``,
published by a stand-in poller, projected by the real projector running in the
background under a unique index prefix.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from elasticsearch import Elasticsearch
from google.protobuf import timestamp_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from chronos.domain.commands import Deposit, Money, OpenAccount, TransferFunds
from chronos.event_store.mapper import StoredEvent
from chronos.read_model.indices import IndexNames
from chronos.v1 import ledger_pb2, queries_pb2, queries_pb2_grpc
from chronos_dev.client import channel as open_channel
from tests.e2e.helpers import details_of, free_port
from tests.integration.readside_support import (
    BackgroundProjector,
    FakePoller,
    execute,
    fresh_database,
    index_prefix,
    kafka_topic,
    projector_config,
    stored_events,
    unique,
)

REPO = Path(__file__).resolve().parents[2]
ADA, BOB, CHEN = (str(uuid.UUID(int=(0xE2E << 112) + i)) for i in (1, 2, 3))
TRANSFERS = 12
START_SECONDS_MAX = 60.0
CALL_TIMEOUT_SECONDS = 10.0


def rid() -> str:
    return uuid.uuid4().hex


def commands() -> list[Any]:
    eur = "EUR"
    return [
        OpenAccount(request_id=rid(), account_id=ADA, owner_name="Ada Lovelace", currency=eur),
        OpenAccount(request_id=rid(), account_id=BOB, owner_name="Bob Lovelace", currency=eur),
        OpenAccount(request_id=rid(), account_id=CHEN, owner_name="Chen Wei", currency="USD"),
        Deposit(request_id=rid(), account_id=ADA, amount=Money(currency=eur, minor_units=10_000)),
        *[
            TransferFunds(
                request_id=rid(),
                from_account_id=ADA,
                to_account_id=BOB,
                amount=Money(currency=eur, minor_units=100 + i),
                description=f"transfer {i}",
            )
            for i in range(TRANSFERS)
        ],
    ]


@dataclass
class Stack:
    dsn: str
    names: IndexNames
    poller: FakePoller
    events: list[StoredEvent]
    stub: queries_pb2_grpc.QueryServiceStub
    channel: grpc.Channel

    def run(self, batch: list[Any]) -> int:
        """Executes commands, publishes their events; returns the last position."""
        after = self.events[-1].position
        execute(self.dsn, batch)
        new = stored_events(self.dsn, after_position=after)
        self.poller.publish(new)
        self.events.extend(new)
        return new[-1].position


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    channel: grpc.Channel

    def stop(self) -> int:
        self.channel.close()
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)


def start_server(es_url: str, names: IndexNames) -> Server:
    address = f"127.0.0.1:{free_port()}"
    environment = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "CHRONOS_QUERY_ADDR": address,
        "CHRONOS_ES_URL": es_url,
        "CHRONOS_INDEX_PREFIX": names.prefix,
        "CHRONOS_QUERY_MIN_POSITION_WAIT_SECONDS_MAX": "5",
        "CHRONOS_QUERY_METRICS_PORT": "0",
    }
    process = subprocess.Popen([sys.executable, "-m", "query_server"], cwd=REPO, env=environment)
    channel = open_channel(address)
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + START_SECONDS_MAX
    while True:
        assert process.poll() is None, "query server exited during start"
        try:
            answer = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
            if answer.status == health_pb2.HealthCheckResponse.SERVING:
                return Server(process, channel)
        except grpc.RpcError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("query server did not become healthy")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def stack(
    pg_dsn: str, kafka_bootstrap: str, es_url: str, es_client: Elasticsearch
) -> Iterator[Stack]:
    with (
        fresh_database(pg_dsn) as dsn,
        index_prefix(es_client) as names,
        kafka_topic(kafka_bootstrap) as topic,
    ):
        execute(dsn, commands())
        events = stored_events(dsn)
        poller = FakePoller(kafka_bootstrap, topic)
        poller.publish(events)
        config = projector_config(kafka_bootstrap, es_url, topic, names, unique("g"))
        with BackgroundProjector(es_client, config, pg_dsn=dsn):
            server = start_server(es_url, names)
            try:
                stub = queries_pb2_grpc.QueryServiceStub(server.channel)  # type: ignore[no-untyped-call]
                # Everything published so far is visible once this returns.
                stub.GetAccount(
                    queries_pb2.GetAccountRequest(account_id=ADA, min_position=events[-1].position),
                    timeout=CALL_TIMEOUT_SECONDS,
                )
                yield Stack(dsn, names, poller, events, stub, server.channel)
            finally:
                code = server.stop()
            assert code == 0, f"query server exited with {code} after SIGTERM"


def error_details(error: grpc.RpcError) -> tuple[str, list[str]]:
    """ErrorInfo reason and BadRequest fields of a failed call."""
    status = rpc_status.from_call(error)
    assert status is not None, "no rich status"
    return details_of(status)


def timestamp(moment: datetime) -> timestamp_pb2.Timestamp:
    message = timestamp_pb2.Timestamp()
    message.FromDatetime(moment)
    return message


def lines_of(stack: Stack, account_id: str) -> list[StoredEvent]:
    return [e for e in stack.events if e.stream_id == account_id and "Funds" in e.event_type]


def test_get_account(stack: Stack) -> None:
    answer = stack.stub.GetAccount(
        queries_pb2.GetAccountRequest(account_id=ADA.upper()), timeout=CALL_TIMEOUT_SECONDS
    )
    spent = sum(100 + i for i in range(TRANSFERS))
    assert answer.account_id == ADA
    assert answer.owner_name == "Ada Lovelace"
    assert answer.balance == ledger_pb2.Money(currency="EUR", minor_units=10_000 - spent)
    assert answer.status == ledger_pb2.ACCOUNT_STATUS_ACTIVE
    assert answer.kind == ledger_pb2.ACCOUNT_KIND_USER
    assert answer.version == 2 + TRANSFERS
    assert answer.as_of_position >= stack.events[-1].position
    opened = next(e for e in stack.events if e.stream_id == ADA)
    assert answer.opened_at.ToDatetime(tzinfo=UTC) == opened.recorded_at


def test_concurrent_get_accounts_each_get_their_own_answer(stack: Stack) -> None:
    # Calls in flight together share multi-gets in the server; each must still get its
    # own account, or NOT_FOUND for an unknown one, whatever it was batched with.
    unknown = str(uuid.UUID(int=(0xE2E << 112) + 99))
    asked = [ADA, BOB, CHEN, unknown] * 25
    futures = [
        stack.stub.GetAccount.future(
            queries_pb2.GetAccountRequest(account_id=account_id), timeout=CALL_TIMEOUT_SECONDS
        )
        for account_id in asked
    ]
    owners = {ADA: "Ada Lovelace", BOB: "Bob Lovelace", CHEN: "Chen Wei"}
    for account_id, future in zip(asked, futures, strict=True):
        if account_id == unknown:
            with pytest.raises(grpc.RpcError) as failure:
                future.result()
            assert failure.value.code() == grpc.StatusCode.NOT_FOUND
            continue
        answer = future.result()
        assert answer.account_id == account_id
        assert answer.owner_name == owners[account_id]


def test_list_transactions_pages_newest_first(stack: Stack) -> None:
    expected = sorted((e.position for e in lines_of(stack, ADA)), reverse=True)
    assert len(expected) == 1 + TRANSFERS
    seen: list[int] = []
    token = ""
    for _ in range(10):
        page = stack.stub.ListTransactions(
            queries_pb2.ListTransactionsRequest(account_id=ADA, page_size=5, page_token=token),
            timeout=CALL_TIMEOUT_SECONDS,
        )
        assert len(page.lines) <= 5
        seen.extend(line.position for line in page.lines)
        token = page.next_page_token
        if not token:
            break
    assert seen == expected
    first = stack.stub.ListTransactions(
        queries_pb2.ListTransactionsRequest(account_id=ADA, page_size=1),
        timeout=CALL_TIMEOUT_SECONDS,
    ).lines[0]
    assert first.direction == ledger_pb2.SIDE_DEBIT
    assert first.kind == ledger_pb2.ENTRY_KIND_TRANSFER
    assert first.counterparty_account_id == BOB
    assert first.description == f"transfer {TRANSFERS - 1}"
    assert first.amount.minor_units == 100 + TRANSFERS - 1


def test_list_transactions_time_window(stack: Stack) -> None:
    lines = sorted(lines_of(stack, BOB), key=lambda e: e.position)
    start, end = lines[2].recorded_at, lines[5].recorded_at
    page = stack.stub.ListTransactions(
        queries_pb2.ListTransactionsRequest(
            account_id=BOB, start_time=timestamp(start), end_time=timestamp(end)
        ),
        timeout=CALL_TIMEOUT_SECONDS,
    )
    # Start inclusive, end exclusive.
    assert [line.position for line in page.lines] == [e.position for e in lines[2:5]][::-1]
    assert page.next_page_token == ""


def test_page_tokens_are_bound_and_checked(stack: Stack) -> None:
    page = stack.stub.ListTransactions(
        queries_pb2.ListTransactionsRequest(account_id=ADA, page_size=2),
        timeout=CALL_TIMEOUT_SECONDS,
    )
    assert page.next_page_token
    for request in (
        queries_pb2.ListTransactionsRequest(account_id=BOB, page_token=page.next_page_token),
        queries_pb2.ListTransactionsRequest(
            account_id=ADA, page_token=page.next_page_token[:-2] + "xy"
        ),
    ):
        with pytest.raises(grpc.RpcError) as failure:
            stack.stub.ListTransactions(request, timeout=CALL_TIMEOUT_SECONDS)
        assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_details(failure.value) == ("VALIDATION_FAILED", ["page_token"])


def test_balance_at(stack: Stack) -> None:
    lines = sorted(lines_of(stack, ADA), key=lambda e: e.position)
    before = stack.stub.GetBalanceAt(
        queries_pb2.GetBalanceAtRequest(
            account_id=ADA, at_time=timestamp(lines[0].recorded_at - timedelta(microseconds=1))
        ),
        timeout=CALL_TIMEOUT_SECONDS,
    )
    assert (before.balance.minor_units, before.line_position) == (0, 0)
    assert before.balance.currency == "EUR"
    at_deposit = stack.stub.GetBalanceAt(
        queries_pb2.GetBalanceAtRequest(account_id=ADA, at_time=timestamp(lines[0].recorded_at)),
        timeout=CALL_TIMEOUT_SECONDS,
    )
    assert (at_deposit.balance.minor_units, at_deposit.line_position) == (
        10_000,
        lines[0].position,
    )
    after_three = stack.stub.GetBalanceAt(
        queries_pb2.GetBalanceAtRequest(account_id=ADA, at_time=timestamp(lines[3].recorded_at)),
        timeout=CALL_TIMEOUT_SECONDS,
    )
    assert after_three.balance.minor_units == 10_000 - 100 - 101 - 102
    assert after_three.as_of_position >= stack.events[-1].position


def test_times_outside_the_indexable_range_still_answer(stack: Stack) -> None:
    # Valid timestamps Elasticsearch's date_nanos cannot hold (before 1970, after 2262).
    year_1 = timestamp_pb2.Timestamp(seconds=-62_135_596_800)
    year_9999 = timestamp_pb2.Timestamp(seconds=253_402_300_799, nanos=999_999_999)
    ada_lines = sorted(lines_of(stack, ADA), key=lambda e: e.position)
    latest = stack.stub.GetBalanceAt(
        queries_pb2.GetBalanceAtRequest(account_id=ADA, at_time=year_9999),
        timeout=CALL_TIMEOUT_SECONDS,
    )
    assert latest.line_position == ada_lines[-1].position
    assert latest.balance.minor_units == 10_000 - sum(100 + i for i in range(TRANSFERS))
    first = stack.stub.GetBalanceAt(
        queries_pb2.GetBalanceAtRequest(account_id=ADA, at_time=year_1),
        timeout=CALL_TIMEOUT_SECONDS,
    )
    assert (first.balance.minor_units, first.line_position) == (0, 0)
    everything = stack.stub.ListTransactions(
        queries_pb2.ListTransactionsRequest(
            account_id=BOB, start_time=year_1, end_time=year_9999, page_size=500
        ),
        timeout=CALL_TIMEOUT_SECONDS,
    )
    assert [line.position for line in everything.lines] == sorted(
        (e.position for e in lines_of(stack, BOB)), reverse=True
    )


def test_a_request_that_is_not_protobuf_is_invalid_argument(stack: Stack) -> None:
    # A string field that is not UTF-8 (some clients do not check) and a corrupt wire.
    call = stack.channel.unary_unary("/chronos.v1.QueryService/GetAccount")
    for payload in (b"\x0a\x03\xff\xfe\xfd", b"\xff\xff\xff"):
        with pytest.raises(grpc.RpcError) as failure:
            call(payload, timeout=CALL_TIMEOUT_SECONDS)
        assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_details(failure.value) == ("VALIDATION_FAILED", [])
        assert failure.value.details().startswith(
            "The request is invalid: it is not a well-formed chronos.v1.GetAccountRequest message"
        )


def test_search_accounts(stack: Stack) -> None:
    found = stack.stub.SearchAccounts(
        queries_pb2.SearchAccountsRequest(query="ada lovelace"), timeout=CALL_TIMEOUT_SECONDS
    )
    assert [a.account_id for a in found.accounts] == [ADA]
    typo = stack.stub.SearchAccounts(
        queries_pb2.SearchAccountsRequest(query="Lovelase"), timeout=CALL_TIMEOUT_SECONDS
    )
    assert {a.account_id for a in typo.accounts} == {ADA, BOB}
    usd = stack.stub.SearchAccounts(
        queries_pb2.SearchAccountsRequest(currency="USD"), timeout=CALL_TIMEOUT_SECONDS
    )
    # The USD system account exists in the index but is not a customer.
    assert [a.account_id for a in usd.accounts] == [CHEN] and usd.total_hits == 1
    seen: list[str] = []
    token = ""
    for _ in range(5):
        page = stack.stub.SearchAccounts(
            queries_pb2.SearchAccountsRequest(page_size=2, page_token=token),
            timeout=CALL_TIMEOUT_SECONDS,
        )
        assert page.total_hits == 3
        seen.extend(a.account_id for a in page.accounts)
        token = page.next_page_token
        if not token:
            break
    assert sorted(seen) == sorted([ADA, BOB, CHEN])


def test_min_position_waits_for_the_projection(stack: Stack) -> None:
    position = stack.run(
        [Deposit(request_id=rid(), account_id=CHEN, amount=Money(currency="USD", minor_units=7))]
    )
    answer = stack.stub.GetAccount(
        queries_pb2.GetAccountRequest(account_id=CHEN, min_position=position),
        timeout=CALL_TIMEOUT_SECONDS,
    )
    assert answer.balance.minor_units == 7
    assert answer.as_of_position >= position
    lines = stack.stub.ListTransactions(
        queries_pb2.ListTransactionsRequest(account_id=CHEN, min_position=position),
        timeout=CALL_TIMEOUT_SECONDS,
    )
    assert [line.position for line in lines.lines] == [position]


def test_projection_behind(stack: Stack) -> None:
    with pytest.raises(grpc.RpcError) as failure:
        stack.stub.GetAccount(
            queries_pb2.GetAccountRequest(
                account_id=ADA, min_position=stack.events[-1].position + 1_000_000
            ),
            timeout=0.5,
        )
    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_details(failure.value)[0] == "PROJECTION_BEHIND"


@pytest.mark.parametrize(
    ("method", "request_message", "fields"),
    [
        ("GetAccount", queries_pb2.GetAccountRequest(account_id="nope"), ["account_id"]),
        (
            "GetAccount",
            queries_pb2.GetAccountRequest(account_id=ADA, min_position=-1),
            ["min_position"],
        ),
        (
            "ListTransactions",
            queries_pb2.ListTransactionsRequest(account_id=ADA, page_size=501),
            ["page_size"],
        ),
        (
            "ListTransactions",
            queries_pb2.ListTransactionsRequest(
                account_id=ADA,
                start_time=timestamp(datetime(2026, 1, 2, tzinfo=UTC)),
                end_time=timestamp(datetime(2026, 1, 2, tzinfo=UTC)),
            ),
            ["end_time"],
        ),
        ("GetBalanceAt", queries_pb2.GetBalanceAtRequest(account_id=ADA), ["at_time"]),
        (
            "SearchAccounts",
            queries_pb2.SearchAccountsRequest(page_size=101, currency="eur"),
            ["currency", "page_size"],
        ),
    ],
)
def test_invalid_requests(
    stack: Stack, method: str, request_message: Any, fields: list[str]
) -> None:
    with pytest.raises(grpc.RpcError) as failure:
        getattr(stack.stub, method)(request_message, timeout=CALL_TIMEOUT_SECONDS)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_details(failure.value) == ("VALIDATION_FAILED", fields)


def test_an_unknown_currency_is_refused_by_the_ledgers_rule(stack: Stack) -> None:
    # Three upper-case letters, but no ISO 4217 currency: the query server checks a
    # currency by the ledger's one rule, as the command server does, so a search for
    # it is refused rather than answered with no accounts.
    with pytest.raises(grpc.RpcError) as failure:
        stack.stub.SearchAccounts(
            queries_pb2.SearchAccountsRequest(currency="ZZZ"), timeout=CALL_TIMEOUT_SECONDS
        )
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_details(failure.value) == ("VALIDATION_FAILED", ["currency"])
    assert "'ZZZ' is not an ISO 4217 currency" in (failure.value.details() or "")


def test_unknown_account(stack: Stack) -> None:
    unknown = str(uuid.uuid4())
    for method, request_message in (
        ("GetAccount", queries_pb2.GetAccountRequest(account_id=unknown)),
        ("ListTransactions", queries_pb2.ListTransactionsRequest(account_id=unknown)),
        (
            "GetBalanceAt",
            queries_pb2.GetBalanceAtRequest(
                account_id=unknown, at_time=timestamp(datetime.now(UTC))
            ),
        ),
    ):
        with pytest.raises(grpc.RpcError) as failure:
            getattr(stack.stub, method)(request_message, timeout=CALL_TIMEOUT_SECONDS)
        assert failure.value.code() == grpc.StatusCode.NOT_FOUND, method
        assert error_details(failure.value)[0] == "ACCOUNT_NOT_FOUND"


def test_elasticsearch_outage_is_unavailable() -> None:
    # A server whose Elasticsearch is not there: every call fails the same clean way.
    server = start_server(f"https://127.0.0.1:{free_port()}", IndexNames(prefix=unique("t")))
    try:
        stub = queries_pb2_grpc.QueryServiceStub(server.channel)  # type: ignore[no-untyped-call]
        with pytest.raises(grpc.RpcError) as failure:
            stub.GetAccount(
                queries_pb2.GetAccountRequest(account_id=ADA), timeout=CALL_TIMEOUT_SECONDS
            )
        assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
        assert error_details(failure.value)[0] == "READ_MODEL_UNAVAILABLE"
    finally:
        assert server.stop() == 0

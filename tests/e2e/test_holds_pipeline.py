"""Holds through the whole pipeline as real processes: command server (with its expiry
job) → PostgreSQL → outbox poller → Kafka → projector → Elasticsearch → query server.

A hold lowers available, not the balance; a full or partial post moves money and
releases the rest; a void and an expiry release; every refusal answers its reason and
writes nothing; GetAccount agrees with the command answers; the statement shows the
lifecycle; a rebuild gives the same read model and reconcile finds no drift.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import grpc
import psycopg
import pytest
from elasticsearch import Elasticsearch
from grpc_status import rpc_status

from chronos.read_model.indices import IndexNames
from chronos.read_model.rebuild import rebuild
from chronos.read_model.reconcile import reconcile
from chronos.v1 import commands_pb2, commands_pb2_grpc, ledger_pb2, queries_pb2, queries_pb2_grpc
from chronos_dev.client import channel as open_channel
from tests.e2e.helpers import details_of, free_port, service_process
from tests.integration.readside_support import all_sources, fresh_database, index_prefix, unique

TIMEOUT_SECONDS = 10
WAIT_SECONDS_MAX = 60.0


@dataclass
class Pipeline:
    commands: Any
    queries: Any
    dsn: str
    names: IndexNames
    es: Elasticsearch


@pytest.fixture(scope="module")
def pipeline(
    pg_dsn: str,
    kafka_bootstrap: str,
    es_url: str,
    es_client: Elasticsearch,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Pipeline]:
    logs = tmp_path_factory.mktemp("logs")
    command_address = f"127.0.0.1:{free_port()}"
    query_address = f"127.0.0.1:{free_port()}"
    with fresh_database(pg_dsn) as dsn, index_prefix(es_client) as names, ExitStack() as stack:
        env = {
            "CHRONOS_PG_DSN": dsn,
            "CHRONOS_KAFKA_BOOTSTRAP": kafka_bootstrap,
            "CHRONOS_ES_URL": es_url,
            "CHRONOS_EVENTS_TOPIC": unique("holds-events"),
            "CHRONOS_INDEX_PREFIX": names.prefix,
            "CHRONOS_PROJECTOR_GROUP": unique("holds-projector"),
            "CHRONOS_COMMAND_ADDR": command_address,
            "CHRONOS_QUERY_ADDR": query_address,
            "CHRONOS_HOLD_EXPIRY_INTERVAL_SECONDS": "0.2",
        }
        for module, address in (
            ("command_server", command_address),
            ("outbox_poller", None),
            ("projector", None),
            ("query_server", query_address),
        ):
            stack.enter_context(
                service_process(module, env, log_path=logs / f"{module}.log", grpc_address=address)
            )
        deadline = time.monotonic() + WAIT_SECONDS_MAX
        while not es_client.indices.exists(index=names.projection):
            assert time.monotonic() < deadline, "the projector did not create its indices"
            time.sleep(0.1)
        yield Pipeline(
            commands_pb2_grpc.CommandServiceStub(
                stack.enter_context(open_channel(command_address))
            ),
            queries_pb2_grpc.QueryServiceStub(stack.enter_context(open_channel(query_address))),
            dsn,
            names,
            es_client,
        )


def eur(minor: int) -> ledger_pb2.Money:
    return ledger_pb2.Money(currency="EUR", minor_units=minor)


def rid() -> str:
    return str(uuid.uuid4())


def open_account(pipeline: Pipeline, funds_minor: int) -> str:
    opened = pipeline.commands.OpenAccount(
        commands_pb2.OpenAccountRequest(request_id=rid(), owner_name="Holder", currency="EUR"),
        timeout=TIMEOUT_SECONDS,
    )
    if funds_minor:
        pipeline.commands.Deposit(
            commands_pb2.DepositRequest(
                request_id=rid(), account_id=opened.account_id, amount=eur(funds_minor)
            ),
            timeout=TIMEOUT_SECONDS,
        )
    return str(opened.account_id)


def sums(balance: Any) -> tuple[int, int, int, int]:
    """(balance, pending debits, pending credits, available) of an answer."""
    return (
        balance.balance.minor_units,
        balance.pending_debits.minor_units,
        balance.pending_credits.minor_units,
        balance.available.minor_units,
    )


def answered(response: Any, account_id: str) -> tuple[int, int, int, int]:
    (balance,) = [b for b in response.balances if b.account_id == account_id]
    return sums(balance)


def read(pipeline: Pipeline, account_id: str, position: int = 0) -> Any:
    return pipeline.queries.GetAccount(
        queries_pb2.GetAccountRequest(account_id=account_id, min_position=position),
        timeout=TIMEOUT_SECONDS,
    )


def create(pipeline: Pipeline, source: str, target: str, minor: int, timeout: int = 0) -> Any:
    return pipeline.commands.CreatePendingTransfer(
        commands_pb2.CreatePendingTransferRequest(
            request_id=rid(),
            from_account_id=source,
            to_account_id=target,
            amount=eur(minor),
            description="card authorization",
            timeout_seconds=timeout,
        ),
        timeout=TIMEOUT_SECONDS,
    )


def event_count(pipeline: Pipeline) -> int:
    with psycopg.connect(pipeline.dsn) as conn:
        row = conn.execute("SELECT count(*) FROM events").fetchone()
    assert row is not None
    return int(row[0])


def refused(
    pipeline: Pipeline, call: Callable[[], Any], code: grpc.StatusCode, reason: str
) -> None:
    before = event_count(pipeline)
    with pytest.raises(grpc.RpcError) as raised:
        call()
    error = raised.value
    assert error.code() == code, error.details()
    status = rpc_status.from_call(error)
    assert status is not None
    assert details_of(status)[0] == reason
    assert error.details()
    assert event_count(pipeline) == before, f"{reason} wrote events"


def wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_SECONDS_MAX
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_hold_post_partial_post_void_and_expiry(pipeline: Pipeline) -> None:
    ada, bob = open_account(pipeline, 1_000), open_account(pipeline, 0)
    placed = create(pipeline, ada, bob, 300)
    assert placed.pending_id
    assert answered(placed, ada) == (1_000, 300, 0, 700)
    assert answered(placed, bob) == (0, 0, 300, 0)
    # The read side agrees with the answer (read your write).
    assert sums(read(pipeline, ada, placed.position)) == (1_000, 300, 0, 700)
    assert sums(read(pipeline, bob, placed.position)) == (0, 0, 300, 0)

    partial = pipeline.commands.PostPendingTransfer(
        commands_pb2.PostPendingTransferRequest(
            request_id=rid(), pending_id=placed.pending_id, amount=eur(120)
        ),
        timeout=TIMEOUT_SECONDS,
    )
    assert partial.entry_id and partial.pending_id == placed.pending_id
    assert answered(partial, ada) == (880, 0, 0, 880)
    assert answered(partial, bob) == (120, 0, 0, 120)
    assert sums(read(pipeline, ada, partial.position)) == (880, 0, 0, 880)

    full = create(pipeline, ada, bob, 80)
    posted = pipeline.commands.PostPendingTransfer(
        commands_pb2.PostPendingTransferRequest(request_id=rid(), pending_id=full.pending_id),
        timeout=TIMEOUT_SECONDS,
    )
    assert answered(posted, ada) == (800, 0, 0, 800)

    to_void = create(pipeline, ada, bob, 200)
    voided = pipeline.commands.VoidPendingTransfer(
        commands_pb2.VoidPendingTransferRequest(
            request_id=rid(), pending_id=to_void.pending_id, reason="order cancelled"
        ),
        timeout=TIMEOUT_SECONDS,
    )
    assert answered(voided, ada) == (800, 0, 0, 800)
    assert sums(read(pipeline, bob, voided.position)) == (200, 0, 0, 200)

    expiring_request = commands_pb2.CreatePendingTransferRequest(
        request_id=rid(), from_account_id=ada, to_account_id=bob, amount=eur(50), timeout_seconds=1
    )
    expiring = pipeline.commands.CreatePendingTransfer(expiring_request, timeout=TIMEOUT_SECONDS)
    assert answered(expiring, ada) == (800, 50, 0, 750)
    # The ledger's expiry job releases it; the projection follows.
    # (Read at least as of the hold, else the document from before it would pass.)
    wait_for(lambda: sums(read(pipeline, ada, expiring.position)) == (800, 0, 0, 800))
    # Each account's events travel on its own partition: wait for the other one too.
    wait_for(lambda: sums(read(pipeline, bob, expiring.position)) == (200, 0, 0, 200))
    # The same request_id sent after the expiry replays the original answer.
    again = pipeline.commands.CreatePendingTransfer(expiring_request, timeout=TIMEOUT_SECONDS)
    assert again.replayed and again.pending_id == expiring.pending_id

    refused(
        pipeline,
        lambda: pipeline.commands.PostPendingTransfer(
            commands_pb2.PostPendingTransferRequest(
                request_id=rid(), pending_id=expiring.pending_id
            ),
            timeout=TIMEOUT_SECONDS,
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "PENDING_TRANSFER_NOT_PENDING",
    )

    def statement() -> Any:
        return pipeline.queries.ListTransactions(
            queries_pb2.ListTransactionsRequest(account_id=ada, page_size=50),
            timeout=TIMEOUT_SECONDS,
        ).lines

    # Statement lines are searchable once the index refreshed (about a second).
    wait_for(lambda: any(line.kind == ledger_pb2.ENTRY_KIND_HOLD_EXPIRED for line in statement()))
    lines = statement()
    kinds = [(line.kind, line.pending_id) for line in lines if line.pending_id]
    assert (ledger_pb2.ENTRY_KIND_HOLD_PLACED, placed.pending_id) in kinds
    assert (ledger_pb2.ENTRY_KIND_PENDING_TRANSFER, placed.pending_id) in kinds
    assert (ledger_pb2.ENTRY_KIND_HOLD_VOIDED, to_void.pending_id) in kinds
    assert (ledger_pb2.ENTRY_KIND_HOLD_EXPIRED, expiring.pending_id) in kinds
    newest_placed = next(
        line
        for line in lines
        if line.pending_id == expiring.pending_id and line.kind == ledger_pb2.ENTRY_KIND_HOLD_PLACED
    )
    assert newest_placed.available_after.minor_units == 750
    assert newest_placed.pending_debits_after.minor_units == 50

    at = pipeline.queries.GetBalanceAt(
        queries_pb2.GetBalanceAtRequest(account_id=ada, at_time=newest_placed.recorded_at),
        timeout=TIMEOUT_SECONDS,
    )
    assert sums(at) == (800, 50, 0, 750)


def test_every_refusal_answers_its_reason_and_writes_nothing(pipeline: Pipeline) -> None:
    ada, bob = open_account(pipeline, 500), open_account(pipeline, 0)
    held = create(pipeline, ada, bob, 400)
    post = pipeline.commands.PostPendingTransfer
    void = pipeline.commands.VoidPendingTransfer
    FP = grpc.StatusCode.FAILED_PRECONDITION
    cases: list[tuple[Callable[[], Any], grpc.StatusCode, str]] = [
        (lambda: create(pipeline, ada, bob, 101), FP, "INSUFFICIENT_FUNDS"),
        (
            lambda: post(
                commands_pb2.PostPendingTransferRequest(
                    request_id=rid(), pending_id=str(uuid.uuid4())
                ),
                timeout=TIMEOUT_SECONDS,
            ),
            grpc.StatusCode.NOT_FOUND,
            "PENDING_TRANSFER_NOT_FOUND",
        ),
        (
            lambda: post(
                commands_pb2.PostPendingTransferRequest(
                    request_id=rid(), pending_id=held.pending_id, amount=eur(401)
                ),
                timeout=TIMEOUT_SECONDS,
            ),
            FP,
            "AMOUNT_EXCEEDS_PENDING",
        ),
        (
            lambda: pipeline.commands.CloseAccount(
                commands_pb2.CloseAccountRequest(request_id=rid(), account_id=bob),
                timeout=TIMEOUT_SECONDS,
            ),
            FP,
            "ACCOUNT_HAS_PENDING",
        ),
        (
            lambda: void(
                commands_pb2.VoidPendingTransferRequest(request_id=rid(), pending_id="not-an-id"),
                timeout=TIMEOUT_SECONDS,
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "VALIDATION_FAILED",
        ),
    ]
    for call, code, reason in cases:
        refused(pipeline, call, code, reason)
    void_request = commands_pb2.VoidPendingTransferRequest(
        request_id=rid(), pending_id=held.pending_id
    )
    first = void(void_request, timeout=TIMEOUT_SECONDS)
    # The same void again replays; a new void of the same hold is refused (Blnk #41).
    assert void(void_request, timeout=TIMEOUT_SECONDS).replayed
    for call in (
        lambda: void(
            commands_pb2.VoidPendingTransferRequest(request_id=rid(), pending_id=held.pending_id),
            timeout=TIMEOUT_SECONDS,
        ),
        lambda: post(
            commands_pb2.PostPendingTransferRequest(request_id=rid(), pending_id=held.pending_id),
            timeout=TIMEOUT_SECONDS,
        ),
    ):
        refused(pipeline, call, FP, "PENDING_TRANSFER_NOT_PENDING")
    assert sums(read(pipeline, ada, first.position)) == (500, 0, 0, 500)


def test_holds_in_a_batch(pipeline: Pipeline) -> None:
    ada, bob = open_account(pipeline, 100), open_account(pipeline, 0)
    item = commands_pb2.BatchCommand(
        create_pending_transfer=commands_pb2.CreatePendingTransferRequest(
            request_id=rid(), from_account_id=ada, to_account_id=bob, amount=eur(60)
        )
    )
    second = commands_pb2.BatchCommand(
        create_pending_transfer=commands_pb2.CreatePendingTransferRequest(
            request_id=rid(), from_account_id=ada, to_account_id=bob, amount=eur(60)
        )
    )
    results = pipeline.commands.ExecuteBatch(
        commands_pb2.ExecuteBatchRequest(commands=[item, second]), timeout=TIMEOUT_SECONDS
    ).results
    assert answered(results[0].response, ada) == (100, 60, 0, 40)
    assert details_of(results[1].error)[0] == "INSUFFICIENT_FUNDS"
    pending_id = results[0].response.pending_id
    posted = pipeline.commands.ExecuteBatch(
        commands_pb2.ExecuteBatchRequest(
            commands=[
                commands_pb2.BatchCommand(
                    post_pending_transfer=commands_pb2.PostPendingTransferRequest(
                        request_id=rid(), pending_id=pending_id
                    )
                )
            ]
        ),
        timeout=TIMEOUT_SECONDS,
    ).results
    assert answered(posted[0].response, bob) == (60, 0, 0, 60)


def test_rebuild_and_reconcile_agree_with_the_projection(pipeline: Pipeline) -> None:
    ada, bob = open_account(pipeline, 1_000), open_account(pipeline, 0)
    last = create(pipeline, ada, bob, 300)  # left open: pending sums are not zero
    read(pipeline, ada, last.position)
    with psycopg.connect(pipeline.dsn) as conn:
        report = reconcile(conn, pipeline.es, pipeline.names, wait_seconds=30)
        assert report.ok and not report.store_errors, report
        live = all_sources(pipeline.es, pipeline.names.accounts)
        assert live[ada]["pending_debits_minor"] == 300
        assert live[ada]["available_minor"] == 700
        rebuild(conn, pipeline.es, pipeline.names)
        rebuilt = all_sources(pipeline.es, pipeline.names.accounts)
        assert rebuilt[ada] == live[ada] and rebuilt[bob] == live[bob]
        report = reconcile(conn, pipeline.es, pipeline.names, wait_seconds=30)
        assert report.ok and not report.store_errors, report


def test_list_pending_transfers_by_account_and_state(pipeline: Pipeline) -> None:
    ada, bob = open_account(pipeline, 1_000), open_account(pipeline, 0)
    posted = create(pipeline, ada, bob, 100)
    pipeline.commands.PostPendingTransfer(
        commands_pb2.PostPendingTransferRequest(
            request_id=rid(), pending_id=posted.pending_id, amount=eur(40)
        ),
        timeout=TIMEOUT_SECONDS,
    )
    voided = create(pipeline, ada, bob, 50)
    pipeline.commands.VoidPendingTransfer(
        commands_pb2.VoidPendingTransferRequest(request_id=rid(), pending_id=voided.pending_id),
        timeout=TIMEOUT_SECONDS,
    )
    expired = create(pipeline, ada, bob, 30, timeout=1)
    open_ones = [create(pipeline, ada, bob, 10 + i) for i in range(3)]
    last = open_ones[-1].position

    def listed(account_id: str, state: int = 0, page_size: int = 0, token: str = "") -> Any:
        return pipeline.queries.ListPendingTransfers(
            queries_pb2.ListPendingTransfersRequest(
                account_id=account_id,
                state=state,
                page_size=page_size,
                page_token=token,
                min_position=last,
            ),
            timeout=TIMEOUT_SECONDS,
        )

    def states() -> dict[str, int]:
        return {h.pending_id: h.state for h in listed(ada).pending_transfers}

    wait_for(lambda: states().get(expired.pending_id) == queries_pb2.PENDING_TRANSFER_STATE_EXPIRED)
    every = listed(ada).pending_transfers
    # Newest placed first; the to account sees the same holds.
    assert [h.pending_id for h in every] == [
        *(o.pending_id for o in reversed(open_ones)),
        expired.pending_id,
        voided.pending_id,
        posted.pending_id,
    ]
    assert [h.pending_id for h in listed(bob).pending_transfers] == [h.pending_id for h in every]
    first = every[-1]
    assert (first.from_account_id, first.to_account_id) == (ada, bob)
    assert (first.amount.minor_units, first.posted.minor_units) == (100, 40)
    assert first.state == queries_pb2.PENDING_TRANSFER_STATE_POSTED
    assert every[-3].expires_at.seconds > 0 and not every[0].HasField("expires_at")
    by_state = {
        state: [h.pending_id for h in listed(ada, state).pending_transfers]
        for state in (
            queries_pb2.PENDING_TRANSFER_STATE_PENDING,
            queries_pb2.PENDING_TRANSFER_STATE_POSTED,
            queries_pb2.PENDING_TRANSFER_STATE_VOIDED,
            queries_pb2.PENDING_TRANSFER_STATE_EXPIRED,
        )
    }
    assert by_state == {
        queries_pb2.PENDING_TRANSFER_STATE_PENDING: [o.pending_id for o in reversed(open_ones)],
        queries_pb2.PENDING_TRANSFER_STATE_POSTED: [posted.pending_id],
        queries_pb2.PENDING_TRANSFER_STATE_VOIDED: [voided.pending_id],
        queries_pb2.PENDING_TRANSFER_STATE_EXPIRED: [expired.pending_id],
    }
    # Cursor pages: two, then the rest, the same holds in the same order.
    page = listed(ada, page_size=2)
    rest = listed(ada, page_size=10, token=page.next_page_token)
    assert [h.pending_id for h in [*page.pending_transfers, *rest.pending_transfers]] == [
        h.pending_id for h in every
    ]
    assert rest.next_page_token == ""
    with pytest.raises(grpc.RpcError) as raised:
        listed(bob, page_size=2, token=page.next_page_token)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_hold_metadata_is_stored_listed_filtered_and_fingerprinted(pipeline: Pipeline) -> None:
    ada, bob = open_account(pipeline, 1_000), open_account(pipeline, 0)
    request = commands_pb2.CreatePendingTransferRequest(
        request_id=rid(),
        from_account_id=ada,
        to_account_id=bob,
        amount=eur(300),
        metadata={"order_id": "A-17"},
    )
    placed = pipeline.commands.CreatePendingTransfer(request, timeout=TIMEOUT_SECONDS)
    # A second hold of the same order (for the pages) and one of another order.
    second = pipeline.commands.CreatePendingTransfer(
        commands_pb2.CreatePendingTransferRequest(
            request_id=rid(),
            from_account_id=ada,
            to_account_id=bob,
            amount=eur(50),
            metadata={"order_id": "A-17", "shop": "north"},
        ),
        timeout=TIMEOUT_SECONDS,
    )
    other = pipeline.commands.CreatePendingTransfer(
        commands_pb2.CreatePendingTransferRequest(
            request_id=rid(),
            from_account_id=ada,
            to_account_id=bob,
            amount=eur(20),
            metadata={"order_id": "B"},
        ),
        timeout=TIMEOUT_SECONDS,
    )
    # The same request_id with other metadata is another request.
    changed = commands_pb2.CreatePendingTransferRequest()
    changed.CopyFrom(request)
    changed.metadata["order_id"] = "A-18"
    refused(
        pipeline,
        lambda: pipeline.commands.CreatePendingTransfer(changed, timeout=TIMEOUT_SECONDS),
        grpc.StatusCode.ALREADY_EXISTS,
        "IDEMPOTENCY_KEY_REUSED",
    )
    # A post and a void carry their own metadata, on their lines only.
    pipeline.commands.PostPendingTransfer(
        commands_pb2.PostPendingTransferRequest(
            request_id=rid(),
            pending_id=placed.pending_id,
            amount=eur(100),
            metadata={"capture_id": "C-1"},
        ),
        timeout=TIMEOUT_SECONDS,
    )
    voided = pipeline.commands.VoidPendingTransfer(
        commands_pb2.VoidPendingTransferRequest(
            request_id=rid(), pending_id=other.pending_id, metadata={"cancel_id": "X-9"}
        ),
        timeout=TIMEOUT_SECONDS,
    )

    def listed(metadata: dict[str, str], page_size: int = 0, token: str = "") -> Any:
        return pipeline.queries.ListPendingTransfers(
            queries_pb2.ListPendingTransfersRequest(
                account_id=ada,
                metadata=metadata,
                page_size=page_size,
                page_token=token,
                min_position=voided.position,
            ),
            timeout=TIMEOUT_SECONDS,
        )

    orders = listed({"order_id": "A-17"}).pending_transfers
    assert [h.pending_id for h in orders] == [second.pending_id, placed.pending_id]
    # The hold keeps its create's metadata after it was posted.
    assert dict(orders[1].metadata) == {"order_id": "A-17"}
    assert orders[1].state == queries_pb2.PENDING_TRANSFER_STATE_POSTED
    assert dict(orders[0].metadata) == {"order_id": "A-17", "shop": "north"}
    assert [h.pending_id for h in listed({"order_id": "B"}).pending_transfers] == [other.pending_id]
    assert listed({"order_id": "A-17", "shop": "south"}).pending_transfers == []
    assert listed({"capture_id": "C-1"}).pending_transfers == []
    # Pages follow the filter; a token is bound to it.
    page = listed({"order_id": "A-17"}, page_size=1)
    rest = listed({"order_id": "A-17"}, page_size=5, token=page.next_page_token)
    assert [h.pending_id for h in [*page.pending_transfers, *rest.pending_transfers]] == [
        second.pending_id,
        placed.pending_id,
    ]
    for metadata in ({}, {"order_id": "B"}):
        with pytest.raises(grpc.RpcError) as raised:
            listed(metadata, page_size=1, token=page.next_page_token)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as raised:
        listed({"k" * 65: "v"})
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details_of(rpc_status.from_call(raised.value))[0] == "VALIDATION_FAILED"

    def statement(metadata: dict[str, str] | None = None) -> Any:
        return pipeline.queries.ListTransactions(
            queries_pb2.ListTransactionsRequest(account_id=ada, page_size=50, metadata=metadata),
            timeout=TIMEOUT_SECONDS,
        ).lines

    wait_for(lambda: any(line.kind == ledger_pb2.ENTRY_KIND_HOLD_VOIDED for line in statement()))
    by_kind = {(line.kind, line.pending_id): dict(line.metadata) for line in statement()}
    assert by_kind[(ledger_pb2.ENTRY_KIND_HOLD_PLACED, placed.pending_id)] == {"order_id": "A-17"}
    assert by_kind[(ledger_pb2.ENTRY_KIND_PENDING_TRANSFER, placed.pending_id)] == {
        "capture_id": "C-1"
    }
    assert by_kind[(ledger_pb2.ENTRY_KIND_HOLD_VOIDED, other.pending_id)] == {"cancel_id": "X-9"}
    assert [line.pending_id for line in statement({"order_id": "A-17"})] == [
        second.pending_id,
        placed.pending_id,
    ]


def test_hold_metadata_is_validated_like_every_movements(pipeline: Pipeline) -> None:
    ada, bob = open_account(pipeline, 100), open_account(pipeline, 0)
    placed = create(pipeline, ada, bob, 10)
    too_long = {"k" * 65: "v"}
    for call in (
        lambda: pipeline.commands.CreatePendingTransfer(
            commands_pb2.CreatePendingTransferRequest(
                request_id=rid(),
                from_account_id=ada,
                to_account_id=bob,
                amount=eur(10),
                metadata=too_long,
            ),
            timeout=TIMEOUT_SECONDS,
        ),
        lambda: pipeline.commands.PostPendingTransfer(
            commands_pb2.PostPendingTransferRequest(
                request_id=rid(), pending_id=placed.pending_id, metadata=too_long
            ),
            timeout=TIMEOUT_SECONDS,
        ),
        lambda: pipeline.commands.VoidPendingTransfer(
            commands_pb2.VoidPendingTransferRequest(
                request_id=rid(), pending_id=placed.pending_id, metadata=too_long
            ),
            timeout=TIMEOUT_SECONDS,
        ),
    ):
        refused(pipeline, call, grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED")

"""ListEvents and GetEntry through the real pipeline processes (command server, outbox
poller, projector, query server), secured as in production: commands go in through
gRPC, their events through Kafka into the events index, and come back out through the
query server. Every filter narrows to exactly the events the event store says it should;
a tail ascending from a position while a writer runs sees every position once; bad
filters and page tokens are INVALID_ARGUMENT with field violations; GetEntry describes a
transfer, a reversed entry and its reversal, and a hold's capture; a restricted token
sees only its own accounts' part.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, timedelta
from typing import Any

import grpc
import pytest
from elasticsearch import Elasticsearch
from google.protobuf import timestamp_pb2
from grpc_status import rpc_status

from chronos.event_store.mapper import StoredEvent
from chronos.security import scopes
from chronos.v1 import commands_pb2, commands_pb2_grpc, ledger_pb2, queries_pb2, queries_pb2_grpc
from query_server.page_tokens import encode_page_token
from tests.e2e.helpers import details_of
from tests.e2e.secured_pipeline import secured_pipeline
from tests.integration.authorization_support import Metadata, Tokens, eur, new_id, refusal_of
from tests.integration.readside_support import stored_events

CALL_TIMEOUT_SECONDS = 15
READ_WAIT_SECONDS = 60
TAIL_TRANSFERS = 40
TAIL_PAGE_SIZE = 7
TAIL_IDLE_SECONDS = 0.05

q = queries_pb2
c = commands_pb2


@dataclass
class Ledger:
    commands: commands_pb2_grpc.CommandServiceStub
    queries: queries_pb2_grpc.QueryServiceStub
    tokens: Tokens
    dsn: str
    # One caller for every command, so its principal is known.
    writer: Metadata

    def open(self, funds_minor: int) -> str:
        account_id = new_id()
        self.commands.OpenAccount(
            c.OpenAccountRequest(
                request_id=new_id(), account_id=account_id, owner_name="Owner", currency="EUR"
            ),
            metadata=self.writer,
            timeout=CALL_TIMEOUT_SECONDS,
        )
        if funds_minor:
            self.commands.Deposit(
                c.DepositRequest(
                    request_id=new_id(), account_id=account_id, amount=eur(funds_minor)
                ),
                metadata=self.writer,
                timeout=CALL_TIMEOUT_SECONDS,
            )
        return account_id

    def transfer(self, source: str, target: str, minor: int, **fields: Any) -> Any:
        return self.commands.TransferFunds(
            c.TransferFundsRequest(
                request_id=fields.pop("request_id", new_id()),
                from_account_id=source,
                to_account_id=target,
                amount=eur(minor),
                **fields,
            ),
            metadata=self.writer,
            timeout=CALL_TIMEOUT_SECONDS,
        )

    def events(self, caller: Metadata | None = None, **fields: Any) -> Any:
        return self.queries.ListEvents(
            q.ListEventsRequest(**fields), metadata=caller or self.writer, timeout=READ_WAIT_SECONDS
        )

    def entry(self, entry_id: str, position: int, caller: Metadata | None = None) -> Any:
        return self.queries.GetEntry(
            q.GetEntryRequest(entry_id=entry_id, min_position=position),
            metadata=caller or self.writer,
            timeout=READ_WAIT_SECONDS,
        )

    def stored(self, after_position: int) -> list[StoredEvent]:
        return stored_events(self.dsn, after_position=after_position)

    def head(self) -> int:
        events = stored_events(self.dsn)
        return events[-1].position if events else 0


@pytest.fixture(scope="module")
def ledger(
    pg_dsn: str,
    kafka_bootstrap: str,
    es_url: str,
    es_client: Elasticsearch,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Ledger]:
    with secured_pipeline(
        pg_dsn, kafka_bootstrap, es_url, es_client, tmp_path_factory, "eventlog"
    ) as running:
        writer = running.tokens.caller(
            scopes.ACCOUNTS_WRITE, scopes.FUNDS_WRITE, scopes.JOURNAL_WRITE, scopes.LEDGER_READ
        )
        yield Ledger(running.commands, running.queries, running.tokens, running.dsn, writer)


def positions(response: Any) -> list[int]:
    return [event.position for event in response.events]


def timestamp_of(moment: Any) -> timestamp_pb2.Timestamp:
    message = timestamp_pb2.Timestamp()
    message.FromDatetime(moment)
    return message


def test_every_filter_narrows_to_exactly_the_events_it_names(ledger: Ledger) -> None:
    start = ledger.head() + 1
    a, b = ledger.open(1_000), ledger.open(0)
    word = f"invoice{uuid.uuid4().hex}"
    request_id = new_id()
    transfer = ledger.transfer(
        a, b, 250, description=f"for {word}", metadata={"order": "O-1"}, request_id=request_id
    )
    last = ledger.transfer(b, a, 50)
    stored = ledger.stored(start - 1)
    window = {"from_position": start, "to_position": last.position}

    def listed(**fields: Any) -> list[int]:
        return positions(ledger.events(min_position=last.position, order=2, **{**window, **fields}))

    def expect(keep: Any) -> list[int]:
        return [e.position for e in stored if e.position <= last.position and keep(e)]

    everything = ledger.events(min_position=last.position, order=2, **window)
    assert positions(everything) == expect(lambda e: True)
    for event, want in zip(everything.events, stored, strict=False):
        assert (event.event_id, event.event_type) == (want.event_id, want.event_type)
        assert (event.stream_id, event.stream_version) == (want.stream_id, want.stream_version)
        assert event.schema_version == want.schema_version
        assert event.recorded_at.ToDatetime(tzinfo=UTC) == want.recorded_at
        assert dict(event.metadata) == want.metadata
        assert json.loads(event.payload_json)
        assert event.chain_hash == "" or len(event.chain_hash) == 64
    transferred = [e for e in everything.events if e.event_type == "FundsTransferred"]
    line = json.loads(transferred[0].payload_json)["line"]
    assert line["description"] == f"for {word}" and line["metadata"] == {"order": "O-1"}

    assert listed(event_types=["FundsTransferred"]) == expect(
        lambda e: e.event_type == "FundsTransferred"
    )
    assert listed(event_types=["AccountOpened", "FundsDeposited"]) == expect(
        lambda e: e.event_type in ("AccountOpened", "FundsDeposited")
    )
    assert listed(account_id=b.upper()) == expect(lambda e: e.stream_id == b)
    entry = expect(lambda e: e.metadata.get("request_id") == request_id)
    assert len(entry) == 2
    assert listed(entry_id=transfer.entry_id) == entry
    assert listed(request_id=request_id) == entry
    assert listed(text=word) == entry
    assert listed(text=f"{word} O-1") == entry
    assert listed(text=f"{word} nowhere") == []
    principal = stored[0].metadata["principal"]
    assert listed(principal=principal) == expect(lambda e: e.metadata.get("principal") == principal)
    assert listed(principal="someone else") == []
    assert listed(from_position=entry[0], to_position=entry[1]) == entry
    second = stored[1].recorded_at
    in_time = expect(lambda e: second <= e.recorded_at < second + timedelta(microseconds=1))
    assert (
        in_time
        and listed(
            start_time=timestamp_of(second),
            end_time=timestamp_of(second + timedelta(microseconds=1)),
        )
        == in_time
    )
    # Descending is the default order.
    newest_first = ledger.events(min_position=last.position, **window)
    assert positions(newest_first) == expect(lambda e: True)[::-1]
    assert newest_first.as_of_position >= last.position


def test_a_tail_from_a_position_sees_every_event_once_while_a_writer_runs(
    ledger: Ledger,
) -> None:
    a, b = ledger.open(100_000), ledger.open(0)
    start = ledger.head() + 1
    done = threading.Event()
    failures: list[BaseException] = []
    last_position = [0]

    def write() -> None:
        try:
            for i in range(TAIL_TRANSFERS):
                last_position[0] = ledger.transfer(a, b, 1 + i).position
        except BaseException as error:  # reported by the test below
            failures.append(error)
        finally:
            done.set()

    writer = threading.Thread(target=write, name="tail-writer")
    writer.start()
    seen: list[int] = []
    next_position, token, pages = start, "", 0
    while True:
        response = ledger.events(
            from_position=next_position, order=2, page_size=TAIL_PAGE_SIZE, page_token=token
        )
        pages += 1
        seen.extend(positions(response))
        token = response.next_page_token
        if token:
            continue
        # The last page so far: continue from after what was seen, as a tailing client.
        if seen:
            next_position = seen[-1] + 1
        if not response.events:
            if done.is_set() and response.as_of_position >= last_position[0]:
                break
            time.sleep(TAIL_IDLE_SECONDS)
        assert pages < 10_000, "the tail never caught up"
    writer.join()
    assert failures == []
    expected = [e.position for e in ledger.stored(start - 1) if e.position <= last_position[0]]
    assert len(expected) == 2 * TAIL_TRANSFERS
    assert seen == expected


def violations_of(error: grpc.RpcError) -> tuple[grpc.StatusCode, str, list[str]]:
    status = rpc_status.from_call(error)
    assert status is not None
    reason, fields = details_of(status)
    return error.code(), reason, fields


def refused_events(ledger: Ledger, **fields: Any) -> tuple[grpc.StatusCode, str, list[str]]:
    with pytest.raises(grpc.RpcError) as caught:
        ledger.events(**fields)
    return violations_of(caught.value)


def test_bad_filters_and_page_tokens_are_invalid_arguments_with_field_violations(
    ledger: Ledger,
) -> None:
    invalid = grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED"
    assert refused_events(
        ledger,
        event_types=["FundsTransferred", "NoSuchEvent"],
        account_id="not-an-account",
        entry_id="x",
        pending_id="y",
        request_id="r" * 129,
        principal="p\x00",
        from_position=-1,
        to_position=-2,
        text="t" * 201,
        order=7,
        page_size=501,
        min_position=-1,
    ) == (
        *invalid,
        [
            "event_types",
            "account_id",
            "entry_id",
            "pending_id",
            "request_id",
            "principal",
            "from_position",
            "to_position",
            "text",
            "order",
            "page_size",
            "min_position",
        ],
    )
    later, earlier = timestamp_pb2.Timestamp(seconds=2_000), timestamp_pb2.Timestamp(seconds=1_000)
    assert refused_events(ledger, start_time=later, end_time=earlier) == (*invalid, ["end_time"])
    assert refused_events(ledger, from_position=9, to_position=3) == (*invalid, ["to_position"])
    assert refused_events(ledger, event_types=["FundsDeposited"] * 21) == (
        *invalid,
        ["event_types"],
    )

    a, b = ledger.open(1_000), ledger.open(0)
    for minor in (1, 2, 3):
        paid = ledger.transfer(a, b, minor)
    first = ledger.events(account_id=a, page_size=2, min_position=paid.position)
    assert first.next_page_token
    second = ledger.events(account_id=a, page_size=2, page_token=first.next_page_token)
    assert positions(second)[0] < positions(first)[-1]
    tokens = {
        "another query's": first.next_page_token,
        "junk": "AAAA",
        "another method's": encode_page_token(
            "ListTransactions", {"account_id": a, "start": None, "end": None}, [5]
        ),
    }
    for name, token in tokens.items():
        assert refused_events(ledger, account_id=b, page_size=2, page_token=token) == (
            *invalid,
            ["page_token"],
        ), name


def test_get_entry_of_a_transfer_a_reversal_and_a_hold_capture(ledger: Ledger) -> None:
    a, b = ledger.open(1_000), ledger.open(0)
    transfer = ledger.transfer(a, b, 300, description="rent", metadata={"case": "C-9"})
    answer = ledger.entry(transfer.entry_id, transfer.position)
    assert answer.entry_id == transfer.entry_id
    assert answer.kind == ledger_pb2.ENTRY_KIND_TRANSFER
    assert (answer.description, dict(answer.metadata)) == ("rent", {"case": "C-9"})
    assert answer.state == q.ENTRY_STATE_POSTED and not answer.reversed_by_entry_id
    assert [
        (line.account_id, line.side, line.amount.minor_units, line.balance_after.minor_units)
        for line in answer.lines
    ] == [(a, ledger_pb2.SIDE_DEBIT, 300, 700), (b, ledger_pb2.SIDE_CREDIT, 300, 300)]
    assert [event.event_id for event in answer.events] == list(transfer.event_ids)
    assert {event.event_type for event in answer.events} == {"FundsTransferred"}
    assert not answer.HasField("hold")
    assert answer.as_of_position >= transfer.position

    reversal = ledger.commands.ReverseEntry(
        c.ReverseEntryRequest(request_id=new_id(), entry_id=transfer.entry_id, reason="oops"),
        metadata=ledger.writer,
        timeout=CALL_TIMEOUT_SECONDS,
    )
    reversed_entry = ledger.entry(transfer.entry_id, reversal.position)
    assert reversed_entry.state == q.ENTRY_STATE_REVERSED
    assert reversed_entry.reversed_by_entry_id == reversal.entry_id
    mirror = ledger.entry(reversal.entry_id, reversal.position)
    assert mirror.kind == ledger_pb2.ENTRY_KIND_REVERSAL
    assert mirror.reverses_entry_id == transfer.entry_id
    assert mirror.state == q.ENTRY_STATE_POSTED
    assert {(line.account_id, line.balance_after.minor_units) for line in mirror.lines} == {
        (a, 1_000),
        (b, 0),
    }
    assert {event.event_type for event in mirror.events} == {"EntryReversed"}

    placed = ledger.commands.CreatePendingTransfer(
        c.CreatePendingTransferRequest(
            request_id=new_id(), from_account_id=a, to_account_id=b, amount=eur(400)
        ),
        metadata=ledger.writer,
        timeout=CALL_TIMEOUT_SECONDS,
    )
    captured = ledger.commands.PostPendingTransfer(
        c.PostPendingTransferRequest(
            request_id=new_id(), pending_id=placed.pending_id, amount=eur(150)
        ),
        metadata=ledger.writer,
        timeout=CALL_TIMEOUT_SECONDS,
    )
    capture = ledger.entry(captured.entry_id, captured.position)
    assert capture.kind == ledger_pb2.ENTRY_KIND_PENDING_TRANSFER
    assert capture.hold.pending_id == placed.pending_id
    assert capture.hold.state == q.PENDING_TRANSFER_STATE_POSTED
    assert (capture.hold.amount.minor_units, capture.hold.posted.minor_units) == (400, 150)
    assert [(line.account_id, line.amount.minor_units) for line in capture.lines] == [
        (a, 150),
        (b, 150),
    ]
    assert {event.event_type for event in capture.events} == {"PendingTransferPosted"}
    hold_events = ledger.events(pending_id=placed.pending_id, order=2)
    assert [event.event_type for event in hold_events.events] == [
        "PendingTransferCreated",
        "PendingTransferCreated",
        "PendingTransferPosted",
        "PendingTransferPosted",
    ]


def test_get_entry_refusals(ledger: Ledger) -> None:
    unknown = new_id()
    with pytest.raises(grpc.RpcError) as caught:
        ledger.entry(unknown, 0)
    code, reason, metadata, message = refusal_of(caught.value)
    assert (code, reason, metadata) == (
        grpc.StatusCode.NOT_FOUND,
        "ENTRY_NOT_FOUND",
        {"entry_id": unknown},
    )
    assert "does not exist" in message
    with pytest.raises(grpc.RpcError) as caught:
        ledger.queries.GetEntry(
            q.GetEntryRequest(entry_id="nope", min_position=-3),
            metadata=ledger.writer,
            timeout=CALL_TIMEOUT_SECONDS,
        )
    assert violations_of(caught.value) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "VALIDATION_FAILED",
        ["entry_id", "min_position"],
    )


def test_a_restricted_token_reads_only_its_own_accounts_part(ledger: Ledger) -> None:
    mine, other, third = ledger.open(1_000), ledger.open(1_000), ledger.open(0)
    touching = ledger.transfer(other, mine, 100)
    elsewhere = ledger.transfer(other, third, 100)
    customer = ledger.tokens.caller(scopes.LEDGER_READ, accounts=(mine,))
    for fields in ({}, {"account_id": other}):
        with pytest.raises(grpc.RpcError) as caught:
            ledger.events(customer, **fields)
        assert refusal_of(caught.value)[:2] == (
            grpc.StatusCode.PERMISSION_DENIED,
            "PERMISSION_DENIED",
        )
    own = ledger.events(customer, account_id=mine, min_position=elsewhere.position)
    assert own.events and {event.stream_id for event in own.events} == {mine}

    seen = ledger.entry(touching.entry_id, touching.position, customer)
    assert [(line.account_id, line.HasField("balance_after")) for line in seen.lines] == [
        (other, False),
        (mine, True),
    ]
    assert [event.stream_id for event in seen.events] == [mine]
    with pytest.raises(grpc.RpcError) as caught:
        ledger.entry(elsewhere.entry_id, elsewhere.position, customer)
    assert refusal_of(caught.value)[:2] == (grpc.StatusCode.NOT_FOUND, "ENTRY_NOT_FOUND")

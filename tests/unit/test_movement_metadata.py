"""Metadata on money movements without servers: validation, fingerprint, the line
events, the stored payload, the statement line document and its query filter."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from chronos.domain import limits
from chronos.domain.accounts import Account
from chronos.domain.commands import (
    Command,
    Deposit,
    JournalLine,
    Money,
    PostJournalEntry,
    Side,
    TransferFunds,
    Withdraw,
)
from chronos.domain.errors import Reason, Rejection
from chronos.domain.events import LinePosted
from chronos.domain.ledger import accounts_touched, decide
from chronos.domain.validation import fingerprint, metadata_violations, validate
from chronos.event_store import mapper
from chronos.read_model.documents import EventRecord, transaction_source
from chronos.v1 import commands_pb2, queries_pb2
from command_server.requests import (
    deposit_from_proto,
    journal_from_proto,
    transfer_from_proto,
    withdraw_from_proto,
)
from query_server import requests
from query_server.mapping import line_to_proto
from tests.unit.test_batch_decisions import account

A = "00000000-0000-4000-8000-00000000000a"
B = "00000000-0000-4000-8000-00000000000b"
ORDER = (("order_id", "A-17"),)


def eur(minor: int) -> Money:
    return Money(currency="EUR", minor_units=minor)


def active(account_id: str, balance_minor: int) -> Account:
    return account(account_id, balance_minor, version=1)


MOVEMENTS: list[Command] = [
    Deposit(request_id="r", account_id=A, amount=eur(100), metadata=ORDER),
    Withdraw(request_id="r", account_id=A, amount=eur(100), metadata=ORDER),
    TransferFunds(
        request_id="r", from_account_id=A, to_account_id=B, amount=eur(100), metadata=ORDER
    ),
    PostJournalEntry(
        request_id="r",
        lines=(
            JournalLine(account_id=A, amount=eur(100), side=Side.DEBIT),
            JournalLine(account_id=B, amount=eur(100), side=Side.CREDIT),
        ),
        metadata=ORDER,
    ),
]


@pytest.mark.parametrize("command", MOVEMENTS, ids=lambda c: type(c).__name__)
def test_every_line_of_a_movement_carries_its_metadata(command: Any) -> None:
    ids = iter(f"00000000-0000-4000-8000-{n:012d}" for n in range(1, 10))
    accounts: dict[str, Account | None] = {A: active(A, 1_000), B: active(B, 0)}
    for account_id in accounts_touched(command):  # the system account opens on first use
        accounts.setdefault(account_id, None)
    decision = decide(command, accounts, lambda: next(ids))
    lines = [event for event in decision.events if isinstance(event, LinePosted)]
    assert len(lines) == 2
    assert all(line.metadata == ORDER for line in lines)


@pytest.mark.parametrize("command", MOVEMENTS, ids=lambda c: type(c).__name__)
def test_movement_metadata_has_the_limits_of_account_metadata(command: Any) -> None:
    too_many = tuple((f"k{i}", "v") for i in range(limits.METADATA_ENTRIES_MAX + 1))
    bad = (("", "v"), ("k", "x" * (limits.METADATA_VALUE_LENGTH_MAX + 1)), ("a\x00", "v"))
    for metadata in (too_many, bad):
        with pytest.raises(Rejection) as caught:
            validate(_with(command, metadata))
        assert caught.value.reason is Reason.VALIDATION_FAILED
        expected = [(v.field, v.description) for v in metadata_violations(metadata)]
        assert [(v.field, v.description) for v in caught.value.violations] == expected


def _with(command: Any, metadata: tuple[tuple[str, str], ...]) -> Any:
    return replace(command, metadata=metadata)


def test_metadata_is_part_of_the_fingerprint_and_empty_metadata_keeps_the_old_one() -> None:
    plain = Deposit(request_id="r", account_id=A, amount=eur(100))
    tagged = _with(plain, ORDER)
    other = _with(plain, (("order_id", "A-18"),))
    assert len({fingerprint(plain), fingerprint(tagged), fingerprint(other)}) == 3
    # The fingerprint a deposit had before movements had metadata (a stored record's).
    before = "Deposit(request_id='r', account_id='" + A + "', amount=Money(currency='EUR', "
    before += "minor_units=100), description='')"
    assert fingerprint(plain) == hashlib.sha256(before.encode()).digest()


def test_the_requests_read_their_metadata_sorted() -> None:
    metadata = {"b": "2", "a": "1"}
    expected = (("a", "1"), ("b", "2"))
    assert deposit_from_proto(commands_pb2.DepositRequest(metadata=metadata)).metadata == expected
    assert withdraw_from_proto(commands_pb2.WithdrawRequest(metadata=metadata)).metadata == expected
    transfer = commands_pb2.TransferFundsRequest(metadata=metadata)
    assert transfer_from_proto(transfer).metadata == expected
    journal = commands_pb2.PostJournalEntryRequest(metadata=metadata)
    assert journal_from_proto(journal).metadata == expected


def test_line_metadata_survives_the_stored_payload_and_reaches_the_statement_line() -> None:
    ids = iter(f"00000000-0000-4000-8000-{n:012d}" for n in range(1, 10))
    command = MOVEMENTS[2]
    decision = decide(command, {A: active(A, 1_000), B: active(B, 0)}, lambda: next(ids))
    line = decision.events[0]
    event_type, version, payload = mapper.encode(line)
    decoded = mapper.decode(event_type, version, payload)
    assert decoded == line
    source = transaction_source(
        EventRecord(
            event_id=str(uuid.uuid4()),
            stream_id=A,
            stream_version=2,
            position=5,
            recorded_at=datetime(2026, 3, 1, tzinfo=UTC),
            event=decoded,
        )
    )
    assert source is not None and source["metadata"] == {"order_id": "A-17"}
    assert dict(line_to_proto(source).metadata) == {"order_id": "A-17"}


def test_a_line_without_metadata_has_none_in_its_document() -> None:
    ids = iter(f"00000000-0000-4000-8000-{n:012d}" for n in range(1, 10))
    plain = TransferFunds(request_id="r", from_account_id=A, to_account_id=B, amount=eur(1))
    decision = decide(plain, {A: active(A, 1_000), B: active(B, 0)}, lambda: next(ids))
    record = EventRecord(
        event_id=str(uuid.uuid4()),
        stream_id=A,
        stream_version=2,
        position=5,
        recorded_at=datetime(2026, 3, 1, tzinfo=UTC),
        event=decision.events[0],
    )
    source = transaction_source(record)
    assert source is not None and "metadata" not in source
    assert dict(line_to_proto(source).metadata) == {}


def test_a_statement_filter_is_read_checked_and_bound_to_its_page_token() -> None:
    request = queries_pb2.ListTransactionsRequest(account_id=A, metadata={"order_id": "A-17"})
    query = requests.transactions_query(request)
    assert query.metadata == ORDER
    token = query.next_page_token(42)
    follow = queries_pb2.ListTransactionsRequest(
        account_id=A, metadata={"order_id": "A-17"}, page_token=token
    )
    assert requests.transactions_query(follow).search_after == [42]
    other = queries_pb2.ListTransactionsRequest(
        account_id=A, metadata={"order_id": "A-18"}, page_token=token
    )
    with pytest.raises(Rejection) as caught:
        requests.transactions_query(other)
    assert [v.field for v in caught.value.violations] == ["page_token"]
    bad = queries_pb2.ListTransactionsRequest(account_id=A, metadata={"": "x"})
    with pytest.raises(Rejection) as caught:
        requests.transactions_query(bad)
    assert caught.value.reason is Reason.VALIDATION_FAILED


def test_a_token_without_a_filter_is_bound_as_before() -> None:
    query = requests.transactions_query(queries_pb2.ListTransactionsRequest(account_id=A))
    # The same token as before filters existed: it is bound to the same values.
    assert query.next_page_token(42) == requests.TransactionsQuery(
        account_id=A, start=None, end=None, page_size=50, search_after=None, min_position=0
    ).next_page_token(42)

"""Metadata on the hold commands without servers: the requests, validation, the
fingerprint, the events (the command's own metadata and the hold's), the stored
payloads, the statement lines, the hold documents and ListPendingTransfers' filter."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from chronos.domain import limits
from chronos.domain.accounts import Account
from chronos.domain.commands import (
    CreatePendingTransfer,
    ExpirePendingTransfer,
    Money,
    PostPendingTransfer,
    VoidPendingTransfer,
)
from chronos.domain.errors import Reason, Rejection
from chronos.domain.events import DomainEvent, HoldLine, PendingTransferPosted
from chronos.domain.holds import HoldDecision, PendingTransfer, decide_hold
from chronos.domain.validation import fingerprint, metadata_violations, validate
from chronos.event_store import mapper
from chronos.read_model.documents import EventRecord, transaction_source
from chronos.read_model.hold_documents import hold_document
from chronos.read_model.queries import metadata_filters
from chronos.v1 import commands_pb2, queries_pb2
from command_server.holds import create_from_proto, post_from_proto, void_from_proto
from query_server import requests
from query_server.mapping import line_to_proto, pending_to_proto
from tests.unit.test_batch_decisions import account

A = "00000000-0000-4000-8000-00000000000a"
B = "00000000-0000-4000-8000-00000000000b"
HOLD = "00000000-0000-4000-8000-000000000001"
ORDER = (("order_id", "A-17"),)
CAPTURE = (("capture_id", "C-1"),)
NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def eur(minor: int) -> Money:
    return Money(currency="EUR", minor_units=minor)


def accounts() -> dict[str, Account | None]:
    return {A: account(A, 1_000, version=1), B: account(B, 0, version=1)}


def ids() -> Any:
    numbers = iter(range(1, 100))
    return lambda: f"00000000-0000-4000-8000-{next(numbers):012d}"


CREATE = CreatePendingTransfer(
    request_id="r",
    from_account_id=A,
    to_account_id=B,
    amount=eur(300),
    timeout_seconds=60,
    metadata=ORDER,
)
POST = PostPendingTransfer(
    request_id="r", pending_id=HOLD, from_account_id=A, to_account_id=B, metadata=CAPTURE
)
VOID = VoidPendingTransfer(
    request_id="r", pending_id=HOLD, from_account_id=A, to_account_id=B, metadata=CAPTURE
)


def placed() -> HoldDecision:
    return decide_hold(CREATE, accounts(), {}, ids(), NOW)


def record(event: DomainEvent) -> EventRecord:
    return EventRecord(
        event_id=str(uuid.uuid4()),
        stream_id=A,
        stream_version=3,
        position=7,
        recorded_at=NOW,
        event=event,
    )


def test_the_hold_requests_read_their_metadata_sorted() -> None:
    metadata = {"b": "2", "a": "1"}
    expected = (("a", "1"), ("b", "2"))
    create = commands_pb2.CreatePendingTransferRequest(metadata=metadata)
    assert create_from_proto(create).metadata == expected
    post = commands_pb2.PostPendingTransferRequest(metadata=metadata)
    assert post_from_proto(post).metadata == expected
    void = commands_pb2.VoidPendingTransferRequest(metadata=metadata)
    assert void_from_proto(void).metadata == expected


@pytest.mark.parametrize("command", [CREATE, POST, VOID], ids=lambda c: type(c).__name__)
def test_hold_metadata_is_part_of_the_fingerprint(command: Any) -> None:
    plain = replace(command, metadata=())
    other = replace(command, metadata=(("order_id", "A-18"),))
    assert len({fingerprint(plain), fingerprint(command), fingerprint(other)}) == 3
    # Without metadata, the fingerprint a request had before holds had metadata (a
    # stored record's), so a retry sent across the upgrade still replays.
    before = repr(plain).removesuffix(", metadata=())") + ")"
    assert fingerprint(plain) == hashlib.sha256(before.encode()).digest()


@pytest.mark.parametrize("command", [CREATE, POST, VOID], ids=lambda c: type(c).__name__)
def test_hold_metadata_has_the_limits_of_every_movements(command: Any) -> None:
    too_many = tuple((f"k{i}", "v") for i in range(limits.METADATA_ENTRIES_MAX + 1))
    bad = (("", "v"), ("k", "x" * (limits.METADATA_VALUE_LENGTH_MAX + 1)), ("a\x00", "v"))
    for metadata in (too_many, bad):
        with pytest.raises(Rejection) as caught:
            validate(replace(command, metadata=metadata))
        assert caught.value.reason is Reason.VALIDATION_FAILED
        expected = [(v.field, v.description) for v in metadata_violations(metadata)]
        assert [(v.field, v.description) for v in caught.value.violations] == expected


def test_a_hold_keeps_its_create_metadata_and_each_line_carries_its_commands() -> None:
    created = placed()
    assert created.hold.metadata == ORDER
    for event in created.decision.events:
        assert isinstance(event, HoldLine)
        assert (event.metadata, event.hold_metadata) == (ORDER, ORDER)
    holds: dict[str, PendingTransfer | None] = {created.hold.pending_id: created.hold}
    pending_id = created.hold.pending_id
    for command in (replace(POST, pending_id=pending_id), replace(VOID, pending_id=pending_id)):
        changed = decide_hold(command, accounts(), holds, ids(), NOW)
        assert changed.hold.metadata == ORDER
        for event in changed.decision.events:
            assert isinstance(event, HoldLine | PendingTransferPosted)
            assert (event.metadata, event.hold_metadata) == (CAPTURE, ORDER)
    expire = ExpirePendingTransfer(
        request_id="x", pending_id=pending_id, from_account_id=A, to_account_id=B
    )
    expired = decide_hold(expire, accounts(), holds, ids(), NOW + timedelta(seconds=61))
    for event in expired.decision.events:
        assert isinstance(event, HoldLine)
        # The ledger's own act carries no request metadata; the hold's stays.
        assert (event.metadata, event.hold_metadata) == ((), ORDER)


def test_hold_metadata_survives_the_payloads_and_reaches_the_documents() -> None:
    created = placed()
    holds: dict[str, PendingTransfer | None] = {created.hold.pending_id: created.hold}
    post = replace(POST, pending_id=created.hold.pending_id)
    posted = decide_hold(post, accounts(), holds, ids(), NOW)
    for event in (*created.decision.events, *posted.decision.events):
        event_type, version, payload = mapper.encode(event)
        assert mapper.decode(event_type, version, payload) == event
    placed_line, posted_line = created.decision.events[0], posted.decision.events[0]
    for event, line_metadata in ((placed_line, ORDER), (posted_line, CAPTURE)):
        source = transaction_source(record(event))
        assert source is not None
        assert dict(line_to_proto(source).metadata) == dict(line_metadata)
        hold = hold_document(record(event))
        assert hold is not None
        # The hold document keeps its create's metadata whichever event wrote it.
        assert hold[2]["metadata"] == dict(ORDER)
        assert dict(pending_to_proto(hold[2]).metadata) == dict(ORDER)


def test_a_hold_without_metadata_has_none_in_its_documents() -> None:
    created = decide_hold(replace(CREATE, metadata=()), accounts(), {}, ids(), NOW)
    event = created.decision.events[0]
    source = transaction_source(record(event))
    hold = hold_document(record(event))
    assert source is not None and "metadata" not in source
    assert hold is not None and "metadata" not in hold[2]
    assert dict(pending_to_proto(hold[2]).metadata) == {}


def test_a_pending_filter_is_read_checked_and_bound_to_its_page_token() -> None:
    request = queries_pb2.ListPendingTransfersRequest(account_id=A, metadata={"order_id": "A-17"})
    query = requests.pending_query(request)
    assert query.metadata == ORDER
    token = query.next_page_token([5, HOLD])
    follow = queries_pb2.ListPendingTransfersRequest(
        account_id=A, metadata={"order_id": "A-17"}, page_token=token
    )
    assert requests.pending_query(follow).search_after == [5, HOLD]
    for metadata in ({"order_id": "A-18"}, {}):
        other = queries_pb2.ListPendingTransfersRequest(
            account_id=A, metadata=metadata, page_token=token
        )
        with pytest.raises(Rejection) as caught:
            requests.pending_query(other)
        assert [v.field for v in caught.value.violations] == ["page_token"]
    bad = queries_pb2.ListPendingTransfersRequest(account_id=A, metadata={"": "x"})
    with pytest.raises(Rejection) as caught:
        requests.pending_query(bad)
    assert caught.value.reason is Reason.VALIDATION_FAILED
    assert metadata_filters(ORDER) == [{"term": {"metadata.order_id": "A-17"}}]


def test_a_pending_token_without_a_filter_is_bound_as_before() -> None:
    query = requests.pending_query(queries_pb2.ListPendingTransfersRequest(account_id=A))
    assert query.next_page_token([5, HOLD]) == requests.PendingQuery(
        account_id=A, state=None, page_size=50, search_after=None, min_position=0
    ).next_page_token([5, HOLD])

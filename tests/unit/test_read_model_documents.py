"""Read-side documents built from events (pure), and the query server's page tokens."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from chronos.domain.commands import Side
from chronos.domain.events import (
    AccountClosed,
    AccountFrozen,
    AccountKind,
    AccountOpened,
    AccountUnfrozen,
    DomainEvent,
    FundsDeposited,
    FundsTransferred,
    FundsWithdrawn,
    JournalEntryPosted,
)
from chronos.event_store import mapper
from chronos.read_model.documents import (
    AccountDocument,
    EventRecord,
    Outcome,
    apply_event,
    fold_batch,
    format_time,
    parse_time,
    record_from_envelope,
    record_from_stored,
    transaction_source,
)
from query_server.page_tokens import InvalidPageToken, decode_page_token, encode_page_token

ACCOUNT = "0b5f6f0e-1111-4c3a-9a57-0c7d3c1a0001"
OTHER = "0b5f6f0e-2222-4c3a-9a57-0c7d3c1a0002"
T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def record(
    event: DomainEvent, version: int, position: int, stream_id: str = ACCOUNT
) -> EventRecord:
    return EventRecord(
        event_id=str(uuid.uuid5(uuid.NAMESPACE_OID, f"{stream_id}/{version}")),
        stream_id=stream_id,
        stream_version=version,
        position=position,
        recorded_at=T0 + timedelta(seconds=position),
        event=event,
    )


def opened(account_id: str = ACCOUNT) -> AccountOpened:
    return AccountOpened(
        account_id=account_id,
        owner_name="Ada Lovelace",
        currency="EUR",
        overdraft_limit_minor=500,
        kind=AccountKind.USER,
        metadata=(("segment", "retail"),),
    )


def deposit(amount: int, balance_after: int) -> FundsDeposited:
    return FundsDeposited(
        entry_id="e-dep",
        account_id=ACCOUNT,
        side=Side.CREDIT,
        currency="EUR",
        amount_minor=amount,
        balance_after_minor=balance_after,
        counterparty_account_id=OTHER,
        description="salary",
        line_index=1,
    )


def history() -> list[EventRecord]:
    return [
        record(opened(), 1, 10),
        record(deposit(1000, 1000), 2, 12),
        record(
            FundsTransferred(
                entry_id="e-tr",
                account_id=ACCOUNT,
                side=Side.DEBIT,
                currency="EUR",
                amount_minor=300,
                balance_after_minor=700,
                counterparty_account_id=OTHER,
                description="rent",
            ),
            3,
            15,
        ),
        record(AccountFrozen(account_id=ACCOUNT, reason="audit"), 4, 16),
        record(
            JournalEntryPosted(
                entry_id="e-j",
                account_id=ACCOUNT,
                side=Side.CREDIT,
                currency="EUR",
                amount_minor=50,
                balance_after_minor=750,
                line_index=2,
            ),
            5,
            20,
        ),
        record(AccountUnfrozen(account_id=ACCOUNT, reason="done"), 6, 21),
    ]


def fold(records: list[EventRecord]) -> AccountDocument | None:
    document: AccountDocument | None = None
    for item in records:
        document, _ = apply_event(document, item)
    return document


def test_opening_builds_the_full_document() -> None:
    document, outcome = apply_event(None, record(opened(), 1, 10))
    assert outcome is Outcome.APPLIED
    assert document is not None
    assert document.to_source() == {
        "account_id": ACCOUNT,
        "owner_name": "Ada Lovelace",
        "currency": "EUR",
        "balance_minor": 0,
        "overdraft_limit_minor": 500,
        "status": "ACTIVE",
        "kind": "USER",
        "version": 1,
        "last_position": 10,
        "opened_at": "2026-03-01T12:00:10.123456Z",
        "updated_at": "2026-03-01T12:00:10.123456Z",
        "metadata": {"segment": "retail"},
        "pending_debits_minor": 0,
        "pending_credits_minor": 0,
        "available_minor": 0,
    }
    assert AccountDocument.from_source(document.to_source()) == document


def test_lines_and_status_changes_evolve_the_document() -> None:
    records = history()
    document = fold(records[:4])
    assert document is not None
    assert (document.balance_minor, document.status, document.version) == (700, "FROZEN", 4)
    document = fold(records)
    assert document is not None
    assert (document.balance_minor, document.status, document.version) == (750, "ACTIVE", 6)
    assert document.last_position == 21
    assert document.updated_at == format_time(T0 + timedelta(seconds=21))
    assert document.opened_at == format_time(T0 + timedelta(seconds=10))


def test_closing_sets_the_status() -> None:
    records = [
        record(opened(), 1, 1),
        record(AccountClosed(account_id=ACCOUNT, reason="bye"), 2, 2),
    ]
    document = fold(records)
    assert document is not None and document.status == "CLOSED"


def test_duplicates_and_stale_events_change_nothing() -> None:
    records = history()
    document = fold(records)
    assert document is not None
    for item in records:
        again, outcome = apply_event(document, item)
        assert outcome is Outcome.STALE
        assert again is document


def test_an_event_across_a_version_gap_is_not_folded() -> None:
    # Folding it would lose whatever the missing versions changed (a freeze, a line):
    # the later missing version would then be ignored as stale, for good.
    records = history()
    document = fold(records[:2])
    after, outcome = apply_event(document, records[4])
    assert outcome is Outcome.GAP
    assert after is document


def test_an_event_without_its_opening_is_an_orphan() -> None:
    after, outcome = apply_event(None, history()[1])
    assert (after, outcome) == (None, Outcome.ORPHAN)


def test_statement_line_document() -> None:
    item = history()[2]
    assert transaction_source(item) == {
        "event_id": item.event_id,
        "entry_id": "e-tr",
        "account_id": ACCOUNT,
        "counterparty_account_id": OTHER,
        "direction": "DEBIT",
        "amount_minor": 300,
        "currency": "EUR",
        "balance_after_minor": 700,
        "kind": "TRANSFER",
        "description": "rent",
        "recorded_at": "2026-03-01T12:00:15.123456Z",
        "position": 15,
        "stream_version": 3,
        "line_index": 0,
    }
    assert transaction_source(history()[0]) is None
    assert transaction_source(history()[3]) is None
    withdrawn = FundsWithdrawn(
        entry_id="e-w",
        account_id=ACCOUNT,
        side=Side.DEBIT,
        currency="EUR",
        amount_minor=1,
        balance_after_minor=-1,
    )
    source = transaction_source(record(withdrawn, 2, 3))
    assert source is not None and (source["kind"], source["direction"]) == ("WITHDRAWAL", "DEBIT")


def test_fold_batch_is_order_safe_and_keeps_the_last_state() -> None:
    records = history()
    other = record(opened(OTHER), 1, 11, stream_id=OTHER)
    batch = [records[0], other, *records[1:], records[1]]
    documents = fold_batch({ACCOUNT: None, OTHER: None}, batch)
    by_id = {document.account_id: document for document in documents.accounts}
    assert by_id[ACCOUNT].version == 6 and by_id[ACCOUNT].balance_minor == 750
    assert by_id[OTHER].version == 1
    # Lines are emitted for every line event, duplicates included: the index refuses the
    # second copy by id.
    assert [event_id for event_id, _ in documents.transactions].count(records[1].event_id) == 2
    assert documents.outcomes[Outcome.STALE] == 1

    folded = fold_batch({ACCOUNT: by_id[ACCOUNT]}, list(reversed(records)))
    assert folded.accounts == ()
    assert folded.outcomes[Outcome.STALE] == len(records)


def test_kafka_and_event_store_records_are_identical() -> None:
    # The projector decodes envelopes, the rebuild stored events: both must produce the
    # same documents, or the rebuilt indices would differ from the live ones.
    event = history()[2].event
    event_type, schema_version, payload = mapper.encode(event)
    stored = mapper.StoredEvent(
        position=15,
        event_id=str(uuid.uuid4()),
        stream_id=ACCOUNT,
        stream_version=3,
        event_type=event_type,
        schema_version=schema_version,
        payload=payload,
        metadata={"request_id": "r1"},
        # Same instant, another time zone: PostgreSQL sessions may not be in UTC.
        recorded_at=(T0 + timedelta(seconds=15)).astimezone(timezone(timedelta(hours=2))),
    )
    from_store = record_from_stored(stored)
    from_kafka = record_from_envelope(mapper.envelope(stored))
    assert from_store.event == from_kafka.event == event
    assert transaction_source(from_store) == transaction_source(from_kafka)
    assert format_time(from_store.recorded_at) == format_time(from_kafka.recorded_at)
    assert parse_time(format_time(from_store.recorded_at)) == from_kafka.recorded_at


PARAMS = {"account_id": ACCOUNT, "start": None, "end": "2026-03-02T00:00:00Z"}


def test_page_token_round_trip() -> None:
    token = encode_page_token("ListTransactions", PARAMS, [12345])
    assert decode_page_token(token, "ListTransactions", dict(PARAMS)) == [12345]
    token = encode_page_token("SearchAccounts", {"query": "ada"}, [1.2345678, ACCOUNT])
    assert decode_page_token(token, "SearchAccounts", {"query": "ada"}) == [1.2345678, ACCOUNT]


def test_page_token_is_bound_to_the_query() -> None:
    token = encode_page_token("ListTransactions", PARAMS, [12345])
    with pytest.raises(InvalidPageToken, match="different query"):
        decode_page_token(token, "ListTransactions", {**PARAMS, "account_id": OTHER})
    with pytest.raises(InvalidPageToken, match="another method"):
        decode_page_token(token, "SearchAccounts", PARAMS)


@pytest.mark.parametrize(
    ("method", "values"),
    [
        ("ListTransactions", [2**64]),  # JSON cannot carry it to Elasticsearch
        ("ListTransactions", [-1]),
        ("ListTransactions", [True]),
        ("ListTransactions", ["12345"]),
        ("ListTransactions", [1.5]),
        ("ListTransactions", [1, 2]),
        ("SearchAccounts", [float("nan"), ACCOUNT]),
        ("SearchAccounts", [1e39, ACCOUNT]),  # beyond a 32-bit float (_score)
        ("SearchAccounts", ["score", ACCOUNT]),
        ("SearchAccounts", [1.5, "not an id"]),
        ("SearchAccounts", [1.5, ACCOUNT.upper()]),
        ("SearchAccounts", [1.5]),
    ],
)
def test_forged_sort_values_are_rejected(method: str, values: list[object]) -> None:
    # The checksum is no secret: a client can mint a token with any values.
    token = encode_page_token(method, PARAMS, values)
    with pytest.raises(InvalidPageToken, match="is not a page token"):
        decode_page_token(token, method, PARAMS)


@pytest.mark.parametrize("case", ["flip", "garbage", "empty-body", "forged-values", "long"])
def test_tampered_page_tokens_are_rejected(case: str) -> None:
    token = encode_page_token("ListTransactions", PARAMS, [12345])
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    if case == "flip":
        tampered = raw[:-3] + bytes([raw[-3] ^ 0x01]) + raw[-2:]
        bad = base64.urlsafe_b64encode(tampered).decode().rstrip("=")
    elif case == "garbage":
        bad = "not a token!"
    elif case == "empty-body":
        bad = base64.urlsafe_b64encode(raw[:8]).decode()
    elif case == "forged-values":
        bad = base64.urlsafe_b64encode(raw.replace(b"12345", b"99999")).decode().rstrip("=")
    else:
        bad = "A" * 5000
    with pytest.raises(InvalidPageToken):
        decode_page_token(bad, "ListTransactions", PARAMS)

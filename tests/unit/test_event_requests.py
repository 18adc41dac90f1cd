"""ListEvents and GetEntry requests read into queries or refused
(query_server.event_requests), without a server."""

from __future__ import annotations

import pytest
from google.protobuf import timestamp_pb2

from chronos.domain.errors import Reason, Rejection
from chronos.v1 import queries_pb2
from query_server import event_requests

ACCOUNT = "0b5f6f0e-1111-4c3a-9a57-0c7d3c1a0001"


def violations_of(rejection: Rejection) -> list[str]:
    assert rejection.reason is Reason.VALIDATION_FAILED
    return [violation.field for violation in rejection.violations]


def test_an_empty_request_lists_everything_newest_first() -> None:
    query = event_requests.events_query(queries_pb2.ListEventsRequest())
    assert query.event_types == () and query.account_id == "" and query.text == ""
    assert (query.start, query.end) == (None, None)
    assert not query.ascending and query.page_size == 50 and query.search_after is None


def test_filters_are_read_in_canonical_form() -> None:
    query = event_requests.events_query(
        queries_pb2.ListEventsRequest(
            event_types=["FundsTransferred", "AccountOpened", "FundsTransferred"],
            account_id=ACCOUNT.upper(),
            entry_id=ACCOUNT.replace("-", ""),
            text="  rent  ",
            order=queries_pb2.EVENT_ORDER_ASCENDING,
            page_size=500,
            from_position=3,
            to_position=3,
        )
    )
    assert query.event_types == ("AccountOpened", "FundsTransferred")
    assert query.account_id == query.entry_id == ACCOUNT
    assert (query.text, query.ascending, query.page_size) == ("rent", True, 500)


def test_every_bad_field_is_refused_at_once() -> None:
    with pytest.raises(Rejection) as caught:
        event_requests.events_query(
            queries_pb2.ListEventsRequest(
                event_types=["Nope"],
                pending_id="x",
                start_time=timestamp_pb2.Timestamp(seconds=10),
                end_time=timestamp_pb2.Timestamp(seconds=10),
                to_position=-1,
                order=5,
                page_size=-1,
                page_token="junk",
            )
        )
    # The page token is not read while other fields are invalid: it is bound to them.
    assert violations_of(caught.value) == [
        "event_types",
        "pending_id",
        "end_time",
        "to_position",
        "order",
        "page_size",
    ]


def test_a_page_token_continues_only_its_own_listing() -> None:
    request = queries_pb2.ListEventsRequest(account_id=ACCOUNT, event_types=["FundsDeposited"])
    token = event_requests.events_query(request).next_page_token(42)
    request.page_token = token
    assert event_requests.events_query(request).search_after == [42]
    for change in ({"order": queries_pb2.EVENT_ORDER_ASCENDING}, {"text": "rent"}):
        other = queries_pb2.ListEventsRequest(
            account_id=ACCOUNT, event_types=["FundsDeposited"], page_token=token, **change
        )
        with pytest.raises(Rejection) as caught:
            event_requests.events_query(other)
        assert violations_of(caught.value) == ["page_token"]


def test_an_entry_query_needs_a_uuid() -> None:
    query = event_requests.entry_query(queries_pb2.GetEntryRequest(entry_id=ACCOUNT.upper()))
    assert query.entry_id == ACCOUNT
    with pytest.raises(Rejection) as caught:
        event_requests.entry_query(queries_pb2.GetEntryRequest(min_position=-1))
    assert violations_of(caught.value) == ["entry_id", "min_position"]

"""Query requests read into queries or refused (query_server.requests), without a server."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from google.protobuf import timestamp_pb2

from chronos.domain.errors import Reason, Rejection
from chronos.v1 import ledger_pb2, queries_pb2
from query_server import requests
from query_server.page_tokens import encode_page_token

ACCOUNT = "0b5f6f0e-1111-4c3a-9a57-0c7d3c1a0001"


def violations_of(rejection: Rejection) -> list[tuple[str, str]]:
    assert rejection.reason is Reason.VALIDATION_FAILED
    return [(v.field, v.description) for v in rejection.violations]


def timestamp(moment: datetime) -> timestamp_pb2.Timestamp:
    message = timestamp_pb2.Timestamp()
    message.FromDatetime(moment)
    return message


@pytest.mark.parametrize(
    ("currency", "description"),
    [
        ("ZZZ", "'ZZZ' is not an ISO 4217 currency"),
        ("eur", "must be a 3-letter ISO 4217 code, got 'eur'"),
        ("EURO", "must be a 3-letter ISO 4217 code, got 'EURO'"),
        ("ＥＵＲ", "must be a 3-letter ISO 4217 code, got 'ＥＵＲ'"),
    ],
)
def test_a_search_currency_follows_the_ledgers_rule(currency: str, description: str) -> None:
    with pytest.raises(Rejection) as caught:
        requests.account_search(queries_pb2.SearchAccountsRequest(currency=currency))
    assert violations_of(caught.value) == [("currency", description)]


def test_a_search_reads_its_filters_and_defaults() -> None:
    search = requests.account_search(
        queries_pb2.SearchAccountsRequest(
            query="  ada  ", currency="EUR", status=ledger_pb2.ACCOUNT_STATUS_FROZEN
        )
    )
    assert (search.text, search.currency, search.status) == ("ada", "EUR", "FROZEN")
    assert search.page_size == requests.ACCOUNTS_PAGE_SIZE_DEFAULT
    assert search.search_after is None
    assert requests.account_search(queries_pb2.SearchAccountsRequest()).currency is None


def test_violations_come_in_field_order_and_all_at_once() -> None:
    with pytest.raises(Rejection) as caught:
        requests.account_search(
            queries_pb2.SearchAccountsRequest(
                query="x" * (requests.SEARCH_QUERY_LENGTH_MAX + 1),
                status=99,  # type: ignore[arg-type]
                currency="eur",
                page_size=requests.ACCOUNTS_PAGE_SIZE_MAX + 1,
            )
        )
    assert [field for field, _ in violations_of(caught.value)] == [
        "query",
        "status",
        "currency",
        "page_size",
    ]
    assert caught.value.message.startswith("The request is invalid: query: must be at most")


def test_a_page_token_continues_only_the_query_it_was_issued_for() -> None:
    first = requests.transactions_query(
        queries_pb2.ListTransactionsRequest(account_id=ACCOUNT.upper(), page_size=2)
    )
    assert first.account_id == ACCOUNT
    token = first.next_page_token(41)
    after = requests.transactions_query(
        queries_pb2.ListTransactionsRequest(account_id=ACCOUNT, page_size=2, page_token=token)
    )
    assert after.search_after == [41]
    with pytest.raises(Rejection) as caught:
        requests.transactions_query(
            queries_pb2.ListTransactionsRequest(
                account_id=ACCOUNT, start_time=timestamp(datetime(2026, 1, 1)), page_token=token
            )
        )
    assert violations_of(caught.value) == [
        ("page_token", "was issued for different query parameters")
    ]


def test_a_page_token_is_not_read_while_other_fields_are_invalid() -> None:
    token = encode_page_token("SearchAccounts", {"query": "", "status": None}, [1.0, ACCOUNT])
    with pytest.raises(Rejection) as caught:
        requests.account_search(queries_pb2.SearchAccountsRequest(page_size=-1, page_token=token))
    assert violations_of(caught.value) == [("page_size", "must be between 1 and 100")]


def test_a_search_token_round_trips() -> None:
    search = requests.account_search(queries_pb2.SearchAccountsRequest(query="ada"))
    token = search.next_page_token([1.5, ACCOUNT])
    again = requests.account_search(
        queries_pb2.SearchAccountsRequest(query=" ada ", page_token=token)
    )
    assert again.search_after == [1.5, ACCOUNT]


def test_time_bounds_are_clamped_to_what_elasticsearch_takes() -> None:
    query = requests.transactions_query(
        queries_pb2.ListTransactionsRequest(
            account_id=ACCOUNT,
            start_time=timestamp(datetime(1900, 1, 1, tzinfo=UTC)),
            end_time=timestamp(datetime(2026, 1, 1, tzinfo=UTC)),
        )
    )
    assert (query.start, query.end) == ("1970-01-01T00:00:00Z", "2026-01-01T00:00:00Z")


@pytest.mark.parametrize(
    ("request_message", "expected"),
    [
        (queries_pb2.GetAccountRequest(), [("account_id", "is required")]),
        (
            queries_pb2.GetAccountRequest(account_id="nope", min_position=-1),
            [("account_id", "must be a UUID"), ("min_position", "must be zero or positive")],
        ),
    ],
)
def test_an_account_query_needs_a_uuid(
    request_message: queries_pb2.GetAccountRequest, expected: list[tuple[str, str]]
) -> None:
    with pytest.raises(Rejection) as caught:
        requests.account_query(request_message)
    assert violations_of(caught.value) == expected


def test_a_balance_query_needs_its_time() -> None:
    with pytest.raises(Rejection) as caught:
        requests.balance_at_query(queries_pb2.GetBalanceAtRequest(account_id=ACCOUNT))
    assert violations_of(caught.value) == [("at_time", "is required")]
    query = requests.balance_at_query(
        queries_pb2.GetBalanceAtRequest(
            account_id=ACCOUNT, at_time=timestamp(datetime(2026, 1, 1, tzinfo=UTC))
        )
    )
    assert query.at == "2026-01-01T00:00:00Z"

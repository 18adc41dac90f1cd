"""Query requests checked and read into plain values, or refused as a whole.

Each ``*_query`` function reads one request message into a frozen query, or raises
``Rejection`` (VALIDATION_FAILED) listing every invalid field, in the order of the
request's fields. A page token is only decoded when every other field is valid, since
it is bound to them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar

from google.protobuf import timestamp_pb2

from chronos.domain import limits
from chronos.domain.currencies import currency_problem
from chronos.domain.errors import FieldViolation, validation_failed
from chronos.domain.validation import canonical_account_id, metadata_violations
from chronos.v1 import ledger_pb2, queries_pb2
from query_server.mapping import account_status_from_proto
from query_server.page_tokens import InvalidPageToken, decode_page_token, encode_page_token

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

TRANSACTIONS_PAGE_SIZE_DEFAULT = 50
TRANSACTIONS_PAGE_SIZE_MAX = 500
ACCOUNTS_PAGE_SIZE_DEFAULT = 20
ACCOUNTS_PAGE_SIZE_MAX = 100
SEARCH_QUERY_LENGTH_MAX = 200

# The method each page token is bound to.
_TRANSACTIONS_TOKEN = "ListTransactions"
_SEARCH_TOKEN = "SearchAccounts"
_PENDING_TOKEN = "ListPendingTransfers"
PENDING_PAGE_SIZE_DEFAULT = 50
PENDING_PAGE_SIZE_MAX = 500
# The read model's spelling of each state a client can ask for.
_PENDING_STATES = {
    queries_pb2.PENDING_TRANSFER_STATE_PENDING: "PENDING",
    queries_pb2.PENDING_TRANSFER_STATE_POSTED: "POSTED",
    queries_pb2.PENDING_TRANSFER_STATE_VOIDED: "VOIDED",
    queries_pb2.PENDING_TRANSFER_STATE_EXPIRED: "EXPIRED",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountQuery:
    """GetAccount: one account by id."""

    account_id: str
    min_position: int


@dataclass(frozen=True, slots=True, kw_only=True)
class TransactionsQuery:
    """ListTransactions: one page of an account's lines in ``start <= recorded_at < end``."""

    account_id: str
    start: str | None
    end: str | None
    page_size: int
    search_after: list[Any] | None
    min_position: int
    # Only lines whose metadata holds every one of these pairs.
    metadata: tuple[tuple[str, str], ...] = ()

    def next_page_token(self, last_position: int) -> str:
        """The token of the page after the line at ``last_position``."""
        return encode_page_token(_TRANSACTIONS_TOKEN, _transactions_binding(self), [last_position])


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingQuery:
    """ListPendingTransfers: one page of the holds of an account, maybe in one state."""

    account_id: str
    state: str | None
    page_size: int
    search_after: list[Any] | None
    min_position: int
    # Only holds whose metadata holds every one of these pairs.
    metadata: tuple[tuple[str, str], ...] = ()

    def next_page_token(self, last_sort_values: list[Any]) -> str:
        """The token of the page after the hold with these sort values."""
        return encode_page_token(_PENDING_TOKEN, _pending_binding(self), last_sort_values)


@dataclass(frozen=True, slots=True, kw_only=True)
class BalanceAtQuery:
    """GetBalanceAt: an account's balance right after the last line at or before ``at``."""

    account_id: str
    at: str
    min_position: int


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountSearch:
    """SearchAccounts: one page of user accounts matching ``text``, filtered."""

    text: str
    status: str | None
    currency: str | None
    page_size: int
    search_after: list[Any] | None

    def next_page_token(self, last_sort_values: list[Any]) -> str:
        """The token of the page after the hit with ``last_sort_values``."""
        return encode_page_token(_SEARCH_TOKEN, _search_binding(self), last_sort_values)


def account_query(request: queries_pb2.GetAccountRequest) -> AccountQuery:
    """Reads a GetAccount request; raises Rejection (VALIDATION_FAILED)."""
    violations: list[FieldViolation] = []
    account_id = read_account_id(request.account_id, "account_id", violations)
    read_min_position(request.min_position, violations)
    refuse_if_any(violations)
    return AccountQuery(account_id=account_id, min_position=request.min_position)


def transactions_query(request: queries_pb2.ListTransactionsRequest) -> TransactionsQuery:
    """Reads a ListTransactions request; raises Rejection (VALIDATION_FAILED)."""
    violations: list[FieldViolation] = []
    account_id = read_account_id(request.account_id, "account_id", violations)
    start, end = read_time_window(request, violations)
    page_size = read_page_size(
        request.page_size, TRANSACTIONS_PAGE_SIZE_DEFAULT, TRANSACTIONS_PAGE_SIZE_MAX, violations
    )
    read_min_position(request.min_position, violations)
    metadata = _metadata_filter(request.metadata, violations)
    query = TransactionsQuery(
        account_id=account_id,
        start=start,
        end=end,
        page_size=page_size,
        search_after=None,
        min_position=request.min_position,
        metadata=metadata,
    )
    return continued_query(
        query, request.page_token, _TRANSACTIONS_TOKEN, _transactions_binding(query), violations
    )


def balance_at_query(request: queries_pb2.GetBalanceAtRequest) -> BalanceAtQuery:
    """Reads a GetBalanceAt request; raises Rejection (VALIDATION_FAILED)."""
    violations: list[FieldViolation] = []
    account_id = read_account_id(request.account_id, "account_id", violations)
    at = _time(request, "at_time", violations, required=True)
    read_min_position(request.min_position, violations)
    refuse_if_any(violations)
    assert at is not None
    return BalanceAtQuery(account_id=account_id, at=at, min_position=request.min_position)


def account_search(request: queries_pb2.SearchAccountsRequest) -> AccountSearch:
    """Reads a SearchAccounts request; raises Rejection (VALIDATION_FAILED)."""
    violations: list[FieldViolation] = []
    text = request.query.strip()
    if len(text) > SEARCH_QUERY_LENGTH_MAX:
        violations.append(
            FieldViolation("query", f"must be at most {SEARCH_QUERY_LENGTH_MAX} characters")
        )
    status: str | None = None
    if request.status != ledger_pb2.ACCOUNT_STATUS_UNSPECIFIED:
        status = account_status_from_proto(request.status)
        if status is None:
            violations.append(FieldViolation("status", "is not a known status"))
    # Absent (empty) means any currency; a given one follows the ledger's one rule.
    currency = request.currency or None
    if currency is not None and (problem := currency_problem(currency)) is not None:
        violations.append(FieldViolation("currency", problem))
    page_size = read_page_size(
        request.page_size, ACCOUNTS_PAGE_SIZE_DEFAULT, ACCOUNTS_PAGE_SIZE_MAX, violations
    )
    search = AccountSearch(
        text=text, status=status, currency=currency, page_size=page_size, search_after=None
    )
    return continued_query(
        search, request.page_token, _SEARCH_TOKEN, _search_binding(search), violations
    )


def pending_query(request: queries_pb2.ListPendingTransfersRequest) -> PendingQuery:
    """Reads a ListPendingTransfers request; raises Rejection (VALIDATION_FAILED)."""
    violations: list[FieldViolation] = []
    account_id = read_account_id(request.account_id, "account_id", violations)
    state = _PENDING_STATES.get(request.state)
    if state is None and request.state != queries_pb2.PENDING_TRANSFER_STATE_UNSPECIFIED:
        violations.append(FieldViolation("state", "is not a known state"))
    page_size = read_page_size(
        request.page_size, PENDING_PAGE_SIZE_DEFAULT, PENDING_PAGE_SIZE_MAX, violations
    )
    read_min_position(request.min_position, violations)
    query = PendingQuery(
        account_id=account_id,
        state=state,
        page_size=page_size,
        search_after=None,
        min_position=request.min_position,
        metadata=_metadata_filter(request.metadata, violations),
    )
    return continued_query(
        query, request.page_token, _PENDING_TOKEN, _pending_binding(query), violations
    )


def _metadata_filter(
    metadata: Mapping[str, str], violations: list[FieldViolation]
) -> tuple[tuple[str, str], ...]:
    """A request's exact-match metadata filter, checked as movements' metadata is."""
    pairs = tuple(sorted(metadata.items()))
    violations.extend(metadata_violations(pairs))
    return pairs


def _with_metadata(
    binding: dict[str, Any], metadata: tuple[tuple[str, str], ...]
) -> dict[str, Any]:
    """``binding`` bound to the metadata filter too, if there is one: only with a filter,
    so a token issued before filters existed stays valid."""
    if metadata:
        binding["metadata"] = dict(metadata)
    return binding


def _pending_binding(query: PendingQuery) -> dict[str, Any]:
    return _with_metadata({"account_id": query.account_id, "state": query.state}, query.metadata)


def _transactions_binding(query: TransactionsQuery) -> dict[str, Any]:
    binding: dict[str, Any] = {
        "account_id": query.account_id,
        "start": query.start,
        "end": query.end,
    }
    return _with_metadata(binding, query.metadata)


def _search_binding(search: AccountSearch) -> dict[str, Any]:
    return {"query": search.text, "status": search.status, "currency": search.currency}


# Any query dataclass with a ``search_after`` field (query_server.event_requests' too).
_Query = TypeVar("_Query", bound="DataclassInstance")


def continued_query(
    query: _Query,
    token: str,
    method: str,
    binding: dict[str, Any],
    violations: list[FieldViolation],
) -> _Query:
    """``query`` continuing after ``token``'s sort values (if there is a token), or the
    refusal of every violation."""
    search_after = None
    if token and not violations:
        try:
            search_after = decode_page_token(token, method, binding)
        except InvalidPageToken as error:
            violations.append(FieldViolation("page_token", str(error)))
    refuse_if_any(violations)
    return replace(query, search_after=search_after)


def refuse_if_any(violations: list[FieldViolation]) -> None:
    if violations:
        raise validation_failed(violations)


def read_account_id(raw: str, field: str, violations: list[FieldViolation]) -> str:
    if not raw:
        violations.append(FieldViolation(field, "is required"))
        return ""
    canonical = canonical_account_id(raw)
    if canonical is None:
        violations.append(FieldViolation(field, "must be a UUID"))
        return ""
    return canonical


def read_page_size(value: int, default: int, maximum: int, violations: list[FieldViolation]) -> int:
    if value == 0:
        return default
    if not 1 <= value <= maximum:
        violations.append(FieldViolation("page_size", f"must be between 1 and {maximum}"))
    return value


def read_min_position(value: int, violations: list[FieldViolation]) -> None:
    if value < 0:
        violations.append(FieldViolation("min_position", "must be zero or positive"))


def read_time_window(
    request: Any, violations: list[FieldViolation]
) -> tuple[str | None, str | None]:
    """The request's ``start_time`` (inclusive) and ``end_time`` (exclusive) bounds, each
    None when unset; the end must be after the start."""
    start = _time(request, "start_time", violations)
    end = _time(request, "end_time", violations)
    if (
        start is not None
        and end is not None
        and request.end_time.ToNanoseconds() <= request.start_time.ToNanoseconds()
    ):
        violations.append(FieldViolation("end_time", "must be after start_time"))
    return start, end


def _time(
    request: Any, field: str, violations: list[FieldViolation], *, required: bool = False
) -> str | None:
    """The timestamp ``field`` of ``request`` as a bound Elasticsearch takes, or None."""
    if not request.HasField(field):
        if required:
            violations.append(FieldViolation(field, "is required"))
        return None
    message: timestamp_pb2.Timestamp = getattr(request, field)
    try:
        message.ToJsonString()  # refuses what is not a valid timestamp (years 1-9999)
    except ValueError:
        violations.append(FieldViolation(field, "is not a valid timestamp"))
        return None
    # recorded_at is a date_nanos field: signed 64-bit nanoseconds since the epoch, so
    # 1970-01-01 to 2262-04-11. Elasticsearch refuses a bound outside that range, and no
    # line lies outside it, so a bound clamped into it selects the same lines.
    bound = timestamp_pb2.Timestamp()
    bound.FromNanoseconds(min(max(message.ToNanoseconds(), 0), limits.INT64_MAX))
    return str(bound.ToJsonString())

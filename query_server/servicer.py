"""``chronos.v1.QueryService``: reads served from the Elasticsearch projection.

Consistency: every answer carries ``as_of_position``, the projection's visible position
read *before* the data (so the data reflects at least every event up to it). A request
with ``min_position`` > 0 first waits until the visible position reaches it, bounded by
the call's deadline and ``min_position_wait_seconds_max``; if it cannot, the call fails
with UNAVAILABLE / ``PROJECTION_BEHIND`` and the client may retry.

Errors: malformed requests get INVALID_ARGUMENT / ``VALIDATION_FAILED`` with one
``BadRequest`` violation per field; unknown accounts NOT_FOUND / ``ACCOUNT_NOT_FOUND``;
any Elasticsearch failure UNAVAILABLE / ``READ_MODEL_UNAVAILABLE`` (never INTERNAL).

Protobuf ↔ read-model mapping happens only here, in the ``*_to_proto`` functions.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import grpc
from elasticsearch import ApiError, AsyncElasticsearch, TransportError
from google.protobuf import timestamp_pb2

from chronos.domain import limits
from chronos.domain.errors import FieldViolation, Reason
from chronos.domain.events import AccountKind, EntryKind
from chronos.domain.ledger import AccountStatus
from chronos.domain.validation import canonical_account_id
from chronos.errors import ChronosError
from chronos.read_model import ReadModelError, ReadModelUnavailable
from chronos.read_model.indices import IndexNames, found_documents, translate
from chronos.read_model.watermark import AsyncWatermarkReader
from chronos.rpc import abort, rich_status
from chronos.telemetry import Throttle
from chronos.v1 import ledger_pb2, queries_pb2, queries_pb2_grpc
from query_server.coalesce import CoalescingGetter

_logger = logging.getLogger(__name__)

_Response = TypeVar("_Response")

TRANSACTIONS_PAGE_SIZE_DEFAULT = 50
TRANSACTIONS_PAGE_SIZE_MAX = 500
ACCOUNTS_PAGE_SIZE_DEFAULT = 20
ACCOUNTS_PAGE_SIZE_MAX = 100
SEARCH_QUERY_LENGTH_MAX = 200
PAGE_TOKEN_LENGTH_MAX = 1024
# Account lookups coalesced into one multi-get, and multi-gets at once per process. With
# one in flight the calls queue behind it and go together: GetAccount 1,300-1,450 ->
# 1,618/s in scripts/bench (with two in flight the batches stayed at about three ids).
MGET_IDS_MAX = 500
MGETS_IN_FLIGHT_MAX = 1
# Kept from the call's deadline for answering after a min_position wait.
_ANSWER_MARGIN_SECONDS = 0.05
# While Elasticsearch is down every call fails alike: one log line per interval, with
# the count of the others (a 15 s pause made 72 lines at 50 reads/s before).
UNAVAILABLE_LOG_INTERVAL_SECONDS = 5.0

REASON_PROJECTION_BEHIND = "PROJECTION_BEHIND"
REASON_READ_MODEL_UNAVAILABLE = "READ_MODEL_UNAVAILABLE"

_STATUS_TO_PROTO = {
    AccountStatus.ACTIVE.value: ledger_pb2.ACCOUNT_STATUS_ACTIVE,
    AccountStatus.FROZEN.value: ledger_pb2.ACCOUNT_STATUS_FROZEN,
    AccountStatus.CLOSED.value: ledger_pb2.ACCOUNT_STATUS_CLOSED,
}
_STATUS_FROM_PROTO = {v: k for k, v in _STATUS_TO_PROTO.items()}
_KIND_TO_PROTO = {
    AccountKind.USER.value: ledger_pb2.ACCOUNT_KIND_USER,
    AccountKind.SYSTEM.value: ledger_pb2.ACCOUNT_KIND_SYSTEM,
}
_SIDE_TO_PROTO = {"DEBIT": ledger_pb2.SIDE_DEBIT, "CREDIT": ledger_pb2.SIDE_CREDIT}
_ENTRY_KIND_TO_PROTO = {
    EntryKind.DEPOSIT.value: ledger_pb2.ENTRY_KIND_DEPOSIT,
    EntryKind.WITHDRAWAL.value: ledger_pb2.ENTRY_KIND_WITHDRAWAL,
    EntryKind.TRANSFER.value: ledger_pb2.ENTRY_KIND_TRANSFER,
    EntryKind.JOURNAL.value: ledger_pb2.ENTRY_KIND_JOURNAL,
}


# --- page tokens -------------------------------------------------------------------


class InvalidPageToken(ChronosError):
    """A page token that this server did not issue for this query."""


_TOKEN_VERSION = 1
_CHECKSUM_BYTES = 8


def _binding(method: str, params: dict[str, Any]) -> str:
    canonical = json.dumps([method, params], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def encode_page_token(method: str, params: dict[str, Any], search_after: list[Any]) -> str:
    """An opaque token for the page after ``search_after``, bound to ``params``.

    The token is URL-safe base64 of a checksum and a small JSON document holding the
    method, a hash of the query parameters and the sort values to continue after. The
    checksum catches corrupted or hand-edited tokens; it is not a secret (a token only
    ever leads to data the same request could read anyway).
    """
    body = json.dumps(
        {"v": _TOKEN_VERSION, "m": method, "b": _binding(method, params), "a": search_after},
        separators=(",", ":"),
    ).encode()
    checksum = hashlib.sha256(body).digest()[:_CHECKSUM_BYTES]
    return base64.urlsafe_b64encode(checksum + body).decode().rstrip("=")


def decode_page_token(token: str, method: str, params: dict[str, Any]) -> list[Any]:
    """The sort values a token continues after.

    Raises:
        InvalidPageToken: malformed, tampered with, or issued for another query.
    """
    if len(token) > PAGE_TOKEN_LENGTH_MAX:
        raise InvalidPageToken("is too long")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError) as error:
        raise InvalidPageToken("is not a page token") from error
    checksum, body = raw[:_CHECKSUM_BYTES], raw[_CHECKSUM_BYTES:]
    if len(checksum) != _CHECKSUM_BYTES or hashlib.sha256(body).digest()[:8] != checksum:
        raise InvalidPageToken("is not a page token (checksum mismatch)")
    try:
        data = json.loads(body)
    except ValueError as error:
        raise InvalidPageToken("is not a page token") from error
    if not isinstance(data, dict) or data.get("v") != _TOKEN_VERSION or data.get("m") != method:
        raise InvalidPageToken("was issued for another method")
    if data.get("b") != _binding(method, params):
        raise InvalidPageToken("was issued for different query parameters")
    values = data.get("a")
    checks = _SORT_VALUE_CHECKS[method]
    # The checksum is no secret, so a token can be forged: its values must be ones
    # Elasticsearch takes, or the search fails (a 400, or an integer JSON cannot carry)
    # and the caller would be told the read model is unavailable.
    if (
        not isinstance(values, list)
        or len(values) != len(checks)
        or not all(check(value) for check, value in zip(checks, values, strict=True))
    ):
        raise InvalidPageToken("is not a page token")
    return values


def _is_position(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= limits.INT64_MAX


def _is_score(value: Any) -> bool:
    # _score is a 32-bit float in Elasticsearch.
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and abs(value) <= _FLOAT32_MAX
    )


def _is_account_id(value: Any) -> bool:
    return isinstance(value, str) and canonical_account_id(value) == value


_FLOAT32_MAX = 3.4028234663852886e38
# The sort values each method's pages continue after (its search's sort clause).
_SORT_VALUE_CHECKS: dict[str, tuple[Callable[[Any], bool], ...]] = {
    "ListTransactions": (_is_position,),
    "SearchAccounts": (_is_score, _is_account_id),
}


# --- the watermark, cached -----------------------------------------------------------


class WatermarkCache:
    """The visible position, re-read at most every ``refresh_seconds``.

    Many concurrent calls share one in-flight read, so waiting calls cost Elasticsearch
    one realtime mget per refresh interval, however many there are.

    A call that only reports the position (``as_of_position``, no ``min_position`` to
    wait for) accepts a value up to ``report_max_age_seconds`` old: any earlier value is
    still a true lower bound of what the answer reflects. Under load the multi-gets that
    piggyback the watermarks keep it that fresh, and the value arrives one multi-get's
    latency after its read started; with the report bound at the refresh interval (10
    ms), a busy query worker sent nearly one watermark mget of its own per piggybacked
    one (py-spy under GetAccount load: 19% of its busy samples in those reads).
    """

    def __init__(
        self,
        reader: AsyncWatermarkReader,
        *,
        refresh_seconds: float,
        report_max_age_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._reader = reader
        self._refresh_seconds = refresh_seconds
        self._report_max_age_seconds = (
            refresh_seconds if report_max_age_seconds is None else report_max_age_seconds
        )
        self._clock = clock
        self._value = 0
        self._read_at = float("-inf")
        self._inflight: asyncio.Task[int] | None = None

    async def current(self) -> int:
        """The visible position to report, at most ``report_max_age_seconds`` old."""
        return await self._fresh(self._report_max_age_seconds)

    async def _fresh(self, max_age_seconds: float) -> int:
        if self._clock() - self._read_at >= max_age_seconds:
            await self._refresh()
        return self._value

    async def _refresh(self) -> None:
        task = self._inflight
        if task is None or task.done():
            # Only a read still in flight is shared. One that ended (with every caller
            # gone, cancelled by their deadlines) began before this caller asked: its
            # value may be stale, and its failure is not this caller's to answer.
            task = self._inflight = asyncio.create_task(self._read())
            task.add_done_callback(_retrieve)
        # Shielded: one caller's cancellation must not cancel the shared read.
        await asyncio.shield(task)

    async def _read(self) -> int:
        started = self._clock()
        self._observe((await self._reader.read()).visible_position, started)
        return self._value

    def _observe(self, visible: int, read_started: float) -> None:
        # Watermarks only move forward; never report an older read over a newer one.
        self._value = max(self._value, visible)
        self._read_at = max(self._read_at, read_started)

    def piggyback(self) -> tuple[list[dict[str, str]], Callable[[list[Any]], None]]:
        """Lets another multi-get read the watermarks too, saving a request of their own.

        Returns:
            The ``mget`` items to add, and the function to call with what they read.
        """
        started = self._clock()
        if started - self._read_at < self._refresh_seconds / 2:
            # Fresh enough: every watermark read is a shard-level get for Elasticsearch,
            # so under load they ride along about once per refresh interval, early
            # enough that current() never finds the value stale.
            return [], _ignore

        def accept(docs: list[Any]) -> None:
            watermarks = self._reader.accept(docs)
            if watermarks is not None:
                self._observe(watermarks.visible_position, started)

        return self._reader.docs(), accept

    async def wait_for(self, position: int, timeout_seconds: float) -> int | None:
        """Waits until the visible position is >= ``position``; None on timeout."""
        deadline = self._clock() + max(0.0, timeout_seconds)
        while True:
            visible = await self._fresh(self._refresh_seconds)
            if visible >= position:
                return visible
            remaining = deadline - self._clock()
            if remaining <= 0:
                return None
            await asyncio.sleep(min(self._refresh_seconds, remaining))


def _ignore(_docs: list[Any]) -> None:
    pass


def _retrieve(task: asyncio.Task[int]) -> None:
    # A read whose callers all gave up has nobody to raise its failure to; the next
    # caller reads again and sees its own outcome.
    if not task.cancelled():
        task.exception()


# --- Elasticsearch reads -------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Page:
    hits: list[dict[str, Any]]
    total: int


class ReadModelClient:
    """The query server's reads (async client).

    Reads by account id are coalesced (``query_server.coalesce``): the calls that arrive
    while a multi-get is in flight share the next one, which also reads the watermarks of
    ``piggybacked`` (so that, under load, the cached watermark needs no reads of its own).
    """

    def __init__(
        self,
        es: AsyncElasticsearch,
        names: IndexNames,
        *,
        piggybacked: WatermarkCache | None = None,
        ids_per_mget_max: int = MGET_IDS_MAX,
        mgets_in_flight_max: int = MGETS_IN_FLIGHT_MAX,
        linger_seconds: float = 0.0,
    ) -> None:
        self._es = es
        self._names = names
        self._piggybacked = piggybacked
        self._accounts = CoalescingGetter(
            self._get_accounts,
            keys_per_fetch_max=ids_per_mget_max,
            fetches_in_flight_max=mgets_in_flight_max,
            linger_seconds=linger_seconds,
        )

    async def _call(self, what: str, request: Awaitable[Any]) -> Any:
        try:
            return await request
        except (ApiError, TransportError) as error:
            raise translate(error, what) from error

    async def _get_accounts(self, account_ids: list[str]) -> dict[str, dict[str, Any]]:
        watermark_docs: list[dict[str, str]] = []
        if self._piggybacked is not None:
            watermark_docs, accept_watermarks = self._piggybacked.piggyback()
        index = self._names.accounts
        docs = [*watermark_docs, *({"_index": index, "_id": i} for i in account_ids)]
        response = await self._call("get accounts", self._es.mget(docs=docs, realtime=True))
        read = response.body["docs"]
        if watermark_docs:
            accept_watermarks(read[: len(watermark_docs)])
        return {
            account_id: doc["_source"]
            for account_id, doc in found_documents(
                read[len(watermark_docs) :], "get accounts"
            ).items()
        }

    async def get_account(self, account_id: str) -> dict[str, Any] | None:
        """The account document (realtime: no refresh needed), None if unknown.

        The lookup is sent after this call began, so the document is at least as new as
        any watermark the caller read before calling.
        """
        return await self._accounts.get(account_id)

    async def close(self) -> None:
        await self._accounts.close()

    async def lines(
        self,
        account_id: str,
        *,
        start: str | None,
        end: str | None,
        size: int,
        search_after: list[Any] | None,
    ) -> list[dict[str, Any]]:
        """Statement lines of an account, newest (highest position) first."""
        filters: list[dict[str, Any]] = [{"term": {"account_id": account_id}}]
        time_range: dict[str, str] = {}
        if start is not None:
            time_range["gte"] = start
        if end is not None:
            time_range["lt"] = end
        if time_range:
            filters.append({"range": {"recorded_at": time_range}})
        response = await self._call(
            "list transactions",
            self._es.search(
                index=self._names.transactions,
                query={"bool": {"filter": filters}},
                sort=[{"position": "desc"}],
                size=size,
                search_after=search_after,
                track_total_hits=False,
            ),
        )
        hits: list[dict[str, Any]] = response["hits"]["hits"]
        return hits

    async def line_at(self, account_id: str, at: str) -> dict[str, Any] | None:
        """The account's last line recorded at or before ``at``."""
        response = await self._call(
            "balance at",
            self._es.search(
                index=self._names.transactions,
                query={
                    "bool": {
                        "filter": [
                            {"term": {"account_id": account_id}},
                            {"range": {"recorded_at": {"lte": at}}},
                        ]
                    }
                },
                sort=[{"position": "desc"}],
                size=1,
                track_total_hits=False,
            ),
        )
        hits = response["hits"]["hits"]
        return hits[0]["_source"] if hits else None

    async def search_accounts(
        self,
        *,
        text: str,
        status: str | None,
        currency: str | None,
        size: int,
        search_after: list[Any] | None,
    ) -> Page:
        """User accounts matching ``text`` on the owner name, best match first."""
        filters: list[dict[str, Any]] = []
        if status is not None:
            filters.append({"term": {"status": status}})
        if currency is not None:
            filters.append({"term": {"currency": currency}})
        must: list[dict[str, Any]] = []
        if text:
            must.append(
                {"match": {"owner_name": {"query": text, "operator": "and", "fuzziness": "AUTO"}}}
            )
        query = {
            "bool": {
                "must": must or [{"match_all": {}}],
                "filter": filters,
                "must_not": [{"term": {"kind": AccountKind.SYSTEM.value}}],
            }
        }
        response = await self._call(
            "search accounts",
            self._es.search(
                index=self._names.accounts,
                query=query,
                # account_id breaks ties so pages never overlap or skip.
                sort=[{"_score": "desc"}, {"account_id": "asc"}],
                size=size,
                search_after=search_after,
                track_total_hits=True,
            ),
        )
        return Page(hits=response["hits"]["hits"], total=int(response["hits"]["total"]["value"]))


# --- protobuf mapping ----------------------------------------------------------------


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _timestamp(text: str) -> timestamp_pb2.Timestamp:
    # The read model writes one spelling (documents.format_time); fromisoformat parses it
    # in C, about ten times faster than Timestamp.FromJsonString.
    since_epoch = datetime.fromisoformat(text) - _EPOCH
    return timestamp_pb2.Timestamp(
        seconds=since_epoch.days * 86_400 + since_epoch.seconds,
        nanos=since_epoch.microseconds * 1_000,
    )


def account_to_proto(source: dict[str, Any], as_of: int) -> queries_pb2.GetAccountResponse:
    return queries_pb2.GetAccountResponse(
        account_id=source["account_id"],
        owner_name=source["owner_name"],
        currency=source["currency"],
        balance=ledger_pb2.Money(currency=source["currency"], minor_units=source["balance_minor"]),
        overdraft_limit_minor=source["overdraft_limit_minor"],
        status=_STATUS_TO_PROTO.get(source["status"], ledger_pb2.ACCOUNT_STATUS_UNSPECIFIED),
        version=source["version"],
        opened_at=_timestamp(source["opened_at"]),
        updated_at=_timestamp(source["updated_at"]),
        as_of_position=as_of,
        metadata={str(k): str(v) for k, v in (source.get("metadata") or {}).items()},
        kind=_KIND_TO_PROTO.get(source["kind"], ledger_pb2.ACCOUNT_KIND_UNSPECIFIED),
    )


def line_to_proto(source: dict[str, Any]) -> queries_pb2.TransactionLine:
    currency = source["currency"]
    return queries_pb2.TransactionLine(
        entry_id=source["entry_id"],
        direction=_SIDE_TO_PROTO.get(source["direction"], ledger_pb2.SIDE_UNSPECIFIED),
        amount=ledger_pb2.Money(currency=currency, minor_units=source["amount_minor"]),
        balance_after=ledger_pb2.Money(
            currency=currency, minor_units=source["balance_after_minor"]
        ),
        counterparty_account_id=source["counterparty_account_id"],
        kind=_ENTRY_KIND_TO_PROTO.get(source["kind"], ledger_pb2.ENTRY_KIND_UNSPECIFIED),
        description=source["description"],
        recorded_at=_timestamp(source["recorded_at"]),
        position=source["position"],
        event_id=source["event_id"],
    )


def summary_to_proto(hit: dict[str, Any]) -> queries_pb2.AccountSummary:
    source = hit["_source"]
    return queries_pb2.AccountSummary(
        account_id=source["account_id"],
        owner_name=source["owner_name"],
        currency=source["currency"],
        balance=ledger_pb2.Money(currency=source["currency"], minor_units=source["balance_minor"]),
        status=_STATUS_TO_PROTO.get(source["status"], ledger_pb2.ACCOUNT_STATUS_UNSPECIFIED),
        score=float(hit.get("_score") or 0.0),
    )


# --- the service ---------------------------------------------------------------------


class _Refusal(ChronosError):
    """Ends a call with ``status`` (raised inside handlers, turned into an abort)."""

    def __init__(self, status: grpc.Status) -> None:
        super().__init__(status.details)
        self.status = status


def _invalid(violations: list[FieldViolation]) -> _Refusal:
    summary = "; ".join(f"{v.field}: {v.description}" for v in violations)
    return _Refusal(
        rich_status(
            grpc.StatusCode.INVALID_ARGUMENT,
            Reason.VALIDATION_FAILED.value,
            f"The request is invalid: {summary}.",
            violations=violations,
        )
    )


def _not_found(account_id: str) -> _Refusal:
    return _Refusal(
        rich_status(
            grpc.StatusCode.NOT_FOUND,
            Reason.ACCOUNT_NOT_FOUND.value,
            f"Account {account_id} does not exist (or the projection has not seen it yet: "
            f"pass the command's position as min_position).",
            metadata={"account_id": account_id},
        )
    )


def _account_id(raw: str, field: str, violations: list[FieldViolation]) -> str:
    if not raw:
        violations.append(FieldViolation(field, "is required"))
        return ""
    canonical = canonical_account_id(raw)
    if canonical is None:
        violations.append(FieldViolation(field, "must be a UUID"))
        return ""
    return canonical


def _page_size(value: int, default: int, maximum: int, violations: list[FieldViolation]) -> int:
    if value == 0:
        return default
    if not 1 <= value <= maximum:
        violations.append(FieldViolation("page_size", f"must be between 1 and {maximum}"))
    return value


def _min_position(value: int, violations: list[FieldViolation]) -> None:
    if value < 0:
        violations.append(FieldViolation("min_position", "must be zero or positive"))


def _time(
    request: Any, field: str, violations: list[FieldViolation], *, required: bool = False
) -> str | None:
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


class QueryServicer(queries_pb2_grpc.QueryServiceServicer):
    """Implements QueryService over the read model.

    Args:
        read_model: Elasticsearch reads.
        watermark: The cached visible position.
        min_position_wait_seconds_max: Longest wait for ``min_position``.
    """

    def __init__(
        self,
        read_model: ReadModelClient,
        watermark: WatermarkCache,
        *,
        min_position_wait_seconds_max: float,
        applied_watermark: WatermarkCache | None = None,
    ) -> None:
        self._read = read_model
        # Searches (statement, balance-at-time, account search) need the searchable
        # watermark; GetAccount reads by id (realtime GET), so the applied one suffices.
        self._watermark = watermark
        self._applied_watermark = applied_watermark or watermark
        self._wait_max = min_position_wait_seconds_max
        self._unavailable_log = Throttle(UNAVAILABLE_LOG_INTERVAL_SECONDS)

    async def _serve(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        handler: Callable[[], Awaitable[_Response]],
    ) -> _Response:
        try:
            return await handler()
        except _Refusal as refusal:
            await abort(context, refusal.status)
        except (ReadModelUnavailable, ReadModelError) as error:
            held_back = self._unavailable_log.admit()
            if held_back is not None:
                _logger.warning(
                    "read model unavailable: %s (%d more such calls since the last line)",
                    error,
                    held_back,
                )
            await abort(
                context,
                rich_status(
                    grpc.StatusCode.UNAVAILABLE,
                    REASON_READ_MODEL_UNAVAILABLE,
                    "The read model (Elasticsearch) cannot answer right now; retry shortly.",
                ),
            )
        raise AssertionError("abort() returned")

    async def _as_of(
        self,
        min_position: int,
        context: grpc.aio.ServicerContext[Any, Any],
        *,
        by_id: bool = False,
    ) -> int:
        """The visible position, after waiting for ``min_position`` if it is > 0.

        ``by_id``: the answer is a realtime GET, so documents need only be applied.
        """
        watermark = self._applied_watermark if by_id else self._watermark
        if min_position <= 0:
            return await watermark.current()
        remaining = context.time_remaining()
        timeout = self._wait_max
        if remaining is not None:
            timeout = min(timeout, remaining - _ANSWER_MARGIN_SECONDS)
        visible = await watermark.wait_for(min_position, timeout)
        if visible is None:
            current = await watermark.current()
            raise _Refusal(
                rich_status(
                    grpc.StatusCode.UNAVAILABLE,
                    REASON_PROJECTION_BEHIND,
                    f"The projection has applied positions up to {current}, not yet "
                    f"{min_position}; retry shortly.",
                    metadata={"min_position": str(min_position), "as_of_position": str(current)},
                )
            )
        return visible

    async def GetAccount(
        self, request: queries_pb2.GetAccountRequest, context: Any
    ) -> queries_pb2.GetAccountResponse:
        """The account's current state (a realtime GET, never stale w.r.t. as_of)."""

        async def handle() -> queries_pb2.GetAccountResponse:
            violations: list[FieldViolation] = []
            account_id = _account_id(request.account_id, "account_id", violations)
            _min_position(request.min_position, violations)
            if violations:
                raise _invalid(violations)
            as_of = await self._as_of(request.min_position, context, by_id=True)
            source = await self._read.get_account(account_id)
            if source is None:
                raise _not_found(account_id)
            return account_to_proto(source, as_of)

        return await self._serve(context, handle)

    async def ListTransactions(
        self, request: queries_pb2.ListTransactionsRequest, context: Any
    ) -> queries_pb2.ListTransactionsResponse:
        """Statement lines, newest first (by position), ``start_time <= recorded_at <
        end_time``. Pages hold ``page_size`` lines (default 50, at most 500); the page
        token continues after the last line's position, so pages stay stable while new
        lines arrive, and it only works with the same account and time window."""

        async def handle() -> queries_pb2.ListTransactionsResponse:
            violations: list[FieldViolation] = []
            account_id = _account_id(request.account_id, "account_id", violations)
            start = _time(request, "start_time", violations)
            end = _time(request, "end_time", violations)
            if (
                start is not None
                and end is not None
                and request.end_time.ToNanoseconds() <= request.start_time.ToNanoseconds()
            ):
                violations.append(FieldViolation("end_time", "must be after start_time"))
            page_size = _page_size(
                request.page_size,
                TRANSACTIONS_PAGE_SIZE_DEFAULT,
                TRANSACTIONS_PAGE_SIZE_MAX,
                violations,
            )
            _min_position(request.min_position, violations)
            params = {"account_id": account_id, "start": start, "end": end}
            search_after = None
            if request.page_token and not violations:
                try:
                    search_after = decode_page_token(request.page_token, "ListTransactions", params)
                except InvalidPageToken as error:
                    violations.append(FieldViolation("page_token", str(error)))
            if violations:
                raise _invalid(violations)
            as_of = await self._as_of(request.min_position, context)
            # One more than a page tells whether another page follows.
            source, hits = await asyncio.gather(
                self._read.get_account(account_id),
                self._read.lines(
                    account_id,
                    start=start,
                    end=end,
                    size=page_size + 1,
                    search_after=search_after,
                ),
            )
            if source is None:
                raise _not_found(account_id)
            page = hits[:page_size]
            next_token = ""
            if len(hits) > page_size:
                next_token = encode_page_token(
                    "ListTransactions", params, [int(page[-1]["_source"]["position"])]
                )
            return queries_pb2.ListTransactionsResponse(
                lines=[line_to_proto(hit["_source"]) for hit in page],
                next_page_token=next_token,
                as_of_position=as_of,
            )

        return await self._serve(context, handle)

    async def GetBalanceAt(
        self, request: queries_pb2.GetBalanceAtRequest, context: Any
    ) -> queries_pb2.GetBalanceAtResponse:
        """The balance right after the last line recorded at or before ``at_time``
        (required); zero, with ``line_position`` 0, before the account's first line."""

        async def handle() -> queries_pb2.GetBalanceAtResponse:
            violations: list[FieldViolation] = []
            account_id = _account_id(request.account_id, "account_id", violations)
            at = _time(request, "at_time", violations, required=True)
            _min_position(request.min_position, violations)
            if violations:
                raise _invalid(violations)
            assert at is not None
            as_of = await self._as_of(request.min_position, context)
            source, line = await asyncio.gather(
                self._read.get_account(account_id), self._read.line_at(account_id, at)
            )
            if source is None:
                raise _not_found(account_id)
            balance = int(line["balance_after_minor"]) if line else 0
            return queries_pb2.GetBalanceAtResponse(
                account_id=account_id,
                balance=ledger_pb2.Money(currency=source["currency"], minor_units=balance),
                line_position=int(line["position"]) if line else 0,
                as_of_position=as_of,
            )

        return await self._serve(context, handle)

    async def SearchAccounts(
        self, request: queries_pb2.SearchAccountsRequest, context: Any
    ) -> queries_pb2.SearchAccountsResponse:
        """User accounts whose owner name matches ``query`` (every word, with typo
        tolerance; empty matches all), optionally filtered by status and currency; best
        match first, then by account id. Pages hold ``page_size`` accounts (default 20,
        at most 100). System accounts (the per-currency counterparts of deposits and
        withdrawals) are bookkeeping, not customers, so they are never listed here;
        GetAccount still returns them by id."""

        async def handle() -> queries_pb2.SearchAccountsResponse:
            violations: list[FieldViolation] = []
            text = request.query.strip()
            if len(text) > SEARCH_QUERY_LENGTH_MAX:
                violations.append(
                    FieldViolation("query", f"must be at most {SEARCH_QUERY_LENGTH_MAX} characters")
                )
            status: str | None = None
            if request.status != ledger_pb2.ACCOUNT_STATUS_UNSPECIFIED:
                status = _STATUS_FROM_PROTO.get(request.status)
                if status is None:
                    violations.append(FieldViolation("status", "is not a known status"))
            currency = request.currency or None
            if currency is not None and not (
                len(currency) == 3 and currency.isascii() and currency.isupper()
            ):
                violations.append(
                    FieldViolation("currency", "must be three upper-case letters (ISO 4217)")
                )
            page_size = _page_size(
                request.page_size, ACCOUNTS_PAGE_SIZE_DEFAULT, ACCOUNTS_PAGE_SIZE_MAX, violations
            )
            params = {"query": text, "status": status, "currency": currency}
            search_after = None
            if request.page_token and not violations:
                try:
                    search_after = decode_page_token(request.page_token, "SearchAccounts", params)
                except InvalidPageToken as error:
                    violations.append(FieldViolation("page_token", str(error)))
            if violations:
                raise _invalid(violations)
            as_of = await self._watermark.current()
            page = await self._read.search_accounts(
                text=text,
                status=status,
                currency=currency,
                size=page_size + 1,
                search_after=search_after,
            )
            hits = page.hits[:page_size]
            next_token = ""
            if len(page.hits) > page_size:
                next_token = encode_page_token("SearchAccounts", params, list(hits[-1]["sort"]))
            return queries_pb2.SearchAccountsResponse(
                accounts=[summary_to_proto(hit) for hit in hits],
                next_page_token=next_token,
                total_hits=page.total,
                as_of_position=as_of,
            )

        return await self._serve(context, handle)

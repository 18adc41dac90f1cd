"""``chronos.v1.QueryService``: reads served from the Elasticsearch projection.

Consistency: every answer carries ``as_of_position``, the projection's visible position
read *before* the data (so the data reflects at least every event up to it). A request
with ``min_position`` > 0 first waits until the visible position reaches it, bounded by
the call's deadline and ``min_position_wait_seconds_max``; if it cannot, the call fails
with UNAVAILABLE / ``PROJECTION_BEHIND`` and the client may retry.

Errors: malformed requests get INVALID_ARGUMENT / ``VALIDATION_FAILED`` with one
``BadRequest`` violation per field (``query_server.requests``); unknown accounts
NOT_FOUND / ``ACCOUNT_NOT_FOUND``; any Elasticsearch failure UNAVAILABLE /
``READ_MODEL_UNAVAILABLE`` (never INTERNAL). A token restricted to some accounts gets
PERMISSION_DENIED for any other account, and for SearchAccounts, before the request is
validated (``chronos.security.authorization``). Every refusal is a ``Rejection``,
translated once by ``chronos.rpc.status`` as the command server's are.

The servicer only orchestrates: read the request, wait for the watermark, query the
read model (``chronos.read_model.queries``), map to protobuf (``query_server.mapping``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from chronos.domain.errors import Reason, Rejection
from chronos.read_model import ReadModelError, ReadModelUnavailable
from chronos.read_model.event_queries import EventLogQueries
from chronos.read_model.queries import ReadModelQueries
from chronos.read_model.watermark_cache import WatermarkCache
from chronos.rpc.refusals import QUERY_SERVER, raise_if_refused
from chronos.rpc.status import abort
from chronos.security.authorization import (
    authorize_read,
    authorize_search,
    restricted_accounts,
)
from chronos.security.caller import current_caller
from chronos.telemetry import Throttle
from chronos.v1 import ledger_pb2, queries_pb2, queries_pb2_grpc
from query_server import event_requests, events, requests
from query_server.mapping import (
    account_to_proto,
    line_to_proto,
    pending_money,
    pending_to_proto,
    summary_to_proto,
)

_logger = logging.getLogger(__name__)

_Response = TypeVar("_Response")

# Kept from the call's deadline for answering after a min_position wait.
_ANSWER_MARGIN_SECONDS = 0.05
# While Elasticsearch is down every call fails alike: one log line per interval, with
# the count of the others, rather than one line per failed call.
UNAVAILABLE_LOG_INTERVAL_SECONDS = 5.0


def account_not_found(account_id: str) -> Rejection:
    """The refusal of a query about an account the read model does not hold."""
    return Rejection(
        Reason.ACCOUNT_NOT_FOUND,
        f"Account {account_id} does not exist (or the projection has not seen it yet: "
        f"pass the command's position as min_position).",
        metadata={"account_id": account_id},
    )


def projection_behind(min_position: int, current: int) -> Rejection:
    """The refusal of a query whose ``min_position`` the projection did not reach in time."""
    return Rejection(
        Reason.PROJECTION_BEHIND,
        f"The projection has applied positions up to {current}, not yet "
        f"{min_position}; retry shortly.",
        metadata={"min_position": str(min_position), "as_of_position": str(current)},
    )


def read_model_unavailable() -> Rejection:
    """The refusal of a query Elasticsearch could not answer."""
    return Rejection(
        Reason.READ_MODEL_UNAVAILABLE,
        "The read model (Elasticsearch) cannot answer right now; retry shortly.",
    )


class QueryServicer(queries_pb2_grpc.QueryServiceServicer):
    """Implements QueryService over the read model.

    Args:
        read_model: Elasticsearch reads.
        watermark: The cached visible position.
        min_position_wait_seconds_max: Longest wait for ``min_position``.
        applied_watermark: The cached applied position, enough for reads by id; the
            visible one if None.
        event_log: Reads of the event log; the read model's if None.
    """

    def __init__(
        self,
        read_model: ReadModelQueries,
        watermark: WatermarkCache,
        *,
        min_position_wait_seconds_max: float,
        applied_watermark: WatermarkCache | None = None,
        event_log: EventLogQueries | None = None,
    ) -> None:
        self._read = read_model
        # Searches (statement, balance-at-time, account search) need the searchable
        # watermark; GetAccount reads by id (realtime GET), so the applied one suffices.
        self._watermark = watermark
        self._applied_watermark = applied_watermark or watermark
        self._wait_max = min_position_wait_seconds_max
        self._unavailable_log = Throttle(UNAVAILABLE_LOG_INTERVAL_SECONDS)
        self._event_log = event_log or read_model.event_log()

    async def _serve(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        handler: Callable[[], Awaitable[_Response]],
    ) -> _Response:
        """Runs ``handler``; every refusal it raises leaves as the call's status."""
        try:
            return await handler()
        except Rejection as rejection:
            await abort(context, rejection)
        except (ReadModelUnavailable, ReadModelError) as error:
            held_back = self._unavailable_log.admit()
            if held_back is not None:
                _logger.warning(
                    "read model unavailable: %s (%d more such calls since the last line)",
                    error,
                    held_back,
                )
            await abort(context, read_model_unavailable())

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
            raise projection_behind(min_position, await watermark.current())
        return visible

    async def _account_page(
        self, account_id: str, listing: Awaitable[list[dict[str, Any]]], page_size: int
    ) -> tuple[list[dict[str, Any]], bool]:
        """A page of an account's hits and whether another follows (``listing`` asks for
        one more than a page, which tells); NOT_FOUND for an account the read model does
        not know."""
        source, hits = await asyncio.gather(self._read.get_account(account_id), listing)
        if source is None:
            raise account_not_found(account_id)
        return hits[:page_size], len(hits) > page_size

    async def GetAccount(
        self, request: queries_pb2.GetAccountRequest, context: Any
    ) -> queries_pb2.GetAccountResponse:
        """The account's current state (a realtime GET, never stale w.r.t. as_of)."""

        async def handle() -> queries_pb2.GetAccountResponse:
            raise_if_refused(QUERY_SERVER, authorize_read(current_caller(), request.account_id))
            query = requests.account_query(request)
            as_of = await self._as_of(query.min_position, context, by_id=True)
            source = await self._read.get_account(query.account_id)
            if source is None:
                raise account_not_found(query.account_id)
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
            raise_if_refused(QUERY_SERVER, authorize_read(current_caller(), request.account_id))
            query = requests.transactions_query(request)
            as_of = await self._as_of(query.min_position, context)
            page, more = await self._account_page(
                query.account_id,
                self._read.lines(
                    query.account_id,
                    start=query.start,
                    end=query.end,
                    size=query.page_size + 1,
                    search_after=query.search_after,
                    metadata=query.metadata,
                ),
                query.page_size,
            )
            next_token = ""
            if more:
                next_token = query.next_page_token(int(page[-1]["_source"]["position"]))
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
            raise_if_refused(QUERY_SERVER, authorize_read(current_caller(), request.account_id))
            query = requests.balance_at_query(request)
            as_of = await self._as_of(query.min_position, context)
            source, line = await asyncio.gather(
                self._read.get_account(query.account_id),
                self._read.line_at(query.account_id, query.at),
            )
            if source is None:
                raise account_not_found(query.account_id)
            balance = int(line["balance_after_minor"]) if line else 0
            line = line or {}
            return queries_pb2.GetBalanceAtResponse(
                account_id=query.account_id,
                balance=ledger_pb2.Money(currency=source["currency"], minor_units=balance),
                line_position=int(line.get("position", 0)),
                as_of_position=as_of,
                **pending_money(
                    source["currency"],
                    balance,
                    int(line.get("pending_debits_after_minor", 0)),
                    int(line.get("pending_credits_after_minor", 0)),
                ),
            )

        return await self._serve(context, handle)

    async def ListPendingTransfers(
        self, request: queries_pb2.ListPendingTransfersRequest, context: Any
    ) -> queries_pb2.ListPendingTransfersResponse:
        """The holds an account takes part in, newest placed first, maybe in one state;
        pages as ListTransactions' (the token continues after the last hold)."""

        async def handle() -> queries_pb2.ListPendingTransfersResponse:
            raise_if_refused(QUERY_SERVER, authorize_read(current_caller(), request.account_id))
            query = requests.pending_query(request)
            as_of = await self._as_of(query.min_position, context)
            page, more = await self._account_page(
                query.account_id,
                self._read.pending_transfers(
                    query.account_id,
                    state=query.state,
                    size=query.page_size + 1,
                    search_after=query.search_after,
                    metadata=query.metadata,
                ),
                query.page_size,
            )
            next_token = query.next_page_token(list(page[-1]["sort"])) if more else ""
            return queries_pb2.ListPendingTransfersResponse(
                pending_transfers=[pending_to_proto(hit["_source"]) for hit in page],
                next_page_token=next_token,
                as_of_position=as_of,
            )

        return await self._serve(context, handle)

    async def ListEvents(
        self, request: queries_pb2.ListEventsRequest, context: Any
    ) -> queries_pb2.ListEventsResponse:
        """The event log, filtered, by position (newest first unless ascending), up to
        the visible position; pages as ListTransactions' (``query_server.events``)."""

        async def handle() -> queries_pb2.ListEventsResponse:
            caller = current_caller()
            if caller.accounts is not None:
                raise_if_refused(QUERY_SERVER, authorize_read(caller, request.account_id))
            query = event_requests.events_query(request)
            as_of = await self._as_of(query.min_position, context)
            return await events.list_events(self._event_log, query, as_of)

        return await self._serve(context, handle)

    async def GetEntry(
        self, request: queries_pb2.GetEntryRequest, context: Any
    ) -> queries_pb2.GetEntryResponse:
        """One journal entry: lines, state, hold and events (``query_server.events``)."""

        async def handle() -> queries_pb2.GetEntryResponse:
            query = event_requests.entry_query(request)
            as_of = await self._as_of(query.min_position, context)
            accounts = restricted_accounts(current_caller())
            return await events.get_entry(self._event_log, query, as_of, accounts)

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
            raise_if_refused(QUERY_SERVER, authorize_search(current_caller()))
            search = requests.account_search(request)
            as_of = await self._watermark.current()
            page = await self._read.search_accounts(
                text=search.text,
                status=search.status,
                currency=search.currency,
                size=search.page_size + 1,
                search_after=search.search_after,
            )
            hits = page.hits[: search.page_size]
            next_token = ""
            if len(page.hits) > search.page_size:
                next_token = search.next_page_token(list(hits[-1]["sort"]))
            return queries_pb2.SearchAccountsResponse(
                accounts=[summary_to_proto(hit) for hit in hits],
                next_page_token=next_token,
                total_hits=page.total,
                as_of_position=as_of,
            )

        return await self._serve(context, handle)

"""ListEvents and GetEntry requests checked and read into plain values, or refused.

As ``query_server.requests``: every invalid field is one ``BadRequest`` violation of a
VALIDATION_FAILED refusal, and the page token is decoded only when the other fields
are valid, since it is bound to them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chronos.domain import limits
from chronos.domain.errors import FieldViolation
from chronos.v1 import queries_pb2
from query_server.page_tokens import encode_page_token
from query_server.requests import (
    continued_query,
    read_account_id,
    read_min_position,
    read_page_size,
    read_time_window,
    refuse_if_any,
)

EVENTS_PAGE_SIZE_DEFAULT = 50
EVENTS_PAGE_SIZE_MAX = 500
EVENT_TYPES_MAX = 20
TEXT_LENGTH_MAX = 200
PRINCIPAL_LENGTH_MAX = 256
_EVENTS_TOKEN = "ListEvents"

# The types of the events the ledger records (the payload messages of events.proto).
EVENT_TYPES = frozenset(
    {
        "AccountOpened",
        "AccountFrozen",
        "AccountUnfrozen",
        "AccountClosed",
        "FundsDeposited",
        "FundsWithdrawn",
        "FundsTransferred",
        "JournalEntryPosted",
        "EntryReversed",
        "PendingTransferCreated",
        "PendingTransferPosted",
        "PendingTransferVoided",
        "PendingTransferExpired",
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class EventsQuery:
    """ListEvents: one page of the event log, filtered; each filter left empty (or 0)
    selects everything."""

    event_types: tuple[str, ...]
    account_id: str
    entry_id: str
    pending_id: str
    request_id: str
    principal: str
    start: str | None
    end: str | None
    from_position: int
    to_position: int
    text: str
    ascending: bool
    page_size: int
    search_after: list[Any] | None
    min_position: int

    def next_page_token(self, last_position: int) -> str:
        """The token of the page after the event at ``last_position``."""
        return encode_page_token(_EVENTS_TOKEN, _events_binding(self), [last_position])


@dataclass(frozen=True, slots=True, kw_only=True)
class EntryQuery:
    """GetEntry: one journal entry by id."""

    entry_id: str
    min_position: int


def events_query(request: queries_pb2.ListEventsRequest) -> EventsQuery:
    """Reads a ListEvents request; raises Rejection (VALIDATION_FAILED)."""
    violations: list[FieldViolation] = []
    event_types = tuple(sorted(set(request.event_types)))
    if len(request.event_types) > EVENT_TYPES_MAX:
        violations.append(FieldViolation("event_types", f"must be at most {EVENT_TYPES_MAX}"))
    elif unknown := [name for name in event_types if name not in EVENT_TYPES]:
        shown = ", ".join(repr(name[:64]) for name in unknown[:3])
        violations.append(FieldViolation("event_types", f"are not known event types: {shown}"))
    ids = {
        field: read_account_id(raw, field, violations) if raw else ""
        for field, raw in (
            ("account_id", request.account_id),
            ("entry_id", request.entry_id),
            ("pending_id", request.pending_id),
        )
    }
    _bounded_text(request.request_id, "request_id", limits.REQUEST_ID_LENGTH_MAX, violations)
    _bounded_text(request.principal, "principal", PRINCIPAL_LENGTH_MAX, violations)
    start, end = read_time_window(request, violations)
    _positions(request.from_position, request.to_position, violations)
    text = request.text.strip()
    _bounded_text(text, "text", TEXT_LENGTH_MAX, violations)
    if request.order not in queries_pb2.EventOrder.values():
        violations.append(FieldViolation("order", "is not a known order"))
    page_size = read_page_size(
        request.page_size, EVENTS_PAGE_SIZE_DEFAULT, EVENTS_PAGE_SIZE_MAX, violations
    )
    read_min_position(request.min_position, violations)
    query = EventsQuery(
        event_types=event_types,
        account_id=ids["account_id"],
        entry_id=ids["entry_id"],
        pending_id=ids["pending_id"],
        request_id=request.request_id,
        principal=request.principal,
        start=start,
        end=end,
        from_position=request.from_position,
        to_position=request.to_position,
        text=text,
        ascending=request.order == queries_pb2.EVENT_ORDER_ASCENDING,
        page_size=page_size,
        search_after=None,
        min_position=request.min_position,
    )
    return continued_query(
        query, request.page_token, _EVENTS_TOKEN, _events_binding(query), violations
    )


def entry_query(request: queries_pb2.GetEntryRequest) -> EntryQuery:
    """Reads a GetEntry request; raises Rejection (VALIDATION_FAILED)."""
    violations: list[FieldViolation] = []
    entry_id = read_account_id(request.entry_id, "entry_id", violations)
    read_min_position(request.min_position, violations)
    refuse_if_any(violations)
    return EntryQuery(entry_id=entry_id, min_position=request.min_position)


def _events_binding(query: EventsQuery) -> dict[str, Any]:
    # Every filter and the order: a token continues only the listing it came from.
    return {
        "event_types": list(query.event_types),
        "account_id": query.account_id,
        "entry_id": query.entry_id,
        "pending_id": query.pending_id,
        "request_id": query.request_id,
        "principal": query.principal,
        "start": query.start,
        "end": query.end,
        "from_position": query.from_position,
        "to_position": query.to_position,
        "text": query.text,
        "ascending": query.ascending,
    }


def _bounded_text(
    value: str, field: str, length_max: int, violations: list[FieldViolation]
) -> None:
    if len(value) > length_max:
        violations.append(FieldViolation(field, f"must be at most {length_max} characters"))
    elif any(not character.isprintable() for character in value):
        violations.append(FieldViolation(field, "must not contain control characters"))


def _positions(from_position: int, to_position: int, violations: list[FieldViolation]) -> None:
    if from_position < 0:
        violations.append(FieldViolation("from_position", "must be zero or positive"))
    if to_position < 0:
        violations.append(FieldViolation("to_position", "must be zero or positive"))
    elif 0 < to_position < from_position:
        violations.append(FieldViolation("to_position", "must not be below from_position"))

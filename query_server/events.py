"""ListEvents and GetEntry: the event log and one journal entry, read and answered.

The servicer authorizes, validates and waits for ``min_position``; these functions
read the event log (``chronos.read_model.event_queries``) and map the documents to
protobuf. Both read only what is visible (at or below ``as_of_position``), so a
listing tailed from a position never skips an event that becomes visible later.

A token restricted to some accounts (``Caller.accounts``) lists only one of its own
accounts' events (the servicer refuses anything else, as for ListTransactions); it
reads an entry only if one of the entry's lines is on one of its accounts (else the
entry is not found, so it cannot probe entry ids), and then sees the other accounts'
lines without their balances and only its own accounts' events.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from typing import Any

from chronos.domain.errors import Reason, Rejection
from chronos.read_model.event_queries import EventFilter, EventLogQueries
from chronos.v1 import ledger_pb2, queries_pb2
from query_server.event_requests import EntryQuery, EventsQuery
from query_server.mapping import (
    ENTRY_KIND_TO_PROTO,
    SIDE_TO_PROTO,
    pending_to_proto,
    timestamp_proto,
)


def entry_not_found(entry_id: str) -> Rejection:
    """The refusal of GetEntry for an entry the read model does not hold."""
    return Rejection(
        Reason.ENTRY_NOT_FOUND,
        f"Entry {entry_id} does not exist (or the projection has not seen it yet: pass "
        f"the command's position as min_position).",
        metadata={"entry_id": entry_id},
    )


def event_to_proto(source: dict[str, Any]) -> queries_pb2.LoggedEvent:
    """An event-log document."""
    return queries_pb2.LoggedEvent(
        position=source["position"],
        event_id=source["event_id"],
        event_type=source["event_type"],
        schema_version=source["schema_version"],
        stream_id=source["stream_id"],
        stream_version=source["stream_version"],
        recorded_at=timestamp_proto(source["recorded_at"]),
        metadata={str(k): str(v) for k, v in (source.get("metadata") or {}).items()},
        payload_json=json.dumps(source["payload"], sort_keys=True, separators=(",", ":")),
        chain_hash=source.get("chain_hash", ""),
    )


async def list_events(
    event_log: EventLogQueries, query: EventsQuery, as_of: int
) -> queries_pb2.ListEventsResponse:
    """One page of the event log as ``query`` selects it, up to ``as_of``."""
    selection = EventFilter(
        event_types=query.event_types,
        stream_id=query.account_id,
        entry_id=query.entry_id,
        pending_id=query.pending_id,
        request_id=query.request_id,
        principal=query.principal,
        start=query.start,
        end=query.end,
        from_position=query.from_position,
        to_position=query.to_position,
        text=query.text,
    )
    hits = await event_log.events(
        selection,
        up_to_position=as_of,
        ascending=query.ascending,
        size=query.page_size + 1,
        search_after=query.search_after,
    )
    page = hits[: query.page_size]
    next_token = ""
    if len(hits) > query.page_size:
        next_token = query.next_page_token(int(page[-1]["_source"]["position"]))
    return queries_pb2.ListEventsResponse(
        events=[event_to_proto(hit["_source"]) for hit in page],
        next_page_token=next_token,
        as_of_position=as_of,
    )


async def get_entry(
    event_log: EventLogQueries,
    query: EntryQuery,
    as_of: int,
    accounts: frozenset[str] | None,
) -> queries_pb2.GetEntryResponse:
    """The entry ``query`` names, as of ``as_of``, as a caller restricted to
    ``accounts`` (None: every account) may see it.

    Raises:
        Rejection: ENTRY_NOT_FOUND.
    """
    events = await event_log.entry_events(query.entry_id, up_to_position=as_of)
    if accounts is not None and not any(event["stream_id"] in accounts for event in events):
        events = []
    if not events:
        raise entry_not_found(query.entry_id)
    lines, reversed_by = await asyncio.gather(
        event_log.lines([event["event_id"] for event in events]),
        event_log.reversal_of(query.entry_id, up_to_position=as_of),
    )
    pending_id = next((event["pending_id"] for event in events if "pending_id" in event), "")
    hold = await event_log.hold(pending_id) if pending_id else None
    first = lines.get(events[0]["event_id"], {})
    answer = queries_pb2.GetEntryResponse(
        entry_id=query.entry_id,
        kind=ENTRY_KIND_TO_PROTO.get(first.get("kind", ""), ledger_pb2.ENTRY_KIND_UNSPECIFIED),
        description=first.get("description", ""),
        recorded_at=timestamp_proto(events[0]["recorded_at"]),
        lines=list(_line_views(events, lines, accounts)),
        state=queries_pb2.ENTRY_STATE_REVERSED if reversed_by else queries_pb2.ENTRY_STATE_POSTED,
        reversed_by_entry_id=reversed_by,
        reverses_entry_id=first.get("reverses_entry_id", ""),
        metadata={str(k): str(v) for k, v in (first.get("metadata") or {}).items()},
        events=[
            event_to_proto(event)
            for event in events
            if accounts is None or event["stream_id"] in accounts
        ],
        as_of_position=as_of,
    )
    if hold is not None:
        answer.hold.CopyFrom(pending_to_proto(hold))
    return answer


def _line_views(
    events: list[dict[str, Any]],
    lines: dict[str, dict[str, Any]],
    accounts: frozenset[str] | None,
) -> Iterable[queries_pb2.EntryLineView]:
    """The entry's lines in line order; a restricted caller sees no other account's
    balance."""
    found = [lines[event["event_id"]] for event in events if event["event_id"] in lines]
    for line in sorted(found, key=lambda line: (int(line["line_index"]), int(line["position"]))):
        currency = line["currency"]
        view = queries_pb2.EntryLineView(
            account_id=line["account_id"],
            side=SIDE_TO_PROTO.get(line["direction"], ledger_pb2.SIDE_UNSPECIFIED),
            amount=ledger_pb2.Money(currency=currency, minor_units=line["amount_minor"]),
            line_index=line["line_index"],
            counterparty_account_id=line["counterparty_account_id"],
            event_id=line["event_id"],
            position=line["position"],
        )
        if accounts is None or line["account_id"] in accounts:
            view.balance_after.CopyFrom(
                ledger_pb2.Money(currency=currency, minor_units=line["balance_after_minor"])
            )
        yield view

"""The query server's reads of the event log and of one journal entry: Elasticsearch
query DSL over the events index (and, for an entry, its statement lines and its hold),
nothing else. Answers are ``_source`` dictionaries; protobuf is the query server's job.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

from elasticsearch import ApiError, AsyncElasticsearch, TransportError

from chronos.domain import limits
from chronos.read_model.event_documents import words
from chronos.read_model.indices import IndexNames, found_documents, translate

# The most events one entry is made of: a journal entry's lines, one event each (a
# transfer, deposit or withdrawal has two). Read in one search.
ENTRY_EVENTS_MAX = limits.JOURNAL_LINES_MAX
# A newest-first search looks among this many positions below its upper bound first, and
# widens the window this many times over while it holds too few matches (see events()).
WINDOW_POSITIONS_FIRST = 1_000
WINDOW_GROWTH = 16


@dataclass(frozen=True, slots=True, kw_only=True)
class EventFilter:
    """What ListEvents selects; empty values (and None) select everything."""

    event_types: tuple[str, ...] = ()
    stream_id: str = ""
    entry_id: str = ""
    pending_id: str = ""
    request_id: str = ""
    principal: str = ""
    start: str | None = None
    end: str | None = None
    from_position: int = 0
    to_position: int = 0
    text: str = ""


def _filters(selection: EventFilter, up_to_position: int) -> dict[str, Any]:
    """The bool query of ``selection``, capped at ``up_to_position``."""
    filters: list[dict[str, Any]] = []
    if selection.event_types:
        filters.append({"terms": {"event_type": list(selection.event_types)}})
    for field, value in (
        ("stream_id", selection.stream_id),
        ("entry_id", selection.entry_id),
        ("pending_id", selection.pending_id),
        ("request_id", selection.request_id),
        ("principal", selection.principal),
    ):
        if value:
            filters.append({"term": {field: value}})
    time_range: dict[str, str] = {}
    if selection.start is not None:
        time_range["gte"] = selection.start
    if selection.end is not None:
        time_range["lt"] = selection.end
    if time_range:
        filters.append({"range": {"recorded_at": time_range}})
    position_range: dict[str, int] = {"lte": up_to_position}
    if selection.from_position:
        position_range["gte"] = selection.from_position
    if selection.to_position:
        position_range["lte"] = min(selection.to_position, up_to_position)
    filters.append({"range": {"position": position_range}})
    query: dict[str, Any] = {"filter": filters}
    if selection.text:
        # Every word of the text, cut as the documents' were; a text without a word
        # (only punctuation) matches nothing.
        wanted = words(selection.text)
        filters.extend({"term": {"words": word}} for word in wanted)
        if not wanted:
            filters.append({"match_none": {}})
    return {"bool": query}


class EventLogQueries:
    """Reads of the events index (async client)."""

    def __init__(self, es: AsyncElasticsearch, names: IndexNames) -> None:
        self._es = es
        self._names = names

    async def _call(self, what: str, request: Awaitable[Any]) -> Any:
        try:
            return await request
        except (ApiError, TransportError) as error:
            raise translate(error, what) from error

    async def events(
        self,
        selection: EventFilter,
        *,
        up_to_position: int,
        ascending: bool,
        size: int,
        search_after: list[Any] | None,
    ) -> list[dict[str, Any]]:
        """Event documents matching ``selection`` at or below ``up_to_position`` (the
        visible position: every event up to it is searchable, so a page never skips one
        that shows up later), by position.

        Newest first, the search looks in a window of positions below its upper bound,
        and widens it only while the window holds fewer than ``size`` matches; those it
        holds are then the newest of all. Unbounded, Elasticsearch found the newest by
        walking every match: the documents lie in ascending position order, the worst
        case of its sort optimization, so the newest page of a large log read the whole
        log's positions.
        """
        if ascending:
            return await self._search(selection, up_to_position, size, search_after, ascending=True)
        upper = up_to_position
        if search_after:
            upper = min(upper, int(search_after[0]) - 1)
        if selection.to_position:
            upper = min(upper, selection.to_position)
        window = WINDOW_POSITIONS_FIRST
        while (lower := upper - window + 1) > max(selection.from_position, 1):
            bounded = dataclasses.replace(selection, from_position=lower)
            hits = await self._search(bounded, up_to_position, size, search_after, ascending=False)
            if len(hits) >= size:
                return hits
            window *= WINDOW_GROWTH
        return await self._search(selection, up_to_position, size, search_after, ascending=False)

    async def _search(
        self,
        selection: EventFilter,
        up_to_position: int,
        size: int,
        search_after: list[Any] | None,
        *,
        ascending: bool,
    ) -> list[dict[str, Any]]:
        response = await self._call(
            "list events",
            self._es.search(
                index=self._names.events,
                query=_filters(selection, up_to_position),
                sort=[{"position": "asc" if ascending else "desc"}],
                size=size,
                search_after=search_after,
                track_total_hits=False,
            ),
        )
        hits: list[dict[str, Any]] = response["hits"]["hits"]
        return hits

    async def entry_events(self, entry_id: str, *, up_to_position: int) -> list[dict[str, Any]]:
        """The event documents of an entry's lines, by position."""
        hits = await self.events(
            EventFilter(entry_id=entry_id),
            up_to_position=up_to_position,
            ascending=True,
            size=ENTRY_EVENTS_MAX,
            search_after=None,
        )
        return [hit["_source"] for hit in hits]

    async def reversal_of(self, entry_id: str, *, up_to_position: int) -> str:
        """The id of the entry that reverses ``entry_id``; "" when none does."""
        response = await self._call(
            "find reversal",
            self._es.search(
                index=self._names.events,
                query={
                    "bool": {
                        "filter": [
                            {"term": {"reverses_entry_id": entry_id}},
                            {"range": {"position": {"lte": up_to_position}}},
                        ]
                    }
                },
                sort=[{"position": "asc"}],
                size=1,
                source_includes=["entry_id"],
                track_total_hits=False,
            ),
        )
        hits = response["hits"]["hits"]
        return str(hits[0]["_source"].get("entry_id", "")) if hits else ""

    async def lines(self, event_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The statement lines of these events (realtime), by event id."""
        if not event_ids:
            return {}
        index = self._names.transactions
        response = await self._call(
            "get entry lines", self._es.mget(index=index, ids=event_ids, realtime=True)
        )
        found = found_documents(response.body["docs"], "get entry lines")
        return {event_id: doc["_source"] for event_id, doc in found.items()}

    async def hold(self, pending_id: str) -> dict[str, Any] | None:
        """The hold's document (realtime), None if unknown."""
        index = self._names.pending
        response = await self._call(
            "get hold", self._es.mget(index=index, ids=[pending_id], realtime=True)
        )
        found = found_documents(response.body["docs"], "get hold")
        return found[pending_id]["_source"] if pending_id in found else None

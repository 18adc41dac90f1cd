"""Newest-first event-log searches look in widening windows of positions (see
``EventLogQueries.events``): against real Elasticsearch, with windows made tiny so that
every search widens several times, each page is what an unbounded search answers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from elasticsearch import Elasticsearch

from chronos.read_model import event_queries
from chronos.read_model.client import async_elasticsearch_client
from chronos.read_model.event_queries import EventFilter, EventLogQueries
from chronos.read_model.indices import IndexNames, ensure_indices

EVENTS = 400
# Every 37th event is a freeze: a sparse filter, far sparser than the first window.
SPARSE_EVERY = 37


def event_type(position: int) -> str:
    return "AccountFrozen" if position % SPARSE_EVERY == 0 else "FundsTransferred"


def load(es: Elasticsearch, names: IndexNames) -> None:
    ensure_indices(es, names)
    operations: list[dict[str, Any]] = []
    for position in range(1, EVENTS + 1):
        operations.append({"create": {"_index": names.events, "_id": str(position)}})
        operations.append(
            {
                "position": position,
                "event_id": f"e{position}",
                "event_type": event_type(position),
                "schema_version": 1,
                "stream_id": f"s{position % 7}",
                "stream_version": position,
                "recorded_at": "2026-05-01T09:00:00.000000Z",
                "metadata": {},
                "payload": {},
                "words": [],
                "account_ids": [f"s{position % 7}"],
            }
        )
    response = es.bulk(operations=operations, refresh=True)
    assert not response["errors"]


def pages(
    es_url: str, names: IndexNames, selection: EventFilter, up_to: int, size: int
) -> list[list[int]]:
    """Every page, newest first, as the query server pages (size + 1, search_after)."""

    async def run() -> list[list[int]]:
        es = async_elasticsearch_client(es_url)
        queries = EventLogQueries(es, names)
        found: list[list[int]] = []
        after: list[Any] | None = None
        try:
            while True:
                hits = await queries.events(
                    selection,
                    up_to_position=up_to,
                    ascending=False,
                    size=size + 1,
                    search_after=after,
                )
                page = [int(hit["_source"]["position"]) for hit in hits[:size]]
                found.append(page)
                if len(hits) <= size:
                    return found
                after = [page[-1]]
        finally:
            await es.close()

    return asyncio.run(run())


@pytest.mark.parametrize(
    ("selection", "expected"),
    [
        (EventFilter(), lambda p: True),
        (EventFilter(event_types=("AccountFrozen",)), lambda p: p % SPARSE_EVERY == 0),
        (EventFilter(stream_id="s3"), lambda p: p % 7 == 3),
        (
            EventFilter(event_types=("AccountFrozen",), from_position=100, to_position=300),
            lambda p: p % SPARSE_EVERY == 0 and 100 <= p <= 300,
        ),
        (EventFilter(event_types=("NoSuchType",)), lambda p: False),
    ],
    ids=["all", "sparse", "one stream", "sparse within bounds", "none"],
)
def test_windowed_pages_equal_the_unbounded_order(
    es_client: Elasticsearch,
    es_url: str,
    names: IndexNames,
    monkeypatch: pytest.MonkeyPatch,
    selection: EventFilter,
    expected: Any,
) -> None:
    load(es_client, names)
    monkeypatch.setattr(event_queries, "WINDOW_POSITIONS_FIRST", 3)
    monkeypatch.setattr(event_queries, "WINDOW_GROWTH", 2)
    up_to = EVENTS - 10  # the visible position, below the newest documents
    size = 4

    found = pages(es_url, names, selection, up_to, size)

    want = [p for p in range(up_to, 0, -1) if expected(p)]
    assert [p for page in found for p in page] == want
    assert all(len(page) == size for page in found[:-1])

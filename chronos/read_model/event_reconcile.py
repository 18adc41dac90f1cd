"""The event-log part of ``chronos reconcile``: the events index equals the event store.

Both sides are read in position order, up to the event store's head (the projection
has reached it by then: reconcile waits for that first), and merged: a position the
store has and the index lacks is *missing*, one the index has and the store lacks is
*unexpected*, and one whose event id or type differs is *changed*. Documents above the
head (events committed while reconcile ran) are not compared.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
from elasticsearch import ApiError, Elasticsearch, TransportError

from chronos.event_store.reader import iter_events
from chronos.read_model.indices import IndexNames, translate

_SCAN_PAGE_SIZE = 5000
# Differences listed one by one in the report; the counts cover them all.
DIFFERENCES_LISTED_MAX = 100


@dataclass(frozen=True, slots=True, kw_only=True)
class EventLogReport:
    """How the events index compares with the event store up to ``head_position``."""

    head_position: int
    store_events: int
    indexed_events: int
    # One line per difference found, at most DIFFERENCES_LISTED_MAX.
    differences: tuple[str, ...]
    differences_total: int

    @property
    def ok(self) -> bool:
        return self.differences_total == 0


def _indexed(es: Elasticsearch, names: IndexNames, head: int) -> Iterator[tuple[int, str, str]]:
    """(position, event id, type) of every event document up to ``head``, in order."""
    search_after: list[Any] | None = None
    try:
        es.indices.refresh(index=names.events)
        while True:
            response = es.search(
                index=names.events,
                query={"range": {"position": {"lte": head}}},
                source_includes=["position", "event_id", "event_type"],
                sort=[{"position": "asc"}],
                size=_SCAN_PAGE_SIZE,
                search_after=search_after,
                track_total_hits=False,
            )
            hits = response["hits"]["hits"]
            for hit in hits:
                source = hit["_source"]
                yield int(source["position"]), str(source["event_id"]), str(source["event_type"])
            if len(hits) < _SCAN_PAGE_SIZE:
                return
            search_after = hits[-1]["sort"]
    except (ApiError, TransportError) as error:
        raise translate(error, "reading event documents") from error


def check_event_log(
    conn: psycopg.Connection[Any], es: Elasticsearch, names: IndexNames, head: int
) -> EventLogReport:
    """Compares the events index with the event store up to ``head`` (see the module
    docstring); call once the projection is visible up to ``head``."""
    store = ((e.position, e.event_id, e.event_type) for e in iter_events(conn, up_to_position=head))
    differences: list[str] = []
    total = counted_store = counted_index = 0
    want = next(store, None)
    indexed = _indexed(es, names, head)
    have = next(indexed, None)
    while want is not None or have is not None:
        difference = None
        if have is None or (want is not None and want[0] < have[0]):
            assert want is not None
            difference = f"position {want[0]}: missing from the events index ({want[2]} {want[1]})"
            counted_store += 1
            want = next(store, None)
        elif want is None or have[0] < want[0]:
            difference = f"position {have[0]}: in the events index only ({have[2]} {have[1]})"
            counted_index += 1
            have = next(indexed, None)
        else:
            if want != have:
                difference = (
                    f"position {want[0]}: the event store has {want[2]} {want[1]}, the events "
                    f"index {have[2]} {have[1]}"
                )
            counted_store += 1
            counted_index += 1
            want, have = next(store, None), next(indexed, None)
        if difference is not None:
            total += 1
            if len(differences) < DIFFERENCES_LISTED_MAX:
                differences.append(difference)
    return EventLogReport(
        head_position=head,
        store_events=counted_store,
        indexed_events=counted_index,
        differences=tuple(differences),
        differences_total=total,
    )


def format_event_log(report: EventLogReport) -> list[str]:
    """The report's lines for ``chronos reconcile``."""
    lines = [
        f"event log: {report.store_events} events in the store, {report.indexed_events} in "
        f"the events index, up to position {report.head_position}"
    ]
    lines.extend(f"event log difference: {difference}" for difference in report.differences)
    if report.differences_total > len(report.differences):
        lines.append(
            f"event log: {report.differences_total - len(report.differences)} more differences"
        )
    return lines

"""A stream's events read back from the event store, for the projector to fill a gap.

Kafka can deliver an account's later event before an earlier one: after a producer
timeout within a partition, or across partitions once partitions were added. The
projector then folds the account from the event store instead (the truth), so a
document never skips a version.
"""

from __future__ import annotations

from typing import Any, Protocol

import psycopg

from chronos.errors import ChronosError
from chronos.event_store.reader import stream_events
from chronos.event_store.sessions import SessionBounds
from chronos.read_model.documents import EventRecord, record_from_stored

# The most events one gap may span; beyond it the projector stops and the operator
# rebuilds (a document that far behind is not a delivery reordering).
GAP_EVENTS_MAX = 100_000


class EventStoreUnavailable(ChronosError):
    """The event store could not be read; the batch is retried."""


class StreamHistory(Protocol):
    def events(
        self, stream_id: str, *, after_version: int, up_to_version: int
    ) -> list[EventRecord]:
        """The stream's events with ``after_version < version <= up_to_version``."""
        ...


class EventStoreHistory:
    """Reads streams over one lazily opened, bounded session (reopened after a failure)."""

    def __init__(self, dsn: str, bounds: SessionBounds | None = None) -> None:
        self._dsn = dsn
        self._bounds = bounds or SessionBounds()
        self._conn: psycopg.Connection[Any] | None = None

    def events(
        self, stream_id: str, *, after_version: int, up_to_version: int
    ) -> list[EventRecord]:
        assert up_to_version - after_version <= GAP_EVENTS_MAX
        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(
                    self._dsn,
                    autocommit=True,
                    connect_timeout=10,
                    application_name="chronos-projector",
                    **self._bounds.connection_kwargs(),
                )
            stored = stream_events(
                self._conn, stream_id, after_version=after_version, up_to_version=up_to_version
            )
        except psycopg.OperationalError as error:
            self.close()
            raise EventStoreUnavailable(f"reading stream {stream_id}: {error}") from error
        return [record_from_stored(event) for event in stored]

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

"""Reading the event store in position order (rebuild, reconcile, tests)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg

from chronos.event_store.mapper import StoredEvent

_SELECT = """SELECT position, event_id::text, stream_id::text, stream_version, event_type,
                    schema_version, payload, metadata, recorded_at, chain_hash
             FROM events"""


def _stored(row: tuple[Any, ...]) -> StoredEvent:
    return StoredEvent(
        position=row[0],
        event_id=row[1],
        stream_id=row[2],
        stream_version=row[3],
        event_type=row[4],
        schema_version=row[5],
        payload=bytes(row[6]),
        metadata=dict(row[7]),
        recorded_at=row[8],
        chain_hash=bytes(row[9] or b""),
    )


def head_position(conn: psycopg.Connection[Any]) -> int:
    """The position of the last committed event (0 when the store is empty)."""
    row = conn.execute("SELECT position FROM ledger_head WHERE id = 1").fetchone()
    assert row is not None, "ledger_head row missing: run `chronos db migrate`"
    return int(row[0])


def iter_events(
    conn: psycopg.Connection[Any],
    *,
    after_position: int = 0,
    up_to_position: int | None = None,
    batch_size: int = 5000,
) -> Iterator[StoredEvent]:
    """Yields events with ``after_position < position <= up_to_position`` in order.

    Reads in keyset-paginated batches of ``batch_size`` so memory stays bounded.
    """
    assert batch_size > 0
    last = after_position
    while True:
        if up_to_position is not None and last >= up_to_position:
            return
        limit_clause = "" if up_to_position is None else " AND position <= %(up_to)s"
        rows = conn.execute(
            f"{_SELECT} WHERE position > %(after)s{limit_clause} ORDER BY position LIMIT %(n)s",
            {"after": last, "up_to": up_to_position, "n": batch_size},
        ).fetchall()
        if not rows:
            return
        for row in rows:
            yield _stored(row)
        last = rows[-1][0]


def stream_events(
    conn: psycopg.Connection[Any], stream_id: str, *, up_to_version: int, after_version: int = 0
) -> list[StoredEvent]:
    """One stream's events with ``after_version < stream_version <= up_to_version``, in
    version order.

    Bounded by the caller's versions (reconcile passes a document's version, the
    projector the versions around a gap).
    """
    rows = conn.execute(
        f"{_SELECT} WHERE stream_id = %(stream)s AND stream_version > %(after)s"
        " AND stream_version <= %(up_to)s ORDER BY stream_version",
        {"stream": stream_id, "after": after_version, "up_to": up_to_version},
    ).fetchall()
    return [_stored(row) for row in rows]

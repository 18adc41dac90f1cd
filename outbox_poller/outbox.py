"""The outbox table as the relay uses it: the unpublished rows, marking them published,
pruning the published ones, and the backlog's size and age."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

# The most published rows one prune deletes (it runs again at the next interval).
PRUNE_BATCH_SIZE_MAX = 10_000


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One outbox row: the event's payload and headers, at its ledger position."""

    position: int
    key: str
    payload: bytes
    headers: dict[str, str]
    # When the writer's transaction committed (None unless the server tracks it).
    committed_at: datetime | None = None


def commit_times_tracked(conn: psycopg.Connection[Any]) -> bool:
    """Whether the server records commit times (``track_commit_timestamp``)."""
    row = conn.execute("SELECT current_setting('track_commit_timestamp') = 'on'").fetchone()
    return bool(row and row[0])


def fetch_unpublished(
    conn: psycopg.Connection[Any], batch_size_max: int, *, commit_times: bool
) -> list[OutboxRow]:
    """The lowest unpublished rows, in position order.

    Args:
        batch_size_max: The most rows to return.
        commit_times: Read each row's commit time (the server tracks them).
    """
    # An unpublished row was never updated, so its xmin is the writer's transaction,
    # and with track_commit_timestamp the server knows when that committed: the
    # publish latency then starts at the commit, not at recorded_at (taken in the
    # transaction's last statement, before the commit waited for its WAL flush).
    committed_at = "pg_xact_commit_timestamp(xmin)" if commit_times else "NULL"
    rows = conn.execute(
        f"""SELECT position, key, payload, headers, {committed_at} FROM outbox
            WHERE published_at IS NULL ORDER BY position LIMIT %s""",
        (batch_size_max,),
    ).fetchall()
    return [OutboxRow(row[0], row[1], bytes(row[2]), dict(row[3]), row[4]) for row in rows]


def mark_published(conn: psycopg.Connection[Any], positions: list[int]) -> None:
    """Marks the rows at ``positions`` published (call only once Kafka acknowledged them)."""
    conn.execute(
        "UPDATE outbox SET published_at = now() WHERE position = ANY(%s::bigint[])",
        (positions,),
    )


def prune_published(
    conn: psycopg.Connection[Any],
    retention_seconds: int,
    *,
    batch_size_max: int = PRUNE_BATCH_SIZE_MAX,
) -> int:
    """Deletes published rows older than the retention, in one bounded batch."""
    cursor = conn.execute(
        """DELETE FROM outbox WHERE position IN (
               SELECT position FROM outbox
               WHERE published_at IS NOT NULL
                 AND published_at < now() - make_interval(secs => %s)
               ORDER BY published_at LIMIT %s)""",
        (retention_seconds, batch_size_max),
    )
    return cursor.rowcount


def backlog(conn: psycopg.Connection[Any]) -> tuple[int, float]:
    """How many rows are unpublished, and the oldest one's age in seconds (a cheap
    index-only scan of the partial index on unpublished rows)."""
    row = conn.execute(
        """SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0)
           FROM outbox WHERE published_at IS NULL"""
    ).fetchone()
    assert row is not None
    return int(row[0]), float(row[1])

"""Fills a ledger database with many chained events fast, and measures ``verify``.

The events are written by the same SQL functions the writer's APPEND calls
(``chronos_chain_body``, ``chronos_advance_head``), from ``generate_series``, a chunk per
statement: a consistent chain and gapless positions, without the domain's rules (the
payloads are filler of a realistic size, the metadata a command's usual keys).

Measure ``chronos verify`` on this machine (the figure goes to docs/performance.md)::

    set -a; source /work/stack.env; set +a
    .venv/bin/python -m tests.integration.chain_support 200000
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

from chronos.audit.chain import GENESIS, ChainedEvent, chain_step, micros_since_epoch
from chronos.audit.verify import verify_chain
from chronos.domain.events import LinePosted
from chronos.event_store import mapper
from chronos.security.tokens import jwks_document, new_signing_key, private_key_pem

CHUNK_EVENTS = 20_000

_FILL = """
WITH staged AS MATERIALIZED (
    SELECT g AS ordinal, gen_random_uuid() AS stream_id, gen_random_uuid()::text AS request,
           decode(repeat(md5(g::text), 8), 'hex') AS payload
    FROM generate_series(1, %(count)s) AS g
), body AS MATERIALIZED (
    SELECT s.*, jsonb_build_object('request_id', s.request, 'correlation_id', s.request,
                                   'causation_id', s.request, 'principal', 'bench-admin',
                                   'principal_token_id', s.request) AS metadata
    FROM staged AS s
), head AS MATERIALIZED (
    SELECT * FROM chronos_advance_head(ARRAY(
        SELECT chronos_chain_body(b.stream_id, 1, 'LinePosted', 1, b.payload, b.metadata)
        FROM body AS b ORDER BY b.ordinal))
)
INSERT INTO events (position, event_id, stream_id, stream_version, event_type,
                    schema_version, payload, metadata, recorded_at, chain_hash)
SELECT head.base + b.ordinal, gen_random_uuid(), b.stream_id, 1, 'LinePosted', 1, b.payload,
       b.metadata, head.stamped_at, head.hashes[b.ordinal]
FROM body AS b CROSS JOIN head
"""


def fill_chained_events(conn: psycopg.Connection[Any], count: int) -> None:
    """Appends ``count`` chained events (autocommit connection: one commit per chunk)."""
    remaining = count
    while remaining > 0:
        chunk = min(CHUNK_EVENTS, remaining)
        conn.execute(_FILL, {"count": chunk})
        remaining -= chunk


@contextmanager
def trigger_disabled(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """Disables the immutability trigger, as the tables' owner can (after checking it
    refuses an edit), and enables it again."""
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("DELETE FROM events WHERE position = 1")
    conn.execute("ALTER TABLE events DISABLE TRIGGER events_no_update_or_delete")
    try:
        yield
    finally:
        conn.execute("ALTER TABLE events ENABLE TRIGGER events_no_update_or_delete")


def raise_amount(conn: psycopg.Connection[Any], position: int) -> None:
    row = conn.execute(
        "SELECT event_type, schema_version, payload FROM events WHERE position = %s",
        (position,),
    ).fetchone()
    assert row is not None
    event = mapper.decode(row[0], row[1], row[2])
    assert isinstance(event, LinePosted)
    forged = dataclasses.replace(event, amount_minor=event.amount_minor + 1_000_000)
    conn.execute(
        "UPDATE events SET payload = %s WHERE position = %s",
        (mapper.encode(forged)[2], position),
    )


# The columns ``chained_event`` takes, in its order.
EVENT_COLUMNS = """position, stream_id, stream_version, event_type, schema_version, payload,
                   metadata::text, recorded_at"""


def chained_event(row: tuple[Any, ...]) -> ChainedEvent:
    """A stored event, selected as ``EVENT_COLUMNS``, as the Python reference takes it."""
    return ChainedEvent(
        position=row[0],
        stream_id=row[1].bytes,
        stream_version=row[2],
        event_type=row[3],
        schema_version=row[4],
        payload=row[5],
        metadata_text=row[6],
        recorded_at_micros=micros_since_epoch(row[7]),
    )


def rewrite_chain_from(conn: psycopg.Connection[Any], position: int) -> None:
    """Forges the event at ``position`` and recomputes every later hash and the head, as
    an attacker who knows the encoding would: the stored chain is consistent again."""
    raise_amount(conn, position)
    rows = conn.execute(f"SELECT {EVENT_COLUMNS} FROM events ORDER BY position").fetchall()
    hash_ = GENESIS
    for row in rows:
        hash_ = chain_step(hash_, chained_event(row))
        if row[0] >= position:
            conn.execute("UPDATE events SET chain_hash = %s WHERE position = %s", (hash_, row[0]))
    conn.execute("UPDATE ledger_head SET chain_hash = %s", (hash_,))


def write_checkpoint_keys(directory: Path) -> tuple[Path, Path]:
    """A new checkpoint signing key file and the JWKS that trusts it, under ``directory``."""
    key = new_signing_key()
    key_file, jwks_file = directory / "checkpoint.pem", directory / "checkpoint-jwks.json"
    key_file.write_bytes(private_key_pem(key))
    jwks_file.write_text(json.dumps(jwks_document([key.public_key()])))
    return key_file, jwks_file


def _measure(event_count: int) -> None:
    from tests.integration.conftest import create_database, drop_database

    server_dsn = os.environ["CHRONOS_PG_DSN"]
    name, dsn = create_database(server_dsn)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            started = time.monotonic()
            fill_chained_events(conn, event_count)
            print(f"filled {event_count} events in {time.monotonic() - started:.1f} s")
            conn.execute("VACUUM ANALYZE events")
        for attempt in range(3):
            with psycopg.connect(dsn) as conn:
                started = time.monotonic()
                result = verify_chain(conn)
                elapsed = time.monotonic() - started
            assert result.intact, result.broken
            print(
                f"verify run {attempt + 1}: {result.events_checked} events in {elapsed:.2f} s "
                f"= {result.events_checked / elapsed:,.0f} events/s"
            )
    finally:
        drop_database(server_dsn, name)


if __name__ == "__main__":
    _measure(int(sys.argv[1]) if len(sys.argv) > 1 else 200_000)

"""Migration 0006 chains the events of a ledger written before the chain existed, and
0007 (the writer's cheaper chain step) extends a chain 0006 wrote."""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from pathlib import Path

import psycopg
import pytest

from chronos.audit.verify import BreakKind, verify_chain
from chronos.event_store.migrate import MIGRATIONS_DIR, migrate
from tests.integration.conftest import database_dsn, drop_database
from tests.integration.writer_helpers import open_funded, with_writers

_OLD_EVENTS = 500


def _write_as_before_the_chain(dsn: str) -> None:
    """Events as the writer wrote them before 0006: positions from ledger_head, no hash."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            """WITH head AS (
                   UPDATE ledger_head SET position = position + %(n)s,
                          recorded_at = clock_timestamp()
                   WHERE id = 1 RETURNING position - %(n)s AS base, recorded_at)
               INSERT INTO events (position, event_id, stream_id, stream_version, event_type,
                                   schema_version, payload, metadata, recorded_at)
               SELECT head.base + g, gen_random_uuid(), gen_random_uuid(), 1,
                      'FundsDeposited', 1, decode(md5(g::text), 'hex'),
                      %(metadata)s::jsonb || jsonb_build_object('request_id', 'r-' || g),
                      head.recorded_at - make_interval(secs => %(n)s - g)
               FROM generate_series(1, %(n)s) AS g CROSS JOIN head""",
            {
                "n": _OLD_EVENTS,
                "metadata": json.dumps(
                    {"principal": "ålice ✓", "nested": {"list": [1, 2.5, None]}},
                    ensure_ascii=False,
                ),
            },
        )


def _append_with_0006(dsn: str, count: int) -> None:
    """Events as the writer of 0006 appended them: through chronos_advance_head."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            """WITH staged AS MATERIALIZED (
                   SELECT g AS ordinal, gen_random_uuid() AS stream_id,
                          decode(md5(g::text), 'hex') AS payload,
                          jsonb_build_object('request_id', 'ré-' || g) AS metadata
                   FROM generate_series(1, %(n)s) AS g
               ), head AS MATERIALIZED (
                   SELECT * FROM chronos_advance_head(ARRAY(
                       SELECT chronos_chain_body(s.stream_id, 1, 'FundsDeposited', 1,
                                                 s.payload, s.metadata)
                       FROM staged AS s ORDER BY s.ordinal)))
               INSERT INTO events (position, event_id, stream_id, stream_version, event_type,
                                   schema_version, payload, metadata, recorded_at, chain_hash)
               SELECT head.base + s.ordinal, gen_random_uuid(), s.stream_id, 1,
                      'FundsDeposited', 1, s.payload, s.metadata, head.stamped_at,
                      head.hashes[s.ordinal]
               FROM staged AS s CROSS JOIN head""",
            {"n": count},
        )


def _migrations_through(tmp_path: Path, last: int) -> Path:
    """A directory with the migrations up to ``last``, as an older release shipped them."""
    directory = tmp_path / f"migrations_{last}"
    directory.mkdir()
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        if int(path.name[:4]) <= last:
            shutil.copy(path, directory)
    return directory


def test_the_migration_chains_a_ledger_written_before_it(pg_dsn: str, tmp_path: Path) -> None:
    before = _migrations_through(tmp_path, 5)
    name = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    dsn = database_dsn(pg_dsn, name)
    try:
        assert migrate(dsn, directory=before) == [1, 2, 3, 4, 5]
        _write_as_before_the_chain(dsn)

        assert migrate(dsn, directory=_migrations_through(tmp_path, 6)) == [6]
        with psycopg.connect(dsn, autocommit=True) as conn:
            result = verify_chain(conn)
            assert result.intact, result.broken
            assert (result.events_checked, result.head_position) == (_OLD_EVENTS, _OLD_EVENTS)
            # The trigger is back on: the migration disabled it for its own transaction.
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("UPDATE events SET chain_hash = chain_hash WHERE position = 1")
            nulls = conn.execute("SELECT count(*) FROM events WHERE chain_hash IS NULL")
            assert nulls.fetchone() == (0,)

        # Events the writer of 0006 chained, then 0007: today's writer extends both.
        _append_with_0006(dsn, 50)
        assert migrate(dsn) == [7]
        with psycopg.connect(dsn, autocommit=True) as conn:
            result = verify_chain(conn)
            assert result.intact, result.broken
            assert result.events_checked == _OLD_EVENTS + 50

        # The writer extends the migrated chain.
        asyncio.run(with_writers(dsn, lambda writers: open_funded(writers[0], 100)))
        with psycopg.connect(dsn, autocommit=True) as conn:
            result = verify_chain(conn)
            assert result.intact, result.broken
            assert result.events_checked > _OLD_EVENTS
            # And an edit of an old event is caught like any other.
            conn.execute("ALTER TABLE events DISABLE TRIGGER events_no_update_or_delete")
            conn.execute("UPDATE events SET metadata = '{}' WHERE position = 7")
            broken = verify_chain(conn).broken
            assert broken is not None
            assert (broken.position, broken.kind) == (7, BreakKind.HASH_MISMATCH)
    finally:
        drop_database(pg_dsn, name)

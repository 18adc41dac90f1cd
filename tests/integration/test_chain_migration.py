"""Migration 0006 chains the events of a ledger written before the chain existed."""

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


def test_the_migration_chains_a_ledger_written_before_it(pg_dsn: str, tmp_path: Path) -> None:
    before = tmp_path / "migrations"
    before.mkdir()
    for path in sorted(MIGRATIONS_DIR.glob("000[1-5]_*.sql")):
        shutil.copy(path, before)
    name = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    dsn = database_dsn(pg_dsn, name)
    try:
        assert migrate(dsn, directory=before) == [1, 2, 3, 4, 5]
        _write_as_before_the_chain(dsn)

        assert migrate(dsn) == [6]
        with psycopg.connect(dsn, autocommit=True) as conn:
            result = verify_chain(conn)
            assert result.intact, result.broken
            assert (result.events_checked, result.head_position) == (_OLD_EVENTS, _OLD_EVENTS)
            # The trigger is back on: the migration disabled it for its own transaction.
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("UPDATE events SET chain_hash = chain_hash WHERE position = 1")
            nulls = conn.execute("SELECT count(*) FROM events WHERE chain_hash IS NULL")
            assert nulls.fetchone() == (0,)

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

"""Versioned, idempotent schema migrations.

Migrations are the numbered ``migrations/NNNN_name.sql`` files, applied in order, each
in its own transaction, and recorded in ``schema_migrations`` with a checksum. Running
``migrate`` again applies only what is missing; an applied file whose text changed is an
error (a migration, once shipped, is never edited: add a new one). A transaction-level
advisory lock makes concurrent runs (several processes starting at once) safe.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg

from chronos.errors import ChronosError

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_FILE_PATTERN = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# Arbitrary constant key of the advisory lock that serializes migration runs.
_MIGRATION_LOCK_KEY = 0x43_48_52_4F_4E_4F_53


class MigrationError(ChronosError):
    """The schema cannot be brought to the current version."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_PATTERN.match(path.name)
        if match is None:
            raise MigrationError(f"migration file name {path.name!r} is not NNNN_name.sql")
        migrations.append(Migration(int(match.group(1)), match.group(2), path.read_text()))
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise MigrationError(f"migration versions must be 1..N without gaps, got {versions}")
    return migrations


def migrate(dsn: str, *, directory: Path = MIGRATIONS_DIR) -> list[int]:
    """Applies every missing migration to the database at ``dsn``.

    Args:
        dsn: The database.
        directory: Where the migration files are (tests bring a database to an older
            schema with a directory holding only the first files).

    Returns:
        The versions applied by this call (empty when the schema was current).

    Raises:
        MigrationError: the database is unreachable, a migration failed, or an applied
            migration's text no longer matches its file.
    """
    applied_now: list[int] = []
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
            conn.execute(
                """CREATE TABLE IF NOT EXISTS schema_migrations (
                       version    integer     PRIMARY KEY,
                       name       text        NOT NULL,
                       checksum   text        NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            for migration in load_migrations(directory):
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK_KEY,))
                    row = conn.execute(
                        "SELECT checksum FROM schema_migrations WHERE version = %s",
                        (migration.version,),
                    ).fetchone()
                    if row is not None:
                        if row[0] != migration.checksum:
                            raise MigrationError(
                                f"migration {migration.version} ({migration.name}) was changed "
                                "after it was applied; add a new migration instead"
                            )
                        continue
                    conn.execute(migration.sql.encode())
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) "
                        "VALUES (%s, %s, %s)",
                        (migration.version, migration.name, migration.checksum),
                    )
                    applied_now.append(migration.version)
    except psycopg.Error as error:
        raise MigrationError(f"migration failed: {error}") from error
    return applied_now

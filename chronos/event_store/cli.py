"""``chronos db migrate``: brings the PostgreSQL schema to the current version."""

from __future__ import annotations

import argparse
import sys

from chronos.config import PG_DSN, ConfigError
from chronos.event_store.migrate import MigrationError, migrate
from chronos.settings import SettingsGroup

SETTINGS = SettingsGroup(
    title="`chronos db migrate`",
    summary="Brings the PostgreSQL schema to the current version (`--dsn` overrides).",
    settings=(PG_DSN,),
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    db = subparsers.add_parser("db", help="event store database")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    migrate_parser = db_sub.add_parser("migrate", help="apply missing schema migrations")
    migrate_parser.add_argument(
        "--dsn",
        default="",
        help="PostgreSQL DSN (default: $CHRONOS_PG_DSN)",
    )
    migrate_parser.set_defaults(func=_run_migrate)


def _run_migrate(args: argparse.Namespace) -> int:
    try:
        dsn = args.dsn or PG_DSN.read()
    except ConfigError as error:
        print(f"chronos db migrate: {error}; or pass --dsn", file=sys.stderr)
        return 2
    try:
        applied = migrate(dsn)
    except MigrationError as error:
        print(f"chronos db migrate: {error}", file=sys.stderr)
        return 1
    print(f"applied migrations: {applied}" if applied else "schema is up to date")
    return 0

"""``chronos db migrate``: brings the PostgreSQL schema to the current version."""

from __future__ import annotations

import argparse
import os
import sys

from chronos.event_store.migrate import MigrationError, migrate


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    db = subparsers.add_parser("db", help="event store database")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    migrate_parser = db_sub.add_parser("migrate", help="apply missing schema migrations")
    migrate_parser.add_argument(
        "--dsn",
        default=os.environ.get("CHRONOS_PG_DSN", ""),
        help="PostgreSQL DSN (default: $CHRONOS_PG_DSN)",
    )
    migrate_parser.set_defaults(func=_run_migrate)


def _run_migrate(args: argparse.Namespace) -> int:
    if not args.dsn:
        print(
            "chronos db migrate: no database; set CHRONOS_PG_DSN (see `chronos-dev infra env`) "
            "or pass --dsn",
            file=sys.stderr,
        )
        return 2
    try:
        applied = migrate(args.dsn)
    except MigrationError as error:
        print(f"chronos db migrate: {error}", file=sys.stderr)
        return 1
    print(f"applied migrations: {applied}" if applied else "schema is up to date")
    return 0

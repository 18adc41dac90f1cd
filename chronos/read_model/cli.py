"""``chronos projection rebuild`` and ``chronos reconcile``.

Both read ``CHRONOS_PG_DSN`` and ``CHRONOS_ES_URL``; ``--index-prefix`` (default
``$CHRONOS_INDEX_PREFIX`` or ``chronos``) selects the read-side indices.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from chronos.config import ES_URL, PG_DSN, ConfigError
from chronos.errors import ChronosError
from chronos.read_model.config import INDEX_PREFIX
from chronos.read_model.indices import IndexNames
from chronos.settings import SettingsGroup

EXIT_DRIFT = 1
EXIT_CANNOT_CHECK = 2
WAIT_SECONDS_MAX = 3600.0

SETTINGS = SettingsGroup(
    title="`chronos projection rebuild` and `chronos reconcile`",
    summary="Operator commands over the event store and the read model "
    "(`--index-prefix` overrides the prefix).",
    settings=(PG_DSN, ES_URL, INDEX_PREFIX),
)


def register(subparsers: Any) -> None:
    """Adds ``projection`` (with ``rebuild``) and ``reconcile`` to the ``chronos`` parser."""
    projection = subparsers.add_parser("projection", help="manage the Elasticsearch read model")
    commands = projection.add_subparsers(dest="projection_command", required=True)
    rebuild = commands.add_parser(
        "rebuild",
        help="replay the event store into new index versions and swap the aliases",
        description=(
            "Replays every event of the PostgreSQL event store into new versions of the "
            "read-side indices, then swaps the aliases atomically while the live "
            "projection keeps serving. Progress goes to stderr."
        ),
    )
    _add_prefix(rebuild)
    rebuild.add_argument(
        "--batch-size", type=int, default=5000, help="events per read and bulk (1..50000)"
    )
    rebuild.add_argument("--keep-old", action="store_true", help="keep the previous index versions")
    rebuild.set_defaults(func=_rebuild)

    reconcile = subparsers.add_parser(
        "reconcile",
        help="compare the read model's balances with the event store; exit 1 on drift",
        description=(
            "Recomputes every balance from the event store, checks that each currency sums "
            "to zero, waits for the projection to reach the store's head, then compares. "
            "Exit codes: 0 no drift, 1 drift, 2 could not check (projection behind, "
            "servers unreachable)."
        ),
    )
    _add_prefix(reconcile)
    reconcile.add_argument(
        "--wait-seconds",
        type=float,
        default=30.0,
        help="how long to wait for the projection to reach the head (default 30)",
    )
    reconcile.set_defaults(func=_reconcile)


def _add_prefix(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--index-prefix",
        default=None,
        help="prefix of the read-side indices (default: $CHRONOS_INDEX_PREFIX or chronos)",
    )


def _index_names(args: argparse.Namespace) -> IndexNames:
    prefix = INDEX_PREFIX.read() if args.index_prefix is None else args.index_prefix
    return IndexNames(prefix=prefix)


def _format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m{rest:02d}s" if minutes else f"{rest}s"


def _rebuild(args: argparse.Namespace) -> int:
    import psycopg

    from chronos.read_model.client import elasticsearch_client
    from chronos.read_model.rebuild import Progress, rebuild

    if not 1 <= args.batch_size <= 50_000:
        print("chronos projection rebuild: --batch-size must be 1..50000", file=sys.stderr)
        return EXIT_CANNOT_CHECK
    try:
        names = _index_names(args)
        dsn, es_url = PG_DSN.read(), ES_URL.read()
    except (ConfigError, ValueError) as error:
        print(f"chronos projection rebuild: {error}", file=sys.stderr)
        return EXIT_CANNOT_CHECK

    def show(progress: Progress) -> None:
        share = 100.0 * progress.events / progress.events_total if progress.events_total else 100
        print(
            f"\r{progress.phase}: {progress.events:,}/{progress.events_total:,} events "
            f"({share:5.1f}%)  {progress.events_per_second:,.0f} events/s  "
            f"ETA {_format_seconds(progress.eta_seconds)}   ",
            end="",
            file=sys.stderr,
            flush=True,
        )

    es = elasticsearch_client(es_url, request_timeout=120)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            report = rebuild(
                conn, es, names, batch_size=args.batch_size, keep_old=args.keep_old, progress=show
            )
    except (ChronosError, psycopg.Error) as error:
        print(f"\nchronos projection rebuild: failed: {error}", file=sys.stderr)
        return 1
    finally:
        es.close()
    print(file=sys.stderr)
    print(
        f"rebuilt version {report.new_version}: {report.events:,} events "
        f"(head {report.head_position:,}, caught up to {report.final_position:,}), "
        f"{report.accounts:,} accounts; replay {report.replay_seconds:.1f} s "
        f"({report.events_per_second:,.0f} events/s), total {report.total_seconds:.1f} s"
    )
    if report.deleted:
        print(f"deleted old versions: {', '.join(report.deleted)}")
    elif report.old_indices:
        print(f"kept old versions: {', '.join(report.old_indices)}")
    return 0


def _reconcile(args: argparse.Namespace) -> int:
    import psycopg

    from chronos.read_model.client import elasticsearch_client
    from chronos.read_model.reconcile import ProjectionBehind, format_report, reconcile

    if not 0 <= args.wait_seconds <= WAIT_SECONDS_MAX:
        print(f"chronos reconcile: --wait-seconds must be 0..{WAIT_SECONDS_MAX:.0f}")
        return EXIT_CANNOT_CHECK
    try:
        names = _index_names(args)
        dsn, es_url = PG_DSN.read(), ES_URL.read()
    except (ConfigError, ValueError) as error:
        print(f"chronos reconcile: {error}", file=sys.stderr)
        return EXIT_CANNOT_CHECK
    es = elasticsearch_client(es_url, request_timeout=60)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            report = reconcile(conn, es, names, wait_seconds=args.wait_seconds)
    except ProjectionBehind as error:
        print(f"chronos reconcile: cannot compare: {error}", file=sys.stderr)
        return EXIT_CANNOT_CHECK
    except (ChronosError, psycopg.Error) as error:
        print(f"chronos reconcile: failed: {error}", file=sys.stderr)
        return EXIT_CANNOT_CHECK
    finally:
        es.close()
    print(format_report(report))
    return 0 if report.ok else EXIT_DRIFT

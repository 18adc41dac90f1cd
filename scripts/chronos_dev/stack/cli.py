"""``chronos-dev infra up|down|status|env``: the local PostgreSQL/Kafka/Elasticsearch stack."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from typing import Any

from chronos_dev.stack import InfraError
from chronos_dev.stack.stack import Stack
from chronos_dev.stack.state import ServerStatus

# `status` exits with this when a server is not running (like LSB's "not running").
EXIT_NOT_RUNNING = 3


def register(subparsers: Any) -> None:
    """Adds ``infra`` and its sub-commands to the ``chronos`` parser."""
    infra = subparsers.add_parser(
        "infra",
        help="run the local PostgreSQL, Kafka and Elasticsearch servers",
        description=(
            "Provision and run real PostgreSQL, Kafka and Elasticsearch servers under one "
            "directory ($CHRONOS_STACK_DIR, default <repo>/.stack), without Docker."
        ),
    )
    commands = infra.add_subparsers(dest="infra_command", required=True)

    up = commands.add_parser("up", help="provision and start the servers (idempotent)")
    up.set_defaults(func=_up)

    down = commands.add_parser("down", help="stop the servers this stack started")
    down.add_argument(
        "--purge", action="store_true", help="also delete the stack directory (data, downloads)"
    )
    down.set_defaults(func=_down)

    status = commands.add_parser("status", help="show the servers; exit 3 unless all run")
    status.set_defaults(func=_status)

    env = commands.add_parser("env", help='print export lines: eval "$(chronos-dev infra env)"')
    env.set_defaults(func=_env)


def _progress(message: str) -> None:
    print(f"chronos-dev infra: {message}", file=sys.stderr, flush=True)


def _fail(error: InfraError) -> int:
    print(f"chronos-dev infra: error: {error}", file=sys.stderr, flush=True)
    return 1


def _up(args: argparse.Namespace) -> int:
    stack = Stack()
    started_seconds = time.monotonic()
    try:
        started = stack.up(progress=_progress)
        rows = stack.status()
    except InfraError as error:
        return _fail(error)
    elapsed_seconds = time.monotonic() - started_seconds
    if started:
        _progress(f"started {', '.join(started)} in {elapsed_seconds:.1f} s")
    else:
        _progress("everything was already running")
    _print_table(rows)
    return 0 if all(row.is_usable for row in rows) else EXIT_NOT_RUNNING


def _down(args: argparse.Namespace) -> int:
    try:
        Stack().down(purge=args.purge, progress=_progress)
    except InfraError as error:
        return _fail(error)
    return 0


def _status(args: argparse.Namespace) -> int:
    try:
        rows = Stack().status()
    except InfraError as error:
        return _fail(error)
    _print_table(rows)
    return 0 if all(row.is_usable for row in rows) else EXIT_NOT_RUNNING


def _env(args: argparse.Namespace) -> int:
    try:
        values = Stack().environment()
    except InfraError as error:
        return _fail(error)
    for name, value in values.items():
        print(f"export {name}={shlex.quote(value)}")
    return 0


def _print_table(rows: list[ServerStatus]) -> None:
    header = ("SERVER", "STATE", "PID", "ADDRESS", "LOG")
    table = [header] + [
        (row.name, row.state, str(row.pid) if row.pid else "-", row.address, row.log_path)
        for row in rows
    ]
    widths = [max(len(line[column]) for line in table) for column in range(len(header))]
    for line in table:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        )

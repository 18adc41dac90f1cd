"""The ``chronos-dev`` command line: ``infra``, ``services``, ``bench`` and ``loadtest``.

``bench`` and ``loadtest`` hand the rest of the command line to their own parsers
(``chronos-dev bench --help``), so their options are declared once, in their packages.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from chronos_dev import foreground
from chronos_dev.stack import cli as stack_cli
from chronos_dev.stack.stack import default_stack_dir

# Where the services listen unless the environment says otherwise; the same defaults as
# the servers' own (command_server/config.py, query_server/config.py).
COMMAND_ADDR_DEFAULT = "127.0.0.1:50051"
QUERY_ADDR_DEFAULT = "127.0.0.1:50052"
# The console's own default (query_server/console/config.py).
CONSOLE_ADDR_DEFAULT = "127.0.0.1:8080"


def _bench(argv: list[str]) -> int:
    from chronos_dev.bench.cli import main

    return main(argv)


def _loadtest(argv: list[str]) -> int:
    from chronos_dev.loadtest.cli import main

    return main(argv)


# Sub-commands with parsers of their own: everything after the name goes to them.
_PASS_THROUGH: dict[str, Callable[[list[str]], int]] = {"bench": _bench, "loadtest": _loadtest}


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``infra`` and ``services`` (``bench``/``loadtest`` are listed only)."""
    parser = argparse.ArgumentParser(
        prog="chronos-dev", description="Chronos development tools (not part of the product)."
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    stack_cli.register(subparsers)
    services = subparsers.add_parser(
        "services",
        help="run the four services and the console in the foreground until Ctrl-C",
        description=(
            "Start the command server, query server, outbox poller and projector, and the "
            "ledger console, with the environment's settings (e.g. after "
            'eval "$(chronos-dev infra env)"), wait until '
            "they serve, print the endpoints and grpcurl lines to paste (TLS and a token "
            "when the environment configures them), and stop them all on Ctrl-C/SIGTERM or "
            "when one of them exits (exit status 1)."
        ),
    )
    services.add_argument(
        "--command-addr", default=os.environ.get("CHRONOS_COMMAND_ADDR") or COMMAND_ADDR_DEFAULT
    )
    services.add_argument(
        "--query-addr", default=os.environ.get("CHRONOS_QUERY_ADDR") or QUERY_ADDR_DEFAULT
    )
    services.add_argument(
        "--console-addr",
        default=os.environ.get("CHRONOS_CONSOLE_ADDRESS") or CONSOLE_ADDR_DEFAULT,
        help="where the ledger console serves HTTP (loopback only)",
    )
    services.add_argument(
        "--console-token-file",
        type=Path,
        default=default_stack_dir() / "secrets" / "console-token",
        help="where the console's ledger:read token is written (default: <stack>/secrets)",
    )
    services.add_argument(
        "--log-dir",
        type=Path,
        default=default_stack_dir() / "logs" / "services",
        help="one log per service (default: <stack>/logs/services)",
    )
    services.add_argument(
        "--trace-dir",
        type=Path,
        default=Path(os.environ["CHRONOS_TRACE_DIR"])
        if os.environ.get("CHRONOS_TRACE_DIR")
        else None,
        help="write each service's spans to <dir>/<service>.jsonl (default: $CHRONOS_TRACE_DIR)",
    )
    services.set_defaults(func=_services)
    for name, what in (("bench", "the one-command benchmark"), ("loadtest", "the load test")):
        subparsers.add_parser(name, help=f"{what} (chronos-dev {name} --help)", add_help=False)
    return parser


def _services(args: argparse.Namespace) -> int:
    return foreground.run_foreground(
        command_addr=args.command_addr,
        query_addr=args.query_addr,
        console_spec=foreground.ConsoleSpec(args.console_addr, args.console_token_file),
        log_dir=args.log_dir,
        trace_dir=args.trace_dir,
    )


def main(argv: list[str] | None = None) -> int:
    """Runs ``chronos-dev``; returns the exit status."""
    arguments = sys.argv[1:] if argv is None else argv
    if arguments and arguments[0] in _PASS_THROUGH:
        return _PASS_THROUGH[arguments[0]](arguments[1:])
    args = build_parser().parse_args(arguments)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())

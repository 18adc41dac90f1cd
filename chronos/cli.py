"""The ``chronos`` command line: the product's operator commands, one group per area
(``db``, ``projection``, ``reconcile``, ``token``, ``top``, ``trace``, ``verify``).

Each area module exposes ``register(subparsers)`` which adds its parsers and sets
``func`` (a callable taking the parsed namespace and returning an exit code).
The development tools (local stack, bench, load test) are ``chronos-dev``, a separate
distribution under ``scripts/``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# Each module's register() adds its own sub-commands.
_AREAS = (
    "chronos.event_store.cli",
    "chronos.read_model.cli",
    "chronos.security.cli",
    "chronos.top",
    "chronos.trace_view",
    "chronos.audit.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chronos", description="Chronos ledger tools.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module_name in _AREAS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            # An area whose module is not present yet simply has no sub-command.
            if error.name == module_name:
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except BrokenPipeError:
        # The reader went away (e.g. `chronos trace … | head`): not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())

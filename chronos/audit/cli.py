"""``chronos verify``: recomputes the events' hash chain and checks it (docs/audit.md).

Exit 0 and a summary when the chain is intact; exit 1, the first position where it
breaks and what differs (on stdout, and as a log line) when it is not; exit 2 when it
cannot be checked (no database, a resume point without a trusted checkpoint).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import TextIO

import psycopg

from chronos.audit.chain import GENESIS
from chronos.audit.verify import VerifyResult, verify_chain
from chronos.config import PG_DSN, ConfigError
from chronos.settings import SettingsGroup

SETTINGS = SettingsGroup(
    title="`chronos verify`",
    summary="Recomputes the events' hash chain and checks it (`--dsn` overrides).",
    settings=(PG_DSN,),
)

log = logging.getLogger("chronos.audit.verify")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("verify", help="check the events' hash chain")
    parser.add_argument("--dsn", default="", help="PostgreSQL DSN (default: $CHRONOS_PG_DSN)")
    parser.add_argument(
        "--from-position",
        type=int,
        default=0,
        help="resume after this position; needs --from-hash (a trusted checkpoint's hash)",
    )
    parser.add_argument(
        "--from-hash",
        default="",
        help="the trusted chain hash (hex) at --from-position, from a signed checkpoint",
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bar, even on a terminal"
    )
    parser.set_defaults(func=_run_verify)


def _run_verify(args: argparse.Namespace) -> int:
    try:
        dsn = args.dsn or PG_DSN.read()
    except ConfigError as error:
        print(f"chronos verify: {error}; or pass --dsn", file=sys.stderr)
        return 2
    start_hash = GENESIS
    if args.from_position < 0:
        print("chronos verify: --from-position must be >= 0", file=sys.stderr)
        return 2
    if args.from_position > 0:
        try:
            start_hash = bytes.fromhex(args.from_hash)
        except ValueError:
            start_hash = b""
        if len(start_hash) != len(GENESIS):
            print(
                "chronos verify: resuming from a position needs --from-hash, the 64 hex "
                "digits of a trusted checkpoint's chain hash at that position",
                file=sys.stderr,
            )
            return 2
    bar = _ProgressBar(sys.stderr) if sys.stderr.isatty() and not args.no_progress else None
    started = time.monotonic()
    try:
        with psycopg.connect(dsn, connect_timeout=10) as conn:
            result = verify_chain(
                conn,
                from_position=args.from_position,
                from_hash=start_hash,
                progress=bar.update if bar else None,
            )
    except psycopg.Error as error:
        print(f"chronos verify: cannot read the event store: {error}", file=sys.stderr)
        return 2
    if bar is not None:
        bar.close()
    return _report(result, time.monotonic() - started, sys.stdout)


def _report(result: VerifyResult, elapsed_seconds: float, out: TextIO) -> int:
    rate = result.events_checked / elapsed_seconds if elapsed_seconds > 0 else 0.0
    if result.broken is None:
        print(
            f"chain intact: positions {result.from_position + 1}..{result.head_position}, "
            f"{result.events_checked} events in {elapsed_seconds:.1f} s "
            f"({rate:,.0f} events/s), {result.checkpoints_matched} signed checkpoints "
            f"agree; head chain hash {result.last_hash.hex()}",
            file=out,
        )
        return 0
    broken = result.broken
    print(
        f"chain BROKEN at position {broken.position}: {broken.kind.value}: {broken.detail}",
        file=out,
    )
    log.error(
        "verify failed at position %d (%s): %s", broken.position, broken.kind.name, broken.detail
    )
    return 1


class _ProgressBar:
    """A one-line progress bar, redrawn at most a few times a second."""

    _REDRAW_SECONDS = 0.25
    _WIDTH = 30

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._started = time.monotonic()
        self._drawn = 0.0

    def update(self, position: int, head_position: int) -> None:
        now = time.monotonic()
        if now - self._drawn < self._REDRAW_SECONDS:
            return
        self._drawn = now
        share = position / head_position if head_position else 1.0
        filled = int(share * self._WIDTH)
        rate = position / max(now - self._started, 1e-9)
        self._stream.write(
            f"\rverify [{'#' * filled}{'.' * (self._WIDTH - filled)}] "
            f"{position}/{head_position} ({rate:,.0f} events/s)"
        )
        self._stream.flush()

    def close(self) -> None:
        self._stream.write("\n")
        self._stream.flush()

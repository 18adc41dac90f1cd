"""``chronos verify``: recomputes the events' hash chain and checks it (docs/audit.md).

Exit 0 and a summary when the chain is intact and every checkpoint is trusted; exit 1,
the first position where it breaks and what differs, and every checkpoint that is not
trusted (on stdout, and as log lines) otherwise; exit 2 when it cannot be checked (no
database, no Kafka, a resume point without a trusted checkpoint).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

import psycopg

from chronos.audit.chain import GENESIS
from chronos.audit.checkpoint import decode_and_check, public_keys_from_jwks
from chronos.audit.kafka_checkpoints import CheckpointsUnavailable, read_checkpoint_messages
from chronos.audit.settings import CHECKPOINT_JWKS_FILE, CHECKPOINTS_TOPIC, checkpoints_topic
from chronos.audit.verify import VerifyResult, trusted_checkpoints, verify_chain
from chronos.config import (
    EVENTS_TOPIC,
    KAFKA_BOOTSTRAP,
    KAFKA_SECURITY_SETTINGS,
    PG_DSN,
    ConfigError,
)
from chronos.errors import ChronosError
from chronos.settings import SettingsGroup

SETTINGS = SettingsGroup(
    title="`chronos verify`",
    summary="Recomputes the events' hash chain and checks it against the signed checkpoints "
    "(`--dsn` overrides the DSN).",
    settings=(
        PG_DSN,
        CHECKPOINT_JWKS_FILE,
        KAFKA_BOOTSTRAP,
        *KAFKA_SECURITY_SETTINGS,
        EVENTS_TOPIC,
        CHECKPOINTS_TOPIC,
    ),
)

log = logging.getLogger("chronos.audit.verify")


class _Unverifiable(ChronosError):
    """The chain cannot be checked as asked (exit 2)."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("verify", help="check the events' hash chain")
    parser.add_argument("--dsn", default="", help="PostgreSQL DSN (default: $CHRONOS_PG_DSN)")
    parser.add_argument(
        "--from-position",
        type=int,
        default=0,
        help="resume after this position, from the trusted checkpoint there (or --from-hash)",
    )
    parser.add_argument(
        "--from-hash",
        default="",
        help="the trusted chain hash (hex) at --from-position, e.g. from a signed checkpoint",
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bar, even on a terminal"
    )
    parser.set_defaults(func=_run_verify)


def _run_verify(args: argparse.Namespace) -> int:
    try:
        dsn = args.dsn or PG_DSN.read()
        trusted, problems = _checkpoints()
        start_hash = _start_hash(args.from_position, args.from_hash, trusted)
    except (ConfigError, _Unverifiable) as error:
        print(f"chronos verify: {error}", file=sys.stderr)
        return 2
    bar = (
        _ProgressBar(sys.stderr, args.from_position)
        if sys.stderr.isatty() and not args.no_progress
        else None
    )
    started = time.monotonic()
    try:
        with psycopg.connect(dsn, connect_timeout=10) as conn:
            result = verify_chain(
                conn,
                from_position=args.from_position,
                from_hash=start_hash,
                checkpoints=trusted,
                progress=bar.update if bar else None,
            )
    except psycopg.Error as error:
        print(f"chronos verify: cannot read the event store: {error}", file=sys.stderr)
        return 2
    if bar is not None:
        bar.close()
    for problem in problems:
        print(f"untrusted {problem}")
        log.error("verify: untrusted %s", problem)
    code = _report(result, time.monotonic() - started, sys.stdout)
    return code or (1 if problems else 0)


def _checkpoints() -> tuple[dict[int, bytes] | None, list[str]]:
    """The trusted checkpoints from Kafka and the problems of the others; (None, []) when
    no JWKS is configured (then only the stored chain is checked)."""
    jwks_file = CHECKPOINT_JWKS_FILE.read()
    if not jwks_file:
        print(
            f"note: {CHECKPOINT_JWKS_FILE.name} is not set: signed checkpoints are not "
            "checked, so a consistent rewrite of the chain would go unseen",
            file=sys.stderr,
        )
        return None, []
    try:
        public_keys = public_keys_from_jwks(json.loads(Path(jwks_file).read_text()))
    except (OSError, ValueError, KeyError) as error:
        raise _Unverifiable(f"cannot read the checkpoint keys in {jwks_file}: {error}") from error
    topic = checkpoints_topic(EVENTS_TOPIC.read(), CHECKPOINTS_TOPIC.read())
    try:
        messages = read_checkpoint_messages(KAFKA_BOOTSTRAP.read(), topic)
    except CheckpointsUnavailable as error:
        raise _Unverifiable(str(error)) from error
    return trusted_checkpoints(decode_and_check(m, public_keys) for m in messages)


def _start_hash(from_position: int, from_hash: str, trusted: Mapping[int, bytes] | None) -> bytes:
    if from_position < 0:
        raise _Unverifiable("--from-position must be >= 0")
    if from_position == 0:
        return GENESIS
    if from_hash:
        try:
            start = bytes.fromhex(from_hash)
        except ValueError:
            start = b""
        if len(start) != len(GENESIS):
            raise _Unverifiable("--from-hash must be the 64 hex digits of a chain hash")
        return start
    signed = (trusted or {}).get(from_position)
    if signed is None:
        raise _Unverifiable(
            f"no trusted checkpoint at position {from_position} to resume from: pick a "
            "checkpoint's position, or pass --from-hash"
        )
    return signed


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

    def __init__(self, stream: TextIO, from_position: int) -> None:
        self._stream = stream
        self._from_position = from_position
        self._started = time.monotonic()
        self._drawn = 0.0

    def update(self, position: int, head_position: int) -> None:
        now = time.monotonic()
        if now - self._drawn < self._REDRAW_SECONDS:
            return
        self._drawn = now
        share = position / head_position if head_position else 1.0
        filled = int(share * self._WIDTH)
        rate = (position - self._from_position) / max(now - self._started, 1e-9)
        self._stream.write(
            f"\rverify [{'#' * filled}{'.' * (self._WIDTH - filled)}] "
            f"{position}/{head_position} ({rate:,.0f} events/s)"
        )
        self._stream.flush()

    def close(self) -> None:
        self._stream.write("\n")
        self._stream.flush()

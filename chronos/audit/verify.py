"""Recomputes the hash chain from the event store and names the first place it breaks.

The events are read in position order through a server-side cursor, a page at a time,
in one read-only REPEATABLE READ transaction, so memory stays bounded and the head and
the events are one consistent snapshot. Every hash is recomputed in Python
(:mod:`chronos.audit.chain`) from the stored columns: nothing the database computed is
trusted except the columns themselves. The trusted checkpoints (signed, kept outside
the database) catch what the stored hashes cannot: a chain rewritten consistently.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from chronos.audit.chain import GENESIS, chain_step_encoded, encode
from chronos.audit.checkpoint import CheckedCheckpoint

# Rows per round trip of the server-side cursor: large enough that the round trips
# cost little next to the hashing, small enough to keep memory bounded.
PAGE_SIZE_ROWS = 20_000

# The stored columns in the bytes the encoding takes, converted by PostgreSQL's own
# output functions (no function of the ledger's): the UUID's 16 bytes, UTF-8 text, the
# jsonb's text, the recorded time as microseconds since the epoch. Hashing them is
# verify's job alone.
_EVENTS = """SELECT position, uuid_send(stream_id), stream_version,
                    convert_to(event_type, 'UTF8'), schema_version, payload,
                    convert_to(metadata::text, 'UTF8'),
                    (extract(epoch FROM recorded_at) * 1000000)::bigint, chain_hash
             FROM events WHERE position > %s ORDER BY position"""


class BreakKind(enum.Enum):
    """How the chain is broken."""

    HASH_MISMATCH = "the stored chain hash differs from the recomputed one"
    MISSING_POSITION = "a position is missing"
    OUT_OF_ORDER = "recorded times go backwards"
    HEAD_MISMATCH = "ledger_head does not match the last event"
    CHECKPOINT_MISMATCH = "a signed checkpoint disagrees with the recomputed chain"


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainBreak:
    """The first place the chain breaks.

    Attributes:
        position: The first position where it breaks.
        kind: What is wrong there.
        detail: What differs, for a person (e.g. stored vs recomputed hash).
    """

    position: int
    kind: BreakKind
    detail: str


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifyResult:
    """What ``verify_chain`` found.

    Attributes:
        from_position: The position the check started after (0: from genesis).
        head_position: ledger_head's position in the snapshot checked.
        events_checked: Events whose hash was recomputed.
        last_hash: The recomputed hash of the last event checked.
        checkpoints_matched: Trusted checkpoints that agreed with the chain.
        broken: The first break, or None when the chain is intact.
    """

    from_position: int
    head_position: int
    events_checked: int
    last_hash: bytes
    checkpoints_matched: int
    broken: ChainBreak | None

    @property
    def intact(self) -> bool:
        return self.broken is None


def trusted_checkpoints(
    checked: Iterable[CheckedCheckpoint],
) -> tuple[dict[int, bytes], list[str]]:
    """Splits checkpoints read back into the trusted ones and the reported problems.

    Returns:
        The trusted checkpoints (position -> chain hash), and one line per checkpoint
        that is not trusted (bad signature, unknown key, malformed) or that contradicts
        another trusted one at the same position (then neither is trusted).
    """
    trusted: dict[int, bytes] = {}
    contradicted: set[int] = set()
    problems: list[str] = []
    for item in checked:
        where = (
            f"checkpoint at position {item.checkpoint.position}"
            if item.checkpoint is not None
            else "checkpoint"
        )
        if not item.trusted or item.checkpoint is None:
            problems.append(f"{where}: {item.problem}, not trusted")
            continue
        known = trusted.get(item.checkpoint.position)
        if known is not None and known != item.checkpoint.chain_hash:
            contradicted.add(item.checkpoint.position)
            problems.append(f"{where}: two signed checkpoints disagree, neither is trusted")
        trusted[item.checkpoint.position] = item.checkpoint.chain_hash
    for position in contradicted:
        del trusted[position]
    return trusted, problems


# Called with (position reached, head position) every page.
Progress = Callable[[int, int], None]


def verify_chain(
    conn: psycopg.Connection[Any],
    *,
    from_position: int = 0,
    from_hash: bytes = GENESIS,
    checkpoints: Mapping[int, bytes] | None = None,
    progress: Progress | None = None,
) -> VerifyResult:
    """Recomputes the chain after ``from_position`` and checks everything it covers.

    Args:
        conn: A connection to the ledger database (not in a transaction).
        from_position: Start after this position (0: from genesis).
        from_hash: The trusted chain hash at ``from_position``.
        checkpoints: Trusted (signature-checked) checkpoints: position -> chain hash.
        progress: Called after every page with (position reached, head position).

    Returns:
        The result; ``broken`` names the first break, if any.
    """
    trusted = dict(checkpoints or {})
    with conn.transaction(), conn.cursor() as plain:
        plain.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        head = plain.execute("SELECT position, chain_hash FROM ledger_head WHERE id = 1").fetchone()
        assert head is not None, "ledger_head row missing: run `chronos db migrate`"
        head_position, head_hash = int(head[0]), bytes(head[1])
        with conn.cursor(name="chronos_verify", binary=True) as cursor:
            cursor.itersize = PAGE_SIZE_ROWS
            cursor.execute(_EVENTS, (from_position,))
            walk = _Walk(from_position, from_hash, trusted)
            while walk.broken is None:
                rows = cursor.fetchmany(PAGE_SIZE_ROWS)
                if not rows:
                    break
                walk.check_rows(rows)
                if progress is not None:
                    progress(walk.position, head_position)
    if walk.broken is None:
        walk.check_end(head_position, head_hash)
    return VerifyResult(
        from_position=from_position,
        head_position=head_position,
        events_checked=walk.position - from_position,
        last_hash=walk.hash,
        checkpoints_matched=walk.checkpoints_matched,
        broken=walk.broken,
    )


class _Walk:
    """The state of a walk along the chain: where it is, its hash, its first break."""

    def __init__(self, position: int, hash_: bytes, checkpoints: dict[int, bytes]) -> None:
        self.position = position
        self.hash = hash_
        self.recorded_at_micros = -(2**63)
        self.checkpoints = checkpoints
        self.checkpoints_matched = 0
        self.last_checkpoint_matched = 0
        self.broken: ChainBreak | None = None

    def check_rows(self, rows: list[tuple[Any, ...]]) -> None:
        position, hash_, micros_before = self.position, self.hash, self.recorded_at_micros
        checkpoints = self.checkpoints
        for row in rows:
            if row[0] != position + 1:
                detail = f"position {position + 1} is missing: the next event stored is {row[0]}"
                missing = BreakKind.MISSING_POSITION
                return self._fail(position, hash_, micros_before, missing, detail)
            micros = row[7]
            if micros < micros_before:
                detail = f"recorded at {_moment(micros)}, before the event at position {position}"
                return self._fail(position, hash_, micros_before, BreakKind.OUT_OF_ORDER, detail)
            recomputed = chain_step_encoded(
                hash_, encode(row[0], row[1], row[2], row[3], row[4], row[5], row[6], micros)
            )
            if recomputed != row[8]:
                detail = f"stored chain hash {bytes(row[8]).hex()}, recomputed {recomputed.hex()}"
                return self._fail(position, hash_, micros_before, BreakKind.HASH_MISMATCH, detail)
            position, hash_, micros_before = row[0], recomputed, micros
            if checkpoints and position in checkpoints:
                self._stop_at(position, hash_, micros_before)
                if checkpoints[position] != hash_:
                    return self._checkpoint_break(position, checkpoints[position])
                self.checkpoints_matched += 1
                self.last_checkpoint_matched = position
        self._stop_at(position, hash_, micros_before)
        return None

    def _fail(self, reached: int, hash_: bytes, micros: int, kind: BreakKind, detail: str) -> None:
        """The chain checked out up to ``reached`` and breaks at the position after it."""
        self._stop_at(reached, hash_, micros)
        self._break(reached + 1, kind, detail)

    def _stop_at(self, position: int, hash_: bytes, micros: int) -> None:
        self.position, self.hash, self.recorded_at_micros = position, hash_, micros

    def check_end(self, head_position: int, head_hash: bytes) -> None:
        beyond = sorted(p for p in self.checkpoints if p > self.position)
        if self.position < head_position:
            self._break(
                self.position + 1,
                BreakKind.MISSING_POSITION,
                f"positions {self.position + 1}..{head_position} are missing: ledger_head is "
                f"at {head_position}, the last event stored at {self.position}",
            )
        elif self.position > head_position:
            self._break(
                head_position,
                BreakKind.HEAD_MISMATCH,
                f"ledger_head is at position {head_position}, behind the last event "
                f"stored at {self.position}",
            )
        elif head_hash != self.hash:
            self._break(
                head_position,
                BreakKind.HEAD_MISMATCH,
                f"ledger_head's chain hash {head_hash.hex()}, recomputed {self.hash.hex()}",
            )
        elif beyond:
            self._break(
                beyond[0],
                BreakKind.CHECKPOINT_MISMATCH,
                f"a signed checkpoint is at position {beyond[0]}, beyond the ledger's head "
                f"{head_position}: events were removed",
            )

    def _checkpoint_break(self, position: int, signed: bytes) -> None:
        since = (
            f" (the last agreeing checkpoint is at {self.last_checkpoint_matched})"
            if self.last_checkpoint_matched
            else ""
        )
        self._break(
            position,
            BreakKind.CHECKPOINT_MISMATCH,
            f"the checkpoint at position {position} signed chain hash {signed.hex()}, the "
            f"events recompute to {self.hash.hex()}: the chain was rewritten at or before "
            f"this position{since}",
        )

    def _break(self, position: int, kind: BreakKind, detail: str) -> None:
        self.broken = ChainBreak(position=position, kind=kind, detail=detail)


def _moment(micros: int) -> str:
    """Microseconds since the epoch as ISO 8601, for a person."""
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)).isoformat()

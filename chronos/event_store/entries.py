"""The event store's I/O for ReverseEntry: an entry's lines by its id, and which
entries were reversed.

Every line event's (entry id, line index) is indexed in ``entry_lines`` by the
transaction that appends it, and every reversal recorded in ``entry_reversals``; the
rules that use them are :mod:`chronos.domain.reversals`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import psycopg

from chronos.domain.commands import Command, OriginalLine, ReverseEntry
from chronos.domain.events import LinePosted
from chronos.domain.reversals import original_line
from chronos.event_store import mapper, sql
from chronos.event_store.decisions import BatchDecision


async def read_entry(conn: psycopg.AsyncConnection[Any], entry_id: str) -> tuple[OriginalLine, ...]:
    """The lines of entry ``entry_id`` in line order; empty when no entry has the id.

    Args:
        conn: Any connection: the lines of a posted entry never change, so they need
            no lock and no transaction.
        entry_id: A canonical UUID.
    """
    cursor = await conn.execute(sql.READ_ENTRY_LINES, (entry_id,))
    lines: list[OriginalLine] = []
    for event_type, schema_version, payload in await cursor.fetchall():
        event = mapper.decode(str(event_type), int(schema_version), bytes(payload))
        assert isinstance(event, LinePosted), f"entry_lines names a {event_type}"
        assert event.entry_id == entry_id, "entry_lines names another entry's event"
        lines.append(original_line(event))
    return tuple(lines)


def entries_named(commands: Iterable[Command]) -> list[str]:
    """The ids of the entries ``commands`` would reverse, each once, sorted."""
    return sorted({c.entry_id for c in commands if isinstance(c, ReverseEntry)})


def with_original(command: Command, originals: Mapping[str, tuple[OriginalLine, ...]]) -> Command:
    """``command`` with the lines of the entry it reverses, if it is a ReverseEntry
    (``originals`` holds every entry :func:`entries_named` named); any other command as
    it is."""
    if not isinstance(command, ReverseEntry):
        return command
    return replace(command, original=originals[command.entry_id])


async def load_reversals(
    conn: psycopg.AsyncConnection[Any], commands: Sequence[Command]
) -> psycopg.AsyncCursor[Any] | None:
    """Queues the read of the recorded reversals of the entries ``commands`` would
    reverse (None: they reverse nothing). Send it after the accounts' locks."""
    entry_ids = entries_named(commands)
    if not entry_ids:
        return None
    return await conn.execute(sql.LOAD_REVERSALS, (json.dumps(entry_ids),))


async def reversals_read(cursor: psycopg.AsyncCursor[Any] | None) -> dict[str, str]:
    """The reversal's entry id of each reversed entry :func:`load_reversals` found."""
    if cursor is None:
        return {}
    return {str(row[0]): str(row[1]) for row in await cursor.fetchall()}


async def save_entries(conn: psycopg.AsyncConnection[Any], decision: BatchDecision) -> None:
    """Queues the index rows of the batch's lines and the rows of its reversals."""
    lines = decision.entry_lines()
    if lines:
        await conn.execute(sql.INSERT_ENTRY_LINES, (json.dumps(lines),))
    if decision.reversals:
        await conn.execute(sql.INSERT_REVERSALS, (json.dumps(decision.reversals),))

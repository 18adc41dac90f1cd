"""The hash chain the writer computes in SQL agrees with the Python reference, row by row."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import psycopg

from chronos.audit.chain import GENESIS, ChainedEvent, chain_step
from chronos.audit.verify import verify_chain
from chronos.domain import validation
from chronos.domain.commands import Command, Deposit, TransferFunds
from chronos.event_store.writer import CommandContext, LedgerWriter
from tests.integration.chain_support import EVENT_COLUMNS, chained_event
from tests.integration.writer_helpers import eur, new_id, open_funded, with_writers

# Keys out of order, unicode (beyond the BMP too), escapes, nesting, numbers PostgreSQL
# prints in its own way: the jsonb text is what is hashed, on both sides.
_NESTED_METADATA = {
    "zeta": 'ünïcødé 🦄 "quoted" \\ back\nslash',
    "a": {"nested": [1, 2.50, 1e3, -0.0, True, None, {"deep": "日本語"}]},
    "big": 12345678901234567890,
}


def _stored(conn: psycopg.Connection[Any]) -> list[tuple[ChainedEvent, bytes]]:
    rows = conn.execute(
        f"SELECT {EVENT_COLUMNS}, chain_hash FROM events ORDER BY position"
    ).fetchall()
    return [(chained_event(row), bytes(row[8])) for row in rows]


def _append_raw(conn: psycopg.Connection[Any], metadata: dict[str, Any]) -> None:
    """Appends one event through the same SQL functions the writer's APPEND calls, with
    metadata the writer itself never produces (nested values)."""
    conn.execute(
        """WITH head AS MATERIALIZED (
               SELECT * FROM chronos_advance_head(ARRAY[chronos_chain_body(
                   %(stream)s::uuid, 1, 'RawEvent', 1, '\\x00ff'::bytea, %(metadata)s::jsonb)]))
           INSERT INTO events (position, event_id, stream_id, stream_version, event_type,
                               schema_version, payload, metadata, recorded_at, chain_hash)
           SELECT head.base + 1, gen_random_uuid(), %(stream)s::uuid, 1, 'RawEvent', 1,
                  '\\x00ff'::bytea, %(metadata)s::jsonb, head.stamped_at, head.hashes[1]
           FROM head""",
        {"stream": new_id(), "metadata": json.dumps(metadata, ensure_ascii=False)},
    )


def test_the_writer_s_chain_equals_the_python_reference(
    ledger_dsn: str, ledger_conn: psycopg.Connection[Any]
) -> None:
    async def body(writers: list[LedgerWriter]) -> None:
        a = await open_funded(writers[0], 1_000)
        b = await open_funded(writers[0], 1_000)
        commands: list[Command] = [
            TransferFunds(
                request_id=f"tränsfer-{i}-€", from_account_id=a, to_account_id=b, amount=eur(i + 1)
            )
            for i in range(20)
        ]
        commands.append(Deposit(request_id=new_id(), account_id=a, amount=eur(5)))
        await asyncio.gather(
            *(
                writers[0].execute(
                    validation.canonicalize(command),
                    validation.fingerprint(command),
                    CommandContext(
                        request_id=command.request_id, principal="prïncipal 🦄", token_id="jti-ü"
                    ),
                )
                for command in commands
            )
        )

    asyncio.run(with_writers(ledger_dsn, body))
    _append_raw(ledger_conn, _NESTED_METADATA)
    asyncio.run(with_writers(ledger_dsn, lambda ws: open_funded(ws[0], 7)))

    stored = _stored(ledger_conn)
    assert len(stored) > 40
    assert any("🦄" in event.metadata_text for event, _ in stored)
    assert any("日本語" in event.metadata_text for event, _ in stored)
    previous = GENESIS
    for event, stored_hash in stored:
        previous = chain_step(previous, event)
        assert stored_hash == previous, f"position {event.position}"
    head = ledger_conn.execute("SELECT position, chain_hash FROM ledger_head").fetchone()
    assert head == (stored[-1][0].position, previous)
    assert verify_chain(ledger_conn).intact


def test_the_outbox_headers_carry_each_event_s_chain_hash(
    ledger_dsn: str, ledger_conn: psycopg.Connection[Any]
) -> None:
    asyncio.run(with_writers(ledger_dsn, lambda ws: open_funded(ws[0], 9)))
    rows = ledger_conn.execute(
        """SELECT o.headers->>'chain_hash', encode(e.chain_hash, 'hex')
           FROM outbox AS o JOIN events AS e USING (position)"""
    ).fetchall()
    assert rows and all(header == stored for header, stored in rows)


def test_the_writer_s_body_equals_the_body_of_0006(ledger_conn: psycopg.Connection[Any]) -> None:
    """Migration 0007's body takes the type and metadata as UTF-8 bytes; for the same
    event it must give 0006's bytes exactly, or chains would fork by writer version."""
    same = ledger_conn.execute(
        """SELECT chronos_chain_body(s, 7, t, 3, p, m)
                  = chronos_chain_body_utf8(s, 7, convert_to(t, 'UTF8'), 3, p,
                                            convert_to(m::text, 'UTF8'))
           FROM (SELECT %(stream)s::uuid AS s, 'Typé🦄' AS t, '\\x00ff10'::bytea AS p,
                        %(metadata)s::jsonb AS m) AS e""",
        {"stream": new_id(), "metadata": json.dumps(_NESTED_METADATA, ensure_ascii=False)},
    ).fetchone()
    assert same == (True,)


def test_a_batch_of_many_events_is_chained_in_position_order(
    ledger_dsn: str, ledger_conn: psycopg.Connection[Any]
) -> None:
    """One group-commit batch with hundreds of events: each event's hash is its own
    32-byte slice of what chronos_chain_advance returns."""

    async def body(writers: list[LedgerWriter]) -> None:
        a = await open_funded(writers[0], 1_000_000)
        b = await open_funded(writers[0], 1_000_000)
        await asyncio.gather(
            *(
                writers[0].execute(
                    validation.canonicalize(command),
                    validation.fingerprint(command),
                    CommandContext(request_id=command.request_id, principal="p"),
                )
                for command in (
                    TransferFunds(
                        request_id=new_id(), from_account_id=a, to_account_id=b, amount=eur(1)
                    )
                    for _ in range(150)
                )
            )
        )

    asyncio.run(with_writers(ledger_dsn, body, lanes=1))
    stored = _stored(ledger_conn)
    biggest = ledger_conn.execute(
        "SELECT max(n) FROM (SELECT count(*) AS n FROM events GROUP BY recorded_at) AS b"
    ).fetchone()
    assert biggest is not None and biggest[0] > 64
    previous = GENESIS
    for event, stored_hash in stored:
        previous = chain_step(previous, event)
        assert stored_hash == previous, f"position {event.position}"
    assert verify_chain(ledger_conn).intact

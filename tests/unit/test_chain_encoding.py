"""The chain's canonical encoding, version 1, byte by byte (docs/audit.md)."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime

from chronos.audit.chain import (
    GENESIS,
    ChainedEvent,
    canonical_bytes,
    chain_step,
    micros_since_epoch,
)

_STREAM = uuid.UUID("12345678-1234-5678-9abc-def012345678")


def _event(**changes: object) -> ChainedEvent:
    fields: dict[str, object] = {
        "position": 7,
        "stream_id": _STREAM.bytes,
        "stream_version": 3,
        "event_type": "Dé",
        "schema_version": 1,
        "payload": b"\x00\xff",
        "metadata_text": '{"a": "✓"}',
        "recorded_at_micros": 1_733_400_000_000_001,
    }
    fields.update(changes)
    return ChainedEvent(**fields)  # type: ignore[arg-type]


def test_the_encoding_is_fixed_width_and_length_prefixed_in_the_documented_order() -> None:
    metadata = '{"a": "✓"}'.encode()
    expected = (
        b"\x01"
        + (7).to_bytes(8, "big")
        + _STREAM.bytes
        + (3).to_bytes(8, "big")
        + (3).to_bytes(4, "big")
        + "Dé".encode()
        + (1).to_bytes(4, "big")
        + (2).to_bytes(4, "big")
        + b"\x00\xff"
        + len(metadata).to_bytes(4, "big")
        + metadata
        + (1_733_400_000_000_001).to_bytes(8, "big")
    )
    assert canonical_bytes(_event()) == expected
    assert chain_step(GENESIS, _event()) == hashlib.sha256(GENESIS + expected).digest()


def test_every_field_changes_the_hash() -> None:
    base = chain_step(GENESIS, _event())
    variants = [
        _event(position=8),
        _event(stream_id=uuid.uuid4().bytes),
        _event(stream_version=4),
        _event(event_type="De"),
        _event(schema_version=2),
        _event(payload=b"\x00\xfe"),
        _event(metadata_text='{"a": "x"}'),
        _event(recorded_at_micros=1_733_400_000_000_002),
    ]
    hashes = {chain_step(GENESIS, variant) for variant in variants}
    assert base not in hashes and len(hashes) == len(variants)
    assert chain_step(b"\x01" * 32, _event()) != base, "the previous hash is chained in"


def test_recorded_times_are_whole_microseconds_since_the_epoch() -> None:
    moment = datetime(2026, 12, 5, 13, 0, 0, 123456, tzinfo=UTC)
    assert micros_since_epoch(moment) == int(moment.timestamp()) * 1_000_000 + 123456
    assert micros_since_epoch(datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)) == -1

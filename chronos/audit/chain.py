"""The reference implementation of the hash chain (docs/audit.md), pure Python.

Every event's chain hash is ``SHA-256(previous chain hash || canonical bytes)``, in
position order, from :data:`GENESIS`. The writer computes the same chain in SQL
(migration ``0006_chain.sql``); ``chronos verify`` recomputes it here, from the stored
columns, so a verifier trusts nothing the database computed.

Canonical bytes, encoding version 1 (all integers big-endian, signed):

====================  =====================================================
encoding version      1 byte, ``0x01``
position              8 bytes
stream id             16 bytes (the UUID's bytes)
stream version        8 bytes
event type            4-byte length, then UTF-8
schema version        4 bytes
payload               4-byte length, then the bytes
metadata              4-byte length, then UTF-8 of PostgreSQL's jsonb text
recorded time         8 bytes, microseconds since the Unix epoch (UTC)
====================  =====================================================
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from datetime import UTC, datetime

ENCODING_VERSION = 1
# The hash "before" position 1. A constant, not a per-ledger secret: the chain's
# protection comes from the signed checkpoints published outside the database.
GENESIS = bytes(32)
HASH_SIZE = 32

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_HEAD = struct.Struct(">Bq16sqI")
_SCHEMA_AND_PAYLOAD_LENGTH = struct.Struct(">iI")
_LENGTH = struct.Struct(">I")
_INT64 = struct.Struct(">q")
_sha256 = hashlib.sha256


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainedEvent:
    """The columns of a stored event the chain covers.

    Attributes:
        position: The event's position in the global log.
        stream_id: The 16 bytes of the stream's UUID.
        stream_version: The event's version in its stream.
        event_type: The stored event type.
        schema_version: The stored schema version.
        payload: The stored payload bytes.
        metadata_text: The metadata as PostgreSQL prints the stored jsonb
            (``metadata::text``).
        recorded_at_micros: The recorded time, microseconds since the Unix epoch.
    """

    position: int
    stream_id: bytes
    stream_version: int
    event_type: str
    schema_version: int
    payload: bytes
    metadata_text: str
    recorded_at_micros: int


def micros_since_epoch(moment: datetime) -> int:
    """``moment`` (timezone-aware) as whole microseconds since the Unix epoch."""
    assert moment.tzinfo is not None, "recorded times are timezone-aware"
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def encode(
    position: int,
    stream_id: bytes,
    stream_version: int,
    event_type: bytes,
    schema_version: int,
    payload: bytes,
    metadata: bytes,
    recorded_at_micros: int,
) -> bytes:
    """The canonical encoding, version 1, of an event's columns in their stored bytes
    (``stream_id`` the UUID's 16 bytes, ``event_type`` and ``metadata`` UTF-8): the one
    implementation both :func:`canonical_bytes` and the verifier's loop use."""
    return b"".join(
        (
            _HEAD.pack(ENCODING_VERSION, position, stream_id, stream_version, len(event_type)),
            event_type,
            _SCHEMA_AND_PAYLOAD_LENGTH.pack(schema_version, len(payload)),
            payload,
            _LENGTH.pack(len(metadata)),
            metadata,
            _INT64.pack(recorded_at_micros),
        )
    )


def canonical_bytes(event: ChainedEvent) -> bytes:
    """The event's canonical encoding, version 1 (see the module docstring)."""
    assert len(event.stream_id) == 16, "a stream id is a UUID's 16 bytes"
    return encode(
        event.position,
        event.stream_id,
        event.stream_version,
        event.event_type.encode(),
        event.schema_version,
        event.payload,
        event.metadata_text.encode(),
        event.recorded_at_micros,
    )


def chain_step(previous: bytes, event: ChainedEvent) -> bytes:
    """The chain hash of ``event``, given the chain hash of the event before it."""
    assert len(previous) == HASH_SIZE, "a chain hash is 32 bytes"
    return _sha256(previous + canonical_bytes(event)).digest()


def chain_step_encoded(previous: bytes, encoded: bytes) -> bytes:
    """The chain hash of an event already encoded with :func:`encode`."""
    return _sha256(previous + encoded).digest()

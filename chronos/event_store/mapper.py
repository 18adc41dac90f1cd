"""Maps domain events to stored events (protobuf payloads) and back.

Stored events carry their type and schema version beside the payload bytes, so an old
payload can be upgraded on read: ``_UPCASTERS`` maps (type, version) to a function that
rewrites the payload to the next version. Today every type is at version 1 (the hold
events, :mod:`chronos.event_store.hold_events`, start there too).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from google.protobuf.message import DecodeError

from chronos.domain.commands import Side
from chronos.domain.events import (
    AccountClosed,
    AccountFrozen,
    AccountKind,
    AccountOpened,
    AccountUnfrozen,
    DomainEvent,
    EntryKind,
    EntryReversed,
    FundsDeposited,
    FundsTransferred,
    FundsWithdrawn,
    HoldLine,
    JournalEntryPosted,
    LinePosted,
    PendingTransferPosted,
)
from chronos.errors import ChronosError
from chronos.event_store import hold_events
from chronos.outbox import contract
from chronos.v1 import events_pb2, ledger_pb2

SCHEMA_VERSION_CURRENT = 1
PROTO_PACKAGE = "chronos.v1"


class EventDecodeError(ChronosError):
    """A stored payload could not be decoded into a domain event."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredEvent:
    """An event as the event store holds it."""

    position: int
    event_id: str
    stream_id: str
    stream_version: int
    event_type: str
    schema_version: int
    payload: bytes
    metadata: dict[str, str]
    recorded_at: datetime
    # The event's link in the hash chain (migration 0006); empty where a caller built
    # the event itself rather than reading it from the store.
    chain_hash: bytes = b""

    @property
    def schema(self) -> str:
        """Fully qualified protobuf message name of the payload."""
        return f"{PROTO_PACKAGE}.{self.event_type}"


_SIDE_TO_PROTO = {Side.DEBIT: ledger_pb2.SIDE_DEBIT, Side.CREDIT: ledger_pb2.SIDE_CREDIT}
_KIND_TO_PROTO = {
    AccountKind.USER: ledger_pb2.ACCOUNT_KIND_USER,
    AccountKind.SYSTEM: ledger_pb2.ACCOUNT_KIND_SYSTEM,
}
_KIND_FROM_PROTO = {v: k for k, v in _KIND_TO_PROTO.items()}
ENTRY_KIND_TO_PROTO = {
    EntryKind.DEPOSIT: ledger_pb2.ENTRY_KIND_DEPOSIT,
    EntryKind.WITHDRAWAL: ledger_pb2.ENTRY_KIND_WITHDRAWAL,
    EntryKind.TRANSFER: ledger_pb2.ENTRY_KIND_TRANSFER,
    EntryKind.JOURNAL: ledger_pb2.ENTRY_KIND_JOURNAL,
    EntryKind.PENDING_TRANSFER: ledger_pb2.ENTRY_KIND_PENDING_TRANSFER,
    EntryKind.REVERSAL: ledger_pb2.ENTRY_KIND_REVERSAL,
}
_LINE_TYPES: dict[str, type[LinePosted]] = {
    "FundsDeposited": FundsDeposited,
    "FundsWithdrawn": FundsWithdrawn,
    "FundsTransferred": FundsTransferred,
    "JournalEntryPosted": JournalEntryPosted,
    "PendingTransferPosted": PendingTransferPosted,
    "EntryReversed": EntryReversed,
}


def side_from_proto(value: int) -> Side | None:
    for side, proto_value in _SIDE_TO_PROTO.items():
        if proto_value == value:
            return side
    return None


def line_to_proto(event: LinePosted) -> events_pb2.EntryLine:
    return events_pb2.EntryLine(
        entry_id=event.entry_id,
        account_id=event.account_id,
        side=_SIDE_TO_PROTO[event.side],
        amount=ledger_pb2.Money(currency=event.currency, minor_units=event.amount_minor),
        balance_after_minor=event.balance_after_minor,
        counterparty_account_id=event.counterparty_account_id,
        description=event.description,
        kind=ENTRY_KIND_TO_PROTO[event.kind],
        line_index=event.line_index,
        pending_debits_after_minor=event.pending_debits_after_minor,
        pending_credits_after_minor=event.pending_credits_after_minor,
        metadata=dict(event.metadata),
        reverses_entry_id=event.reverses_entry_id,
    )


def encode(event: DomainEvent) -> tuple[str, int, bytes]:
    """Returns ``(event_type, schema_version, payload)`` for a domain event."""
    message: Any
    match event:
        case AccountOpened():
            message = events_pb2.AccountOpened(
                account_id=event.account_id,
                owner_name=event.owner_name,
                currency=event.currency,
                overdraft_limit_minor=event.overdraft_limit_minor,
                metadata=dict(event.metadata),
                kind=_KIND_TO_PROTO[event.kind],
            )
        case AccountFrozen():
            message = events_pb2.AccountFrozen(account_id=event.account_id, reason=event.reason)
        case AccountUnfrozen():
            message = events_pb2.AccountUnfrozen(account_id=event.account_id, reason=event.reason)
        case AccountClosed():
            message = events_pb2.AccountClosed(account_id=event.account_id, reason=event.reason)
        case PendingTransferPosted():
            message = events_pb2.PendingTransferPosted(
                line=line_to_proto(event),
                pending_id=event.pending_id,
                released_minor=event.released_minor,
                hold_metadata=dict(event.hold_metadata),
            )
            hold_events.set_time(message.placed_at, event.placed_at)
            hold_events.set_time(message.expires_at, event.expires_at)
        case LinePosted():
            wrapper = getattr(events_pb2, type(event).__name__)
            message = wrapper(line=line_to_proto(event))
        case HoldLine():
            message = hold_events.encode(event)
    return type(event).__name__, SCHEMA_VERSION_CURRENT, message.SerializeToString()


# (event_type, schema_version) -> function upgrading the payload to schema_version + 1.
_UPCASTERS: dict[tuple[str, int], Callable[[bytes], bytes]] = {}


def decode(event_type: str, schema_version: int, payload: bytes) -> DomainEvent:
    """Decodes a stored payload into a domain event, upgrading old schema versions.

    Raises:
        EventDecodeError: unknown type or version, or bytes that do not parse.
    """
    while schema_version < SCHEMA_VERSION_CURRENT:
        upcaster = _UPCASTERS.get((event_type, schema_version))
        if upcaster is None:
            raise EventDecodeError(f"no upcaster for {event_type} v{schema_version}")
        payload = upcaster(payload)
        schema_version += 1
    if schema_version != SCHEMA_VERSION_CURRENT:
        raise EventDecodeError(f"{event_type} v{schema_version} is newer than this code")
    try:
        return _decode_current(event_type, payload)
    except (DecodeError, ValueError) as error:
        raise EventDecodeError(f"{event_type}: payload does not parse: {error}") from error


def _decode_current(event_type: str, payload: bytes) -> DomainEvent:
    if event_type == "AccountOpened":
        opened = events_pb2.AccountOpened.FromString(payload)
        return AccountOpened(
            account_id=opened.account_id,
            owner_name=opened.owner_name,
            currency=opened.currency,
            overdraft_limit_minor=opened.overdraft_limit_minor,
            kind=_KIND_FROM_PROTO[opened.kind],
            metadata=tuple(sorted(opened.metadata.items())),
        )
    if event_type == "AccountFrozen":
        frozen = events_pb2.AccountFrozen.FromString(payload)
        return AccountFrozen(account_id=frozen.account_id, reason=frozen.reason)
    if event_type == "AccountUnfrozen":
        unfrozen = events_pb2.AccountUnfrozen.FromString(payload)
        return AccountUnfrozen(account_id=unfrozen.account_id, reason=unfrozen.reason)
    if event_type == "AccountClosed":
        closed = events_pb2.AccountClosed.FromString(payload)
        return AccountClosed(account_id=closed.account_id, reason=closed.reason)
    if event_type in hold_events.HOLD_EVENT_TYPES:
        return hold_events.decode(event_type, payload)
    line_type = _LINE_TYPES.get(event_type)
    if line_type is None:
        raise EventDecodeError(f"unknown event type {event_type!r}")
    message = getattr(events_pb2, event_type).FromString(payload)
    line = message.line
    side = side_from_proto(line.side)
    if side is None:
        raise EventDecodeError(f"{event_type}: line has no side")
    extra: dict[str, Any] = {}
    if line_type is PendingTransferPosted:
        extra = {
            "pending_id": message.pending_id,
            "released_minor": message.released_minor,
            "placed_at": hold_events.time_of(message, "placed_at"),
            "expires_at": hold_events.time_of(message, "expires_at"),
            "hold_metadata": tuple(sorted(message.hold_metadata.items())),
        }
    return line_type(
        entry_id=line.entry_id,
        account_id=line.account_id,
        side=side,
        currency=line.amount.currency,
        amount_minor=line.amount.minor_units,
        balance_after_minor=line.balance_after_minor,
        counterparty_account_id=line.counterparty_account_id,
        description=line.description,
        line_index=line.line_index,
        pending_debits_after_minor=line.pending_debits_after_minor,
        pending_credits_after_minor=line.pending_credits_after_minor,
        # Absent from lines stored before movements had metadata: read as empty.
        metadata=tuple(sorted(line.metadata.items())),
        reverses_entry_id=line.reverses_entry_id,
        **extra,
    )


def envelope(stored: StoredEvent) -> events_pb2.EventEnvelope:
    """The Kafka message value for a stored event."""
    message = events_pb2.EventEnvelope(
        event_id=stored.event_id,
        stream_id=stored.stream_id,
        stream_version=stored.stream_version,
        position=stored.position,
        event_type=stored.event_type,
        schema_version=stored.schema_version,
        payload=stored.payload,
        metadata=stored.metadata,
    )
    message.recorded_at.FromDatetime(stored.recorded_at)
    return message


# Event metadata keys that travel as Kafka headers of the same name.
METADATA_KEYS = (
    "request_id",
    "correlation_id",
    "causation_id",
    "traceparent",
    contract.HEADER_PRINCIPAL,
    contract.HEADER_PRINCIPAL_TOKEN_ID,
)


def envelope_from_outbox(key: str, payload: bytes, headers: dict[str, str]) -> bytes:
    """The Kafka message value for an outbox row: its event as an ``EventEnvelope``.

    The outbox row holds the event's payload and its headers (built by the writer's
    append statement); the envelope is assembled here, at publish time, so the
    write transaction never has to know the position before it takes it.

    Raises:
        KeyError, ValueError: the row's headers are incomplete (not written by the writer).
    """
    stored = StoredEvent(
        position=int(headers["position"]),
        event_id=headers["event_id"],
        stream_id=key,
        stream_version=int(headers["stream_version"]),
        event_type=headers["event_type"],
        schema_version=int(headers["schema_version"]),
        payload=payload,
        metadata={k: headers[k] for k in METADATA_KEYS if headers.get(k)},
        recorded_at=datetime.fromisoformat(headers["recorded_at"]),
    )
    return bytes(envelope(stored).SerializeToString())

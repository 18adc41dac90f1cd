"""The hold events' payloads (``chronos.v1.PendingTransferCreated`` and the releases).

Kept beside :mod:`chronos.event_store.mapper`, which calls it for these types; a posted
hold is a line event (``PendingTransferPosted``) and is mapped there with the others.
Every hold event type is at schema version 1.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from chronos.domain.commands import Side
from chronos.domain.events import (
    HoldLine,
    PendingTransferCreated,
    PendingTransferExpired,
    PendingTransferVoided,
)
from chronos.v1 import events_pb2, ledger_pb2

HOLD_EVENT_TYPES: dict[str, type[HoldLine]] = {
    "PendingTransferCreated": PendingTransferCreated,
    "PendingTransferVoided": PendingTransferVoided,
    "PendingTransferExpired": PendingTransferExpired,
}

_SIDE_TO_PROTO = {Side.DEBIT: ledger_pb2.SIDE_DEBIT, Side.CREDIT: ledger_pb2.SIDE_CREDIT}
_SIDE_FROM_PROTO = {v: k for k, v in _SIDE_TO_PROTO.items()}


def set_time(field: Any, moment: datetime | None) -> None:
    """Sets a Timestamp field, or leaves it absent for None."""
    if moment is not None:
        field.FromDatetime(moment)


def time_of(message: Any, name: str) -> datetime | None:
    """A Timestamp field as an aware datetime, None when absent."""
    if not message.HasField(name):
        return None
    value: datetime = getattr(message, name).ToDatetime(tzinfo=UTC)
    return value


def _line(event: HoldLine) -> events_pb2.HoldLine:
    line = events_pb2.HoldLine(
        pending_id=event.pending_id,
        account_id=event.account_id,
        side=_SIDE_TO_PROTO[event.side],
        amount=ledger_pb2.Money(currency=event.currency, minor_units=event.amount_minor),
        balance_after_minor=event.balance_after_minor,
        pending_debits_after_minor=event.pending_debits_after_minor,
        pending_credits_after_minor=event.pending_credits_after_minor,
        counterparty_account_id=event.counterparty_account_id,
        description=event.description,
        line_index=event.line_index,
        metadata=dict(event.metadata),
        hold_metadata=dict(event.hold_metadata),
    )
    set_time(line.placed_at, event.placed_at)
    set_time(line.expires_at, event.expires_at)
    return line


def encode(event: HoldLine) -> Any:
    """The payload message of a hold event."""
    if isinstance(event, PendingTransferCreated):
        return events_pb2.PendingTransferCreated(hold=_line(event))
    if isinstance(event, PendingTransferVoided):
        return events_pb2.PendingTransferVoided(hold=_line(event), reason=event.reason)
    assert isinstance(event, PendingTransferExpired), type(event).__name__
    return events_pb2.PendingTransferExpired(hold=_line(event))


def decode(event_type: str, payload: bytes) -> HoldLine:
    """The hold event of ``event_type`` from its payload (a DecodeError propagates).

    Raises:
        ValueError: the payload's side is missing.
    """
    message = getattr(events_pb2, event_type).FromString(payload)
    line = message.hold
    side = _SIDE_FROM_PROTO.get(line.side)
    if side is None:
        raise ValueError(f"{event_type}: hold line has no side")
    fields: dict[str, Any] = {
        "pending_id": line.pending_id,
        "account_id": line.account_id,
        "side": side,
        "currency": line.amount.currency,
        "amount_minor": line.amount.minor_units,
        "balance_after_minor": line.balance_after_minor,
        "pending_debits_after_minor": line.pending_debits_after_minor,
        "pending_credits_after_minor": line.pending_credits_after_minor,
        "counterparty_account_id": line.counterparty_account_id,
        "description": line.description,
        "line_index": line.line_index,
        "placed_at": time_of(line, "placed_at"),
        "expires_at": time_of(line, "expires_at"),
        "metadata": tuple(sorted(line.metadata.items())),
        "hold_metadata": tuple(sorted(line.hold_metadata.items())),
    }
    if event_type == "PendingTransferCreated":
        return PendingTransferCreated(**fields)
    if event_type == "PendingTransferVoided":
        return PendingTransferVoided(**fields, reason=message.reason)
    return PendingTransferExpired(**fields)

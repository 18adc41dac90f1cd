"""Events to pending-transfer documents: one document per hold, for ListPendingTransfers.

Every event of a hold describes it whole (amount, accounts, placed and expiry times), so
a hold's document is built from one event alone, without reading the stored one: the
event on the hold's from account (its debit side; the to account's twin says the same).
The document's version is that event's stream version, written as Elasticsearch's
external version, so a redelivered or stale event never replaces a newer state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chronos.domain.commands import Side
from chronos.domain.events import (
    DomainEvent,
    HoldLine,
    PendingTransferCreated,
    PendingTransferExpired,
    PendingTransferPosted,
    PendingTransferVoided,
)

# The module, not its names: it imports this one (fold_batch builds hold documents).
from chronos.read_model import documents

if TYPE_CHECKING:
    from chronos.read_model.documents import EventRecord

# A hold's states on the read side (the write side's HoldState values).
PENDING, POSTED, VOIDED, EXPIRED = "PENDING", "POSTED", "VOIDED", "EXPIRED"


def hold_document(record: EventRecord) -> tuple[str, int, dict[str, Any]] | None:
    """``(pending_id, version, source)`` of the hold an event changes; None for any
    other event, and for the to account's twin of a hold event."""
    event: DomainEvent = record.event
    if not isinstance(event, HoldLine | PendingTransferPosted) or event.side is not Side.DEBIT:
        return None
    amount, posted = event.amount_minor, 0
    if isinstance(event, PendingTransferPosted):
        amount, posted = event.amount_minor + event.released_minor, event.amount_minor
    source: dict[str, Any] = {
        "pending_id": event.pending_id,
        "from_account_id": event.account_id,
        "to_account_id": event.counterparty_account_id,
        "currency": event.currency,
        "amount_minor": amount,
        "posted_minor": posted,
        "state": _state(event),
        "description": event.description,
        "placed_at": documents.format_time(event.placed_at or record.recorded_at),
        "updated_at": documents.format_time(record.recorded_at),
        "last_position": record.position,
        "version": record.stream_version,
    }
    if event.expires_at is not None:
        source["expires_at"] = documents.format_time(event.expires_at)
    # The create's metadata, which every event of the hold carries (a post's or void's
    # own metadata is on its statement lines only).
    if event.hold_metadata:
        source["metadata"] = dict(event.hold_metadata)
    return event.pending_id, record.stream_version, source


def _state(event: HoldLine | PendingTransferPosted) -> str:
    if isinstance(event, PendingTransferCreated):
        return PENDING
    if isinstance(event, PendingTransferPosted):
        return POSTED
    if isinstance(event, PendingTransferVoided):
        return VOIDED
    assert isinstance(event, PendingTransferExpired), type(event).__name__
    return EXPIRED

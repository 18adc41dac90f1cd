"""Events to read-side documents: the one implementation the projector and the rebuild share.

Pure functions, no I/O. An account document is the fold of its stream, like
``chronos.domain.ledger.Account`` plus the times and position a reader needs; it
records the stream version it reflects, which is also its Elasticsearch external
version, so a write built from a stale or duplicate event can never replace a newer
document. A statement line document is one line event, identified by the event id,
so writing it twice is harmless.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from chronos.domain.accounts import AccountStatus
from chronos.domain.events import (
    AccountClosed,
    AccountFrozen,
    AccountOpened,
    AccountUnfrozen,
    DomainEvent,
    HoldLine,
    LinePosted,
    PendingTransferCreated,
    PendingTransferExpired,
    PendingTransferPosted,
)
from chronos.event_store.context import METADATA_PRINCIPAL
from chronos.event_store.mapper import StoredEvent, decode
from chronos.read_model import hold_documents
from chronos.v1 import events_pb2


@dataclass(frozen=True, slots=True, kw_only=True)
class EventRecord:
    """A decoded event with where it sits in its stream and in the global log, and who
    caused it (``principal``: the token subject, "" when none was recorded)."""

    event_id: str
    stream_id: str
    stream_version: int
    position: int
    recorded_at: datetime
    event: DomainEvent
    principal: str = ""


def record_from_stored(stored: StoredEvent) -> EventRecord:
    """Decodes an event read from the event store (rebuild, reconcile)."""
    return EventRecord(
        event_id=stored.event_id,
        stream_id=stored.stream_id,
        stream_version=stored.stream_version,
        position=stored.position,
        recorded_at=stored.recorded_at,
        event=decode(stored.event_type, stored.schema_version, stored.payload),
        principal=stored.metadata.get(METADATA_PRINCIPAL, ""),
    )


def record_from_envelope(envelope: events_pb2.EventEnvelope) -> EventRecord:
    """Decodes an event consumed from Kafka (projector)."""
    return EventRecord(
        event_id=envelope.event_id,
        stream_id=envelope.stream_id,
        stream_version=envelope.stream_version,
        position=envelope.position,
        recorded_at=envelope.recorded_at.ToDatetime(tzinfo=UTC),
        event=decode(envelope.event_type, envelope.schema_version, envelope.payload),
        principal=envelope.metadata.get(METADATA_PRINCIPAL, ""),
    )


# Each event's time is spelled for its account, its statement line and its event-log
# document, and the events of one group commit share it: a small cache spares the
# rebuild most of the spelling. (Equal instants are equal keys whatever their time
# zones, and they have one spelling.)
@functools.lru_cache(maxsize=1024)
def format_time(moment: datetime) -> str:
    """UTC, microseconds, ``Z``: one spelling whatever the source's time zone, so the
    projector's and the rebuild's documents are byte-for-byte equal."""
    assert moment.tzinfo is not None, "naive datetime in the read model"
    if moment.utcoffset():
        moment = moment.astimezone(UTC)
    # isoformat is several times faster than strftime, which matters to the rebuild.
    return moment.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_time(text: str) -> datetime:
    """Inverse of :func:`format_time`."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountDocument:
    """The accounts index's document: the account as of stream version ``version``."""

    account_id: str
    owner_name: str
    currency: str
    balance_minor: int
    overdraft_limit_minor: int
    status: str
    kind: str
    version: int
    last_position: int
    opened_at: str
    updated_at: str
    metadata: tuple[tuple[str, str], ...] = ()
    # Open holds on the account: reserved on it (debits), promised to it (credits).
    pending_debits_minor: int = 0
    pending_credits_minor: int = 0

    def to_source(self) -> dict[str, Any]:
        return {
            "account_id": self.account_id,
            "owner_name": self.owner_name,
            "currency": self.currency,
            "balance_minor": self.balance_minor,
            "overdraft_limit_minor": self.overdraft_limit_minor,
            "status": self.status,
            "kind": self.kind,
            "version": self.version,
            "last_position": self.last_position,
            "opened_at": self.opened_at,
            "updated_at": self.updated_at,
            "metadata": dict(self.metadata),
            "pending_debits_minor": self.pending_debits_minor,
            "pending_credits_minor": self.pending_credits_minor,
            # Stored (not only derived) so that `chronos reconcile` compares it too.
            "available_minor": self.balance_minor - self.pending_debits_minor,
        }

    @classmethod
    def from_source(cls, source: dict[str, Any]) -> AccountDocument:
        return cls(
            account_id=str(source["account_id"]),
            owner_name=str(source["owner_name"]),
            currency=str(source["currency"]),
            balance_minor=int(source["balance_minor"]),
            overdraft_limit_minor=int(source["overdraft_limit_minor"]),
            status=str(source["status"]),
            kind=str(source["kind"]),
            version=int(source["version"]),
            last_position=int(source["last_position"]),
            opened_at=str(source["opened_at"]),
            updated_at=str(source["updated_at"]),
            metadata=tuple(sorted((str(k), str(v)) for k, v in source["metadata"].items())),
            # Documents written before holds existed have no pending sums: none were open.
            pending_debits_minor=int(source.get("pending_debits_minor", 0)),
            pending_credits_minor=int(source.get("pending_credits_minor", 0)),
        )


class Outcome(enum.Enum):
    """What applying one event to an account document did."""

    APPLIED = "applied"
    # Duplicate or older than the document: ignored (at-least-once delivery).
    STALE = "stale"
    # Not applied: versions between the document's and the event's were never seen, and
    # folding across them could miss a status change for good. The projector reads the
    # missing versions from the event store first, so it never meets one.
    GAP = "gap"
    # No document and the event is not AccountOpened: nothing to apply it to.
    ORPHAN = "orphan"


def apply_event(
    document: AccountDocument | None, record: EventRecord
) -> tuple[AccountDocument | None, Outcome]:
    """Applies one event of the account's stream to its document.

    Returns:
        The new document (the same object when nothing changed) and what happened.
    """
    event = record.event
    if document is not None and record.stream_version <= document.version:
        return document, Outcome.STALE
    if isinstance(event, AccountOpened):
        if document is not None:
            return document, Outcome.STALE
        opened_at = format_time(record.recorded_at)
        return (
            AccountDocument(
                account_id=event.account_id,
                owner_name=event.owner_name,
                currency=event.currency,
                balance_minor=0,
                overdraft_limit_minor=event.overdraft_limit_minor,
                status=AccountStatus.ACTIVE.value,
                kind=event.kind.value,
                version=record.stream_version,
                last_position=record.position,
                opened_at=opened_at,
                updated_at=opened_at,
                metadata=tuple(sorted(event.metadata)),
            ),
            Outcome.APPLIED,
        )
    if document is None:
        return None, Outcome.ORPHAN
    assert event.account_id == document.account_id, "event applied to another account"
    if record.stream_version != document.version + 1:
        return document, Outcome.GAP
    balance_minor, status = document.balance_minor, document.status
    debits, credits = document.pending_debits_minor, document.pending_credits_minor
    if isinstance(event, LinePosted | HoldLine):
        balance_minor, debits, credits = _after(event)
    elif isinstance(event, AccountFrozen):
        status = AccountStatus.FROZEN.value
    elif isinstance(event, AccountUnfrozen):
        status = AccountStatus.ACTIVE.value
    elif isinstance(event, AccountClosed):
        status = AccountStatus.CLOSED.value
    else:
        raise AssertionError(f"unknown event type {type(event).__name__}")
    # Built directly rather than with dataclasses.replace: this runs once per event in
    # the rebuild, where replace's overhead shows.
    return (
        AccountDocument(
            account_id=document.account_id,
            owner_name=document.owner_name,
            currency=document.currency,
            balance_minor=balance_minor,
            overdraft_limit_minor=document.overdraft_limit_minor,
            status=status,
            kind=document.kind,
            version=record.stream_version,
            last_position=record.position,
            opened_at=document.opened_at,
            updated_at=format_time(record.recorded_at),
            metadata=document.metadata,
            pending_debits_minor=debits,
            pending_credits_minor=credits,
        ),
        Outcome.APPLIED,
    )


def _after(event: LinePosted | HoldLine) -> tuple[int, int, int]:
    """The balance, pending debits and pending credits right after a line."""
    return (
        event.balance_after_minor,
        event.pending_debits_after_minor,
        event.pending_credits_after_minor,
    )


def transaction_source(record: EventRecord) -> dict[str, Any] | None:
    """The statement line document of a line event (its id is ``record.event_id``);
    None for events that are not lines. ``principal`` is present only when one was
    recorded (a line written with authentication off has none), ``reverses_entry_id``
    only on a reversal's line."""
    event = record.event
    if not isinstance(event, LinePosted | HoldLine):
        return None
    source: dict[str, Any] = {
        "event_id": record.event_id,
        "entry_id": event.entry_id if isinstance(event, LinePosted) else "",
        "account_id": event.account_id,
        "counterparty_account_id": event.counterparty_account_id,
        "direction": event.side.value,
        "amount_minor": event.amount_minor,
        "currency": event.currency,
        "balance_after_minor": event.balance_after_minor,
        "kind": line_kind(event),
        "description": event.description,
        "recorded_at": format_time(record.recorded_at),
        "position": record.position,
        "stream_version": record.stream_version,
        "line_index": event.line_index,
    }
    if record.principal:
        source["principal"] = record.principal
    # Present only on the lines of holds and of accounts with open holds, so that the
    # lines of a ledger without holds keep their documents as they were.
    if isinstance(event, HoldLine | PendingTransferPosted):
        source["pending_id"] = event.pending_id
    if event.pending_debits_after_minor or event.pending_credits_after_minor:
        source["pending_debits_after_minor"] = event.pending_debits_after_minor
        source["pending_credits_after_minor"] = event.pending_credits_after_minor
    # The metadata of the command that wrote the line (a hold's lines included).
    if event.metadata:
        source["metadata"] = dict(event.metadata)
    if isinstance(event, LinePosted) and event.reverses_entry_id:
        source["reverses_entry_id"] = event.reverses_entry_id
    return source


# The statement kind of each hold lifecycle line that moves no posted money.
HOLD_PLACED, HOLD_VOIDED, HOLD_EXPIRED = "HOLD_PLACED", "HOLD_VOIDED", "HOLD_EXPIRED"


def line_kind(event: LinePosted | HoldLine) -> str:
    """A statement line's ``kind``: its entry's kind, or the hold change it records."""
    if isinstance(event, LinePosted):
        return event.kind.value
    if isinstance(event, PendingTransferCreated):
        return HOLD_PLACED
    if isinstance(event, PendingTransferExpired):
        return HOLD_EXPIRED
    return HOLD_VOIDED


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchDocuments:
    """The documents one batch of events produces."""

    # The last state of each account the batch changed, in first-touched order.
    accounts: tuple[AccountDocument, ...]
    # (event id, source) of each line event.
    transactions: tuple[tuple[str, dict[str, Any]], ...]
    outcomes: dict[Outcome, int]
    # (pending id, version, source) of each hold document (see hold_documents).
    holds: tuple[tuple[str, int, dict[str, Any]], ...] = ()


def fold_batch(
    current: dict[str, AccountDocument | None], records: list[EventRecord]
) -> BatchDocuments:
    """Applies ``records`` (in log order) to the current documents of their accounts.

    Args:
        current: The stored document of every account in ``records`` (None: none yet).
            Not modified.
        records: Events in position order.
    """
    state = dict(current)
    changed: dict[str, AccountDocument] = {}
    transactions: list[tuple[str, dict[str, Any]]] = []
    holds: list[tuple[str, int, dict[str, Any]]] = []
    outcomes = dict.fromkeys(Outcome, 0)
    for record in records:
        before = state.get(record.stream_id)
        after, outcome = apply_event(before, record)
        outcomes[outcome] += 1
        if after is not None and after is not before:
            state[record.stream_id] = after
            changed[record.stream_id] = after
        source = transaction_source(record)
        if source is not None:
            transactions.append((record.event_id, source))
        hold = hold_documents.hold_document(record)
        if hold is not None:
            holds.append(hold)
    return BatchDocuments(
        accounts=tuple(changed.values()),
        transactions=tuple(transactions),
        outcomes=outcomes,
        holds=tuple(holds),
    )

"""Read-model documents to protobuf: the query server's ``*_to_proto`` functions.

The documents are the ``_source`` dictionaries ``chronos.read_model.documents`` writes;
this is the only place that knows both their fields and the protobuf messages.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.protobuf import timestamp_pb2

from chronos.domain.accounts import AccountStatus
from chronos.domain.events import AccountKind, EntryKind
from chronos.read_model.documents import HOLD_EXPIRED, HOLD_PLACED, HOLD_VOIDED
from chronos.v1 import ledger_pb2, queries_pb2

_STATUS_TO_PROTO = {
    AccountStatus.ACTIVE.value: ledger_pb2.ACCOUNT_STATUS_ACTIVE,
    AccountStatus.FROZEN.value: ledger_pb2.ACCOUNT_STATUS_FROZEN,
    AccountStatus.CLOSED.value: ledger_pb2.ACCOUNT_STATUS_CLOSED,
}
_STATUS_FROM_PROTO: dict[int, str] = {proto: status for status, proto in _STATUS_TO_PROTO.items()}
_KIND_TO_PROTO = {
    AccountKind.USER.value: ledger_pb2.ACCOUNT_KIND_USER,
    AccountKind.SYSTEM.value: ledger_pb2.ACCOUNT_KIND_SYSTEM,
}
SIDE_TO_PROTO = {"DEBIT": ledger_pb2.SIDE_DEBIT, "CREDIT": ledger_pb2.SIDE_CREDIT}
ENTRY_KIND_TO_PROTO = {
    EntryKind.DEPOSIT.value: ledger_pb2.ENTRY_KIND_DEPOSIT,
    EntryKind.WITHDRAWAL.value: ledger_pb2.ENTRY_KIND_WITHDRAWAL,
    EntryKind.TRANSFER.value: ledger_pb2.ENTRY_KIND_TRANSFER,
    EntryKind.JOURNAL.value: ledger_pb2.ENTRY_KIND_JOURNAL,
    EntryKind.PENDING_TRANSFER.value: ledger_pb2.ENTRY_KIND_PENDING_TRANSFER,
    HOLD_PLACED: ledger_pb2.ENTRY_KIND_HOLD_PLACED,
    HOLD_VOIDED: ledger_pb2.ENTRY_KIND_HOLD_VOIDED,
    HOLD_EXPIRED: ledger_pb2.ENTRY_KIND_HOLD_EXPIRED,
    EntryKind.REVERSAL.value: ledger_pb2.ENTRY_KIND_REVERSAL,
}

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def account_status_from_proto(status: int) -> str | None:
    """The read model's spelling of an account status, None for one it does not know."""
    return _STATUS_FROM_PROTO.get(status)


def timestamp_proto(text: str) -> timestamp_pb2.Timestamp:
    # The read model writes one spelling (documents.format_time); fromisoformat parses it
    # in C, about ten times faster than Timestamp.FromJsonString.
    since_epoch = datetime.fromisoformat(text) - _EPOCH
    return timestamp_pb2.Timestamp(
        seconds=since_epoch.days * 86_400 + since_epoch.seconds,
        nanos=since_epoch.microseconds * 1_000,
    )


def account_to_proto(source: dict[str, Any], as_of: int) -> queries_pb2.GetAccountResponse:
    """An account document, as of the position ``as_of``."""
    return queries_pb2.GetAccountResponse(
        account_id=source["account_id"],
        owner_name=source["owner_name"],
        currency=source["currency"],
        balance=ledger_pb2.Money(currency=source["currency"], minor_units=source["balance_minor"]),
        overdraft_limit_minor=source["overdraft_limit_minor"],
        status=_STATUS_TO_PROTO.get(source["status"], ledger_pb2.ACCOUNT_STATUS_UNSPECIFIED),
        version=source["version"],
        opened_at=timestamp_proto(source["opened_at"]),
        updated_at=timestamp_proto(source["updated_at"]),
        as_of_position=as_of,
        metadata={str(k): str(v) for k, v in (source.get("metadata") or {}).items()},
        kind=_KIND_TO_PROTO.get(source["kind"], ledger_pb2.ACCOUNT_KIND_UNSPECIFIED),
        **pending_money(
            source["currency"],
            source["balance_minor"],
            source.get("pending_debits_minor", 0),
            source.get("pending_credits_minor", 0),
        ),
    )


def pending_money(
    currency: str, balance_minor: int, debits_minor: int, credits_minor: int
) -> dict[str, ledger_pb2.Money]:
    """The ``pending_debits``, ``pending_credits`` and ``available`` fields of an answer
    (``available`` is the posted balance less pending debits)."""
    return {
        "pending_debits": ledger_pb2.Money(currency=currency, minor_units=debits_minor),
        "pending_credits": ledger_pb2.Money(currency=currency, minor_units=credits_minor),
        "available": ledger_pb2.Money(currency=currency, minor_units=balance_minor - debits_minor),
    }


def line_to_proto(source: dict[str, Any]) -> queries_pb2.TransactionLine:
    """A statement line document."""
    currency = source["currency"]
    return queries_pb2.TransactionLine(
        entry_id=source["entry_id"],
        direction=SIDE_TO_PROTO.get(source["direction"], ledger_pb2.SIDE_UNSPECIFIED),
        amount=ledger_pb2.Money(currency=currency, minor_units=source["amount_minor"]),
        balance_after=ledger_pb2.Money(
            currency=currency, minor_units=source["balance_after_minor"]
        ),
        counterparty_account_id=source["counterparty_account_id"],
        kind=ENTRY_KIND_TO_PROTO.get(source["kind"], ledger_pb2.ENTRY_KIND_UNSPECIFIED),
        description=source["description"],
        recorded_at=timestamp_proto(source["recorded_at"]),
        position=source["position"],
        event_id=source["event_id"],
        # Lines written without an authenticated caller have no principal.
        principal=source.get("principal", ""),
        pending_id=source.get("pending_id", ""),
        **{
            f"{name}_after": money
            for name, money in pending_money(
                currency,
                source["balance_after_minor"],
                source.get("pending_debits_after_minor", 0),
                source.get("pending_credits_after_minor", 0),
            ).items()
        },
        # Lines of a movement without metadata (or projected before it existed) have none.
        metadata={str(k): str(v) for k, v in (source.get("metadata") or {}).items()},
        reverses_entry_id=source.get("reverses_entry_id", ""),
    )


def summary_to_proto(hit: dict[str, Any]) -> queries_pb2.AccountSummary:
    """An account search hit (its document and its score)."""
    source = hit["_source"]
    return queries_pb2.AccountSummary(
        account_id=source["account_id"],
        owner_name=source["owner_name"],
        currency=source["currency"],
        balance=ledger_pb2.Money(currency=source["currency"], minor_units=source["balance_minor"]),
        status=_STATUS_TO_PROTO.get(source["status"], ledger_pb2.ACCOUNT_STATUS_UNSPECIFIED),
        score=float(hit.get("_score") or 0.0),
    )


_PENDING_STATE_TO_PROTO = {
    "PENDING": queries_pb2.PENDING_TRANSFER_STATE_PENDING,
    "POSTED": queries_pb2.PENDING_TRANSFER_STATE_POSTED,
    "VOIDED": queries_pb2.PENDING_TRANSFER_STATE_VOIDED,
    "EXPIRED": queries_pb2.PENDING_TRANSFER_STATE_EXPIRED,
}


def pending_to_proto(source: dict[str, Any]) -> queries_pb2.PendingTransfer:
    """A hold document."""
    currency = source["currency"]
    answer = queries_pb2.PendingTransfer(
        pending_id=source["pending_id"],
        from_account_id=source["from_account_id"],
        to_account_id=source["to_account_id"],
        amount=ledger_pb2.Money(currency=currency, minor_units=source["amount_minor"]),
        posted=ledger_pb2.Money(currency=currency, minor_units=source["posted_minor"]),
        state=_PENDING_STATE_TO_PROTO.get(
            source["state"], queries_pb2.PENDING_TRANSFER_STATE_UNSPECIFIED
        ),
        description=source["description"],
        placed_at=timestamp_proto(source["placed_at"]),
        updated_at=timestamp_proto(source["updated_at"]),
        position=source["last_position"],
        # Holds placed without metadata (or projected before it existed) have none.
        metadata={str(k): str(v) for k, v in (source.get("metadata") or {}).items()},
    )
    if source.get("expires_at"):
        answer.expires_at.CopyFrom(timestamp_proto(source["expires_at"]))
    return answer

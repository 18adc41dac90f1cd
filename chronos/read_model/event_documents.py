"""Events to event-log documents: one document per event, for ListEvents and GetEntry.

Pure functions, no I/O, shared by the projector (from a Kafka message: its envelope and
headers) and the rebuild (from the event store), so both build the same document. The
document's id is the event's position, written with ``op_type=create``: a redelivered
event is refused as a duplicate (409), so the same event twice is a no-op.

The payload is kept as protobuf JSON (field names as in ``events.proto``) for the
answer, and its string values, with the metadata's, are copied into ``text`` for
full-text search; the ids a reader filters on (accounts, entry, hold, request,
principal) get keyword fields of their own.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message

from chronos.event_store.context import METADATA_PRINCIPAL
from chronos.event_store.mapper import EventDecodeError, StoredEvent
from chronos.outbox import contract
from chronos.read_model.documents import format_time
from chronos.v1 import events_pb2

# The metadata key of the client's request id (chronos.event_store.context).
METADATA_REQUEST_ID = "request_id"
# The payload fields whose values are account ids, wherever they sit in the payload.
_ACCOUNT_FIELDS = frozenset({"account_id", "counterparty_account_id"})


def payload_json(event_type: str, payload: bytes) -> dict[str, Any]:
    """The payload as protobuf JSON (proto field names, defaults left out).

    Raises:
        EventDecodeError: unknown type or bytes that do not parse.
    """
    message_class = getattr(events_pb2, event_type, None)
    if not (isinstance(message_class, type) and issubclass(message_class, Message)):
        raise EventDecodeError(f"unknown event type {event_type!r}")
    try:
        message: Message = message_class()
        message.ParseFromString(payload)
    except DecodeError as error:
        raise EventDecodeError(f"{event_type}: payload does not parse: {error}") from error
    result: dict[str, Any] = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return result


def event_source(
    *,
    position: int,
    event_id: str,
    event_type: str,
    schema_version: int,
    stream_id: str,
    stream_version: int,
    recorded_at: datetime,
    payload: bytes,
    metadata: Mapping[str, str],
    chain_hash: str = "",
) -> dict[str, Any]:
    """The events index's document of one event (its id is ``str(position)``).

    Raises:
        EventDecodeError: the payload does not parse as ``event_type``.
    """
    body = payload_json(event_type, payload)
    line = body.get("line") or body.get("hold") or {}
    accounts = dict.fromkeys([stream_id, *_account_ids(body)])
    source: dict[str, Any] = {
        "position": position,
        "event_id": event_id,
        "event_type": event_type,
        "schema_version": schema_version,
        "stream_id": stream_id,
        "stream_version": stream_version,
        "recorded_at": format_time(recorded_at),
        "metadata": dict(sorted(metadata.items())),
        "payload": body,
        "text": " ".join([event_type, *_strings(body), *metadata.values()]),
        "account_ids": [account for account in accounts if account],
    }
    keywords = {
        "entry_id": line.get("entry_id", ""),
        "pending_id": body.get("pending_id") or line.get("pending_id", ""),
        "reverses_entry_id": line.get("reverses_entry_id", ""),
        "request_id": metadata.get(METADATA_REQUEST_ID, ""),
        "principal": metadata.get(METADATA_PRINCIPAL, ""),
        "chain_hash": chain_hash,
    }
    # Absent rather than empty, so an exact-match filter on "" never matches.
    source.update({name: value for name, value in keywords.items() if value})
    return source


def source_from_stored(stored: StoredEvent, *, chain_hash: str = "") -> dict[str, Any]:
    """The document of an event read from the event store (rebuild)."""
    return event_source(
        position=stored.position,
        event_id=stored.event_id,
        event_type=stored.event_type,
        schema_version=stored.schema_version,
        stream_id=stored.stream_id,
        stream_version=stored.stream_version,
        recorded_at=stored.recorded_at,
        payload=stored.payload,
        metadata=stored.metadata,
        chain_hash=chain_hash,
    )


def source_from_message(
    envelope: events_pb2.EventEnvelope, headers: Mapping[str, str]
) -> dict[str, Any]:
    """The document of an event consumed from Kafka (projector): the envelope, and the
    chain hash from the message's headers when the writer recorded one."""
    return event_source(
        position=envelope.position,
        event_id=envelope.event_id,
        event_type=envelope.event_type,
        schema_version=envelope.schema_version,
        stream_id=envelope.stream_id,
        stream_version=envelope.stream_version,
        recorded_at=envelope.recorded_at.ToDatetime(tzinfo=UTC),
        payload=envelope.payload,
        metadata=dict(envelope.metadata),
        chain_hash=headers.get(contract.HEADER_CHAIN_HASH, ""),
    )


def _strings(value: Any) -> Iterator[str]:
    """Every string in a JSON value (the values, not the keys), depth first."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _account_ids(value: Any) -> Iterator[str]:
    """The account ids a JSON payload names (its lines' accounts and counterparties)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key in _ACCOUNT_FIELDS and isinstance(item, str):
                yield item
            else:
                yield from _account_ids(item)
    elif isinstance(value, list):
        for item in value:
            yield from _account_ids(item)

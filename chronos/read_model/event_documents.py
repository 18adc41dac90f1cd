"""Events to event-log documents: one document per event, for ListEvents and GetEntry.

Pure functions, no I/O, shared by the projector (from a Kafka message: its envelope and
headers) and the rebuild (from the event store), so both build the same document. The
document's id is the event's position, written with ``op_type=create``: a redelivered
event is refused as a duplicate (409), so the same event twice is a no-op.

The payload is kept as protobuf JSON (field names as in ``events.proto``) for the
answer, and the words of its string values, with the metadata's, go into ``words`` for
full-text search; the ids a reader filters on (accounts, entry, hold, request,
principal) get keyword fields of their own.

The words are cut here and indexed as keywords, not analyzed by Elasticsearch: the
standard analyzer splits every id into several tokens, and indexing those was most of
what the events index cost Elasticsearch. Cut here, an id or a code like ``A-17`` stays
one word.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from google.protobuf.message import DecodeError, Message

from chronos.event_store.context import METADATA_PRINCIPAL
from chronos.event_store.mapper import EventDecodeError, StoredEvent
from chronos.outbox import contract
from chronos.read_model.documents import format_time
from chronos.read_model.proto_json import message_json
from chronos.v1 import events_pb2

# The metadata key of the client's request id (chronos.event_store.context).
METADATA_REQUEST_ID = "request_id"
# The payload fields whose values are account ids, wherever they sit in the payload.
_ACCOUNT_FIELDS = frozenset({"account_id", "counterparty_account_id"})
# A word: letters, digits and underscores, with single hyphens inside (ids, codes).
_WORD = re.compile(r"\w+(?:-\w+)*")
# Longer words are not indexed: no search text (at most 200 characters) could name one,
# and a keyword term has a size limit in Elasticsearch.
WORD_LENGTH_MAX = 200


def words(text: str) -> list[str]:
    """The distinct words of ``text``, case-folded, in order of first occurrence: what a
    document is searchable by, and what a search text must all match."""
    found: dict[str, None] = {}
    # Split at white space first (no word spans it) and take most pieces whole: the
    # regular expression over the whole text cost the rebuild more than all the rest of
    # a document's words.
    for piece in text.casefold().split():
        if piece.isalnum() or (
            piece.replace("-", "").isalnum()
            and piece[0] != "-"
            and piece[-1] != "-"
            and "--" not in piece
        ):
            found[piece] = None
        else:
            found.update(dict.fromkeys(_WORD.findall(piece)))
    return [word for word in found if len(word) <= WORD_LENGTH_MAX]


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
    return message_json(message)


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
    strings: list[str] = [event_type]
    account_ids: list[str] = [stream_id]
    _collect(body, "", strings, account_ids)
    strings.extend(metadata.values())
    accounts = dict.fromkeys(account_ids)
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
        "words": words(" ".join(strings)),
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


def _collect(value: Any, key: str, strings: list[str], account_ids: list[str]) -> None:
    """Appends every string in a JSON value (the values, not the keys), depth first, to
    ``strings``, and those under an account-id key to ``account_ids``: one walk, as the
    rebuild does this for every event."""
    if isinstance(value, str):
        strings.append(value)
        if key in _ACCOUNT_FIELDS:
            account_ids.append(value)
    elif isinstance(value, dict):
        for name, item in value.items():
            _collect(item, name, strings, account_ids)
    elif isinstance(value, list):
        for item in value:
            _collect(item, "", strings, account_ids)

"""One poll's messages turned into what the projector applies: the events, the positions
the markers carry, and the offsets to commit.

Only markers move a watermark. An event's own position says nothing about the positions
below it: after a producer timeout a later event of the partition can arrive before an
earlier one that is published again. A marker is sent only once every event up to its
position is acknowledged, so it follows them in the log.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, Message
from google.protobuf.message import DecodeError

from chronos.event_store.mapper import EventDecodeError
from chronos.outbox import contract
from chronos.read_model.documents import EventRecord, record_from_envelope
from chronos.read_model.event_documents import source_from_message
from chronos.v1 import events_pb2
from projector.errors import ProjectorError
from projector.offsets import retention_overtook

_logger = logging.getLogger(__name__)


@dataclass(slots=True, kw_only=True)
class PolledBatch:
    """What one poll delivered, sorted out."""

    # The events, in the order the partitions delivered them.
    records: list[EventRecord] = field(default_factory=list)
    markers: int = 0
    # The highest position a marker carried, per partition.
    watermarks: dict[int, int] = field(default_factory=dict)
    # The next offset to consume, per partition (every message counts, errors aside).
    offsets: dict[int, int] = field(default_factory=dict)
    # The trace contexts the events carried, to continue their traces.
    traceparents: list[str] = field(default_factory=list)
    # (position, source) of each event's event-log document.
    events: list[tuple[int, dict[str, Any]]] = field(default_factory=list)


def read_batch(messages: list[Message], topic: str) -> PolledBatch:
    """Sorts ``messages`` into events, marker positions and offsets.

    Raises:
        ProjectorError: an event cannot be decoded, Kafka reported a fatal error, or
            retention deleted the next offset.
    """
    batch = PolledBatch()
    for message in messages:
        if _skip_error(message, topic):
            continue
        partition = message.partition()
        offset = message.offset()
        assert partition is not None and offset is not None
        headers = contract.headers_dict(message.headers())
        where = f"{message.topic()}[{partition}]@{offset}"
        if headers.get(contract.HEADER_EVENT_TYPE) == contract.MARKER_EVENT_TYPE:
            batch.markers += 1
            position = _marker_position(headers, where)
            if position is not None:
                batch.watermarks[partition] = max(batch.watermarks.get(partition, 0), position)
        else:
            record, event_source = _event_record(message, headers, where)
            batch.records.append(record)
            batch.events.append((record.position, event_source))
            traceparent = headers.get(contract.HEADER_TRACEPARENT, "")
            if traceparent:
                batch.traceparents.append(traceparent)
        batch.offsets[partition] = offset + 1
    return batch


def _marker_position(headers: dict[str, str], where: str) -> int | None:
    try:
        return int(headers[contract.HEADER_POSITION])
    except (KeyError, ValueError):
        # A marker carries no data, so a malformed one loses nothing.
        _logger.error("marker without a valid position at %s; ignored", where)
        return None


def _event_record(
    message: Message, headers: dict[str, str], where: str
) -> tuple[EventRecord, dict[str, Any]]:
    """The event a message carries, and its event-log document."""
    try:
        envelope = events_pb2.EventEnvelope.FromString(message.value() or b"")
        return record_from_envelope(envelope), source_from_message(envelope, headers)
    except (DecodeError, EventDecodeError) as error:
        # Skipping would leave the read model silently wrong; stop instead, so the
        # operator deploys code that understands the event (offsets stay put).
        raise ProjectorError(f"cannot decode the event at {where}: {error}") from error


def _skip_error(message: Message, topic: str) -> bool:
    """Whether ``message`` is a consumer error to log and pass over."""
    error = message.error()
    if error is None:
        return False
    if error.fatal():
        raise ProjectorError(f"Kafka fatal error: {error}")
    if error.code() == KafkaError._AUTO_OFFSET_RESET:
        raise retention_overtook(topic, message.partition(), error)
    if error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
        _logger.warning("topic %s is gone: %s", topic, error)
    else:
        _logger.warning("consumer error: %s", error)
    return True

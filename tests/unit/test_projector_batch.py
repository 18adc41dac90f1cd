"""One poll sorted out: only markers move watermarks, every message moves the offset,
and what cannot be projected stops the projector rather than being skipped."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from confluent_kafka import KafkaError, Message

from chronos.domain.events import AccountKind, AccountOpened
from chronos.event_store import mapper
from chronos.event_store.mapper import StoredEvent
from chronos.outbox import contract
from projector.batch import read_batch
from projector.errors import ProjectorError

TOPIC = "events"
ACCOUNT = "0b5f6f0e-1111-4c3a-9a57-0c7d3c1a0001"


def event_message(partition: int, offset: int, position: int, traceparent: str = "") -> Message:
    event_type, schema_version, payload = mapper.encode(
        AccountOpened(
            account_id=ACCOUNT,
            owner_name="Ada",
            currency="EUR",
            overdraft_limit_minor=0,
            kind=AccountKind.USER,
            metadata=(),
        )
    )
    stored = StoredEvent(
        position=position,
        event_id=str(uuid.uuid4()),
        stream_id=ACCOUNT,
        stream_version=1,
        event_type=event_type,
        schema_version=schema_version,
        payload=payload,
        metadata={},
        recorded_at=datetime(2026, 3, 1, tzinfo=UTC),
    )
    headers: list[tuple[str, str | bytes | None]] = [
        (contract.HEADER_EVENT_TYPE, event_type.encode())
    ]
    if traceparent:
        headers.append((contract.HEADER_TRACEPARENT, traceparent.encode()))
    return Message(
        topic=TOPIC,
        partition=partition,
        offset=offset,
        value=mapper.envelope(stored).SerializeToString(),
        headers=headers,
    )


def marker_message(partition: int, offset: int, position: str) -> Message:
    return Message(
        topic=TOPIC,
        partition=partition,
        offset=offset,
        value=b"",
        headers=[
            (contract.HEADER_EVENT_TYPE, contract.MARKER_EVENT_TYPE.encode()),
            (contract.HEADER_POSITION, position.encode()),
        ],
    )


def error_message(code: int, *, fatal: bool = False) -> Message:
    return Message(topic=TOPIC, partition=0, offset=-1, error=KafkaError(code, fatal=fatal))


def test_only_markers_move_watermarks_and_every_message_moves_its_offset() -> None:
    batch = read_batch(
        [
            event_message(0, 10, position=7, traceparent="00-abc-def-01"),
            marker_message(0, 11, "5"),
            marker_message(0, 12, "3"),
            marker_message(1, 4, "6"),
            event_message(2, 20, position=9),
        ],
        TOPIC,
    )
    assert [record.position for record in batch.records] == [7, 9]
    assert batch.markers == 3
    assert batch.watermarks == {0: 5, 1: 6}
    assert batch.offsets == {0: 13, 1: 5, 2: 21}
    assert batch.traceparents == ["00-abc-def-01"]


def test_a_malformed_marker_is_ignored_but_consumed() -> None:
    batch = read_batch([marker_message(0, 3, "not a position")], TOPIC)
    assert batch.markers == 1
    assert batch.watermarks == {}
    assert batch.offsets == {0: 4}


def test_an_undecodable_event_stops_the_projector() -> None:
    garbage = Message(topic=TOPIC, partition=0, offset=8, value=b"\xff\xff", headers=[])
    with pytest.raises(ProjectorError, match=r"cannot decode the event at events\[0\]@8"):
        read_batch([garbage], TOPIC)


def test_a_transient_consumer_error_is_skipped() -> None:
    batch = read_batch([error_message(KafkaError._TRANSPORT), marker_message(1, 0, "2")], TOPIC)
    assert batch.watermarks == {1: 2}
    assert batch.offsets == {1: 1}


def test_a_fatal_error_and_a_retention_gap_stop_the_projector() -> None:
    with pytest.raises(ProjectorError, match="fatal"):
        read_batch([error_message(KafkaError._FENCED, fatal=True)], TOPIC)
    with pytest.raises(ProjectorError, match="deleted before they were projected"):
        read_batch([error_message(KafkaError._AUTO_OFFSET_RESET)], TOPIC)

"""Version gaps in what Kafka delivered are filled from the event store, per account."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from chronos.read_model.documents import EventRecord
from chronos.read_model.history import GAP_EVENTS_MAX
from projector.applier import with_gaps_filled
from projector.errors import ProjectorError
from tests.unit.test_projector_cache import document

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def record(stream_id: str, version: int) -> EventRecord:
    # The fold is not under test: the event itself does not matter here.
    event: Any = None
    return EventRecord(
        event_id=f"{stream_id}/{version}",
        stream_id=stream_id,
        stream_version=version,
        position=version,
        recorded_at=T0,
        event=event,
    )


class FakeHistory:
    def __init__(self) -> None:
        self.reads: list[tuple[str, int, int]] = []

    def events(
        self, stream_id: str, *, after_version: int, up_to_version: int
    ) -> list[EventRecord]:
        self.reads.append((stream_id, after_version, up_to_version))
        return [record(stream_id, v) for v in range(after_version + 1, up_to_version + 1)]


def test_a_batch_without_gaps_reads_nothing() -> None:
    history = FakeHistory()
    records = [record("a", 3), record("a", 4), record("b", 1), record("a", 3)]
    assert with_gaps_filled({"a": document("a", 2), "b": None}, records, history) is records
    assert history.reads == []


def test_an_account_that_skips_a_version_is_read_up_to_its_newest_delivered() -> None:
    history = FakeHistory()
    records = [record("a", 3), record("b", 4), record("a", 4), record("b", 2)]
    filled = with_gaps_filled({"a": document("a", 2), "b": None}, records, history)
    assert history.reads == [("b", 0, 4)]
    assert [(r.stream_id, r.stream_version) for r in filled] == [
        ("a", 3),
        ("a", 4),
        ("b", 1),
        ("b", 2),
        ("b", 3),
        ("b", 4),
    ]


def test_a_gap_too_long_to_fill_stops_the_projector() -> None:
    history = FakeHistory()
    records = [record("a", GAP_EVENTS_MAX + 2)]
    with pytest.raises(ProjectorError, match="rebuild"):
        with_gaps_filled({"a": document("a", 1)}, records, history)
    assert history.reads == []

"""What one projector step did, for logs, metrics and tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from chronos.read_model.documents import Outcome
from chronos.read_model.es_writer import WriteResult


@dataclass(slots=True, kw_only=True)
class BatchReport:
    """What one step did."""

    messages: int = 0
    events: int = 0
    markers: int = 0
    write: WriteResult = field(default_factory=WriteResult)
    # The highest position the batch's markers carried, per partition.
    watermarks: dict[int, int] = field(default_factory=dict)
    outcomes: dict[Outcome, int] = field(default_factory=dict)
    # The offsets were handed to the consumer to commit (asynchronously).
    committed: bool = False
    # Seconds from the newest event's commit in PostgreSQL to its watermark being
    # written: the projection lag as a reader sees it.
    lag_seconds_max: float = 0.0


def describe(report: BatchReport) -> dict[str, Any]:
    """A log-friendly summary of a batch."""
    return {
        "messages": report.messages,
        "events": report.events,
        "markers": report.markers,
        "accounts_written": report.write.accounts_written,
        "accounts_stale": report.write.accounts_stale,
        "lines_written": report.write.transactions_written,
        "lines_duplicate": report.write.transactions_duplicate,
        "lag_seconds_max": round(report.lag_seconds_max, 4),
    }

"""Metadata on money movements: the caller's labels, carried onto every line.

A deposit, withdrawal, transfer or journal entry may carry metadata (e.g. an order id),
validated like an account's (``validation``), part of the request's fingerprint, and
stored on each line event of the entry, so a statement line shows it and a statement
can be filtered by it.
"""

from __future__ import annotations

from dataclasses import replace

from chronos.domain.events import DomainEvent, LinePosted


def with_metadata(
    events: tuple[DomainEvent, ...], metadata: tuple[tuple[str, str], ...]
) -> tuple[DomainEvent, ...]:
    """``events`` with ``metadata`` on each line event (other events unchanged)."""
    if not metadata:
        return events
    return tuple(
        replace(event, metadata=metadata) if isinstance(event, LinePosted) else event
        for event in events
    )

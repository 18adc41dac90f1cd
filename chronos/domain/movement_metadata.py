"""Metadata on money movements: the caller's labels, carried onto every line.

A deposit, withdrawal, transfer, journal entry, reversal or hold command may carry
metadata (e.g. an order id), validated like an account's (``validation``), part of the
request's fingerprint, and stored on each line event it writes, so a statement line
shows it and a statement can be filtered by it. A hold also keeps the metadata it was
placed with (``hold_metadata`` on each of its events), for ListPendingTransfers.
"""

from __future__ import annotations

from dataclasses import replace

from chronos.domain.events import DomainEvent, HoldLine, LinePosted


def with_metadata(
    events: tuple[DomainEvent, ...], metadata: tuple[tuple[str, str], ...]
) -> tuple[DomainEvent, ...]:
    """``events`` with ``metadata`` on each line event, a hold's lines included (other
    events unchanged)."""
    if not metadata:
        return events
    return tuple(
        replace(event, metadata=metadata) if isinstance(event, LinePosted | HoldLine) else event
        for event in events
    )

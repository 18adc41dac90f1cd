"""The recompute of an account's open holds, for ``chronos reconcile``.

The projection takes each event's pending sums as they are written; the reconciliation
recomputes them from the hold events' amounts, as it recomputes balances from the
lines' amounts, and reports an event whose recorded sums disagree with the running ones.
"""

from __future__ import annotations

from chronos.domain.commands import Side
from chronos.domain.events import DomainEvent, HoldLine, LinePosted, PendingTransferPosted


def check_pending(
    running: dict[str, tuple[int, int]], stream_id: str, event: DomainEvent
) -> str | None:
    """Folds ``event`` into the running (debits, credits) of ``stream_id``.

    Returns:
        What disagrees, or None when the event's recorded pending sums match.
    """
    debits, credits = running.get(stream_id, (0, 0))
    change = 0
    if isinstance(event, HoldLine):
        change = event.pending_change_minor
    elif isinstance(event, PendingTransferPosted):
        change = -(event.amount_minor + event.released_minor)
    elif not isinstance(event, LinePosted):
        running.setdefault(stream_id, (debits, credits))
        return None
    if event.side is Side.DEBIT:
        debits += change
    else:
        credits += change
    running[stream_id] = (debits, credits)
    recorded = (event.pending_debits_after_minor, event.pending_credits_after_minor)
    if recorded != (debits, credits):
        return (
            f"{stream_id} pending after (debits, credits) {recorded}, "
            f"running sums {(debits, credits)}"
        )
    return None

"""How the event store fails: the errors a caller of the writer sees beside a Rejection,
and which failures are the server's rather than the client's."""

from __future__ import annotations

from chronos.domain.errors import Reason, Rejection
from chronos.errors import ChronosError


class StoreUnavailable(ChronosError):
    """The database could not be reached or failed mid-transaction; nothing committed
    that the caller can rely on (a retry with the same request_id is safe)."""


class CommitOutcomeUnknown(StoreUnavailable):
    """The connection was lost after the COMMIT was sent and before its answer came: the
    commands may or may not have been recorded. A retry with the same request_id returns
    the stored answer if they were, and applies them once if not."""


class StoreFailure(ChronosError):
    """The database refused a write for a reason that is not the client's (a bug)."""


def unavailable(error: Exception) -> StoreUnavailable:
    """The error a caller sees when the database could not run its command."""
    return StoreUnavailable(f"the ledger database is unavailable: {error}")


def is_server_failure(outcome: object) -> bool:
    """Whether a command failed for a reason that is not the client's: the ledger did not
    decide it, so a command ordered after it must not run before it is resent."""
    if isinstance(outcome, Rejection):
        return outcome.reason in (Reason.CONCURRENCY_CONFLICT, Reason.NOT_APPLIED)
    return isinstance(outcome, StoreUnavailable | StoreFailure)


def not_applied(failed_request_id: str) -> Rejection:
    """The answer of a command of an ordered batch that was not run because the command
    with ``failed_request_id`` before it failed for a server reason."""
    return Rejection(
        Reason.NOT_APPLIED,
        "Not applied, to keep the batch in order: the command before it with request_id "
        f"{failed_request_id!r} failed for a reason that is not yours (see its answer). "
        "Resend the batch from that command on, with the same request_ids.",
        metadata={"request_id": failed_request_id},
    )

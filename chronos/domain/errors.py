"""Why a call is refused: the ledger's decisions, and the service's own reasons.

Every refusal is a :class:`Rejection` carrying one :class:`Reason`. The gRPC edge maps
each reason once to a status code and a ``google.rpc.ErrorInfo`` reason
(``chronos.rpc.status``), for both servers; nothing else decides what a client sees.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from chronos.errors import ChronosError


class Reason(enum.Enum):
    """Every reason a client can be given, spelled as it travels in ``ErrorInfo``.

    The ledger's decisions come first, and their declaration order is the precedence:
    when a command breaks several rules, the ledger reports the first one that applies,
    in this order, so the same request always gets the same answer.
    """

    # Who may call. The servers check the caller before anything about the request, so a
    # caller without the right learns nothing from the answer: these come first.
    #
    # No valid bearer token: missing, malformed, expired, or not verifiable.
    UNAUTHENTICATED = "UNAUTHENTICATED"
    # The token lacks the method's (or a batch item's) scope, or is restricted to
    # accounts that do not include one the request debits, changes or reads.
    PERMISSION_DENIED = "PERMISSION_DENIED"

    VALIDATION_FAILED = "VALIDATION_FAILED"
    IDEMPOTENCY_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"
    ACCOUNT_NOT_FOUND = "ACCOUNT_NOT_FOUND"
    # No hold has this pending_id.
    PENDING_TRANSFER_NOT_FOUND = "PENDING_TRANSFER_NOT_FOUND"
    # ReverseEntry: no entry has the id; the entry is a reversal or a hold's post (or
    # another kind that cannot be reversed); the entry was reversed already.
    ENTRY_NOT_FOUND = "ENTRY_NOT_FOUND"
    ENTRY_NOT_REVERSIBLE = "ENTRY_NOT_REVERSIBLE"
    ENTRY_ALREADY_REVERSED = "ENTRY_ALREADY_REVERSED"
    ACCOUNT_EXISTS = "ACCOUNT_EXISTS"
    ACCOUNT_CLOSED = "ACCOUNT_CLOSED"
    ACCOUNT_FROZEN = "ACCOUNT_FROZEN"
    ACCOUNT_NOT_FROZEN = "ACCOUNT_NOT_FROZEN"
    CURRENCY_MISMATCH = "CURRENCY_MISMATCH"
    # The hold was already posted, voided or expired (or its timeout has passed).
    PENDING_TRANSFER_NOT_PENDING = "PENDING_TRANSFER_NOT_PENDING"
    # A post asked for more than the hold reserves.
    AMOUNT_EXCEEDS_PENDING = "AMOUNT_EXCEEDS_PENDING"
    INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"
    BALANCE_OVERFLOW = "BALANCE_OVERFLOW"
    ACCOUNT_NOT_EMPTY = "ACCOUNT_NOT_EMPTY"
    # Closing an account that still has open holds (pending debits or credits).
    ACCOUNT_HAS_PENDING = "ACCOUNT_HAS_PENDING"
    CONCURRENCY_CONFLICT = "CONCURRENCY_CONFLICT"
    # Of an ordered batch (ExecuteBatch): an earlier command failed for a reason that is
    # not the client's, so this one was not run, to keep the batch's order.
    NOT_APPLIED = "NOT_APPLIED"
    # Of an atomic batch (ExecuteBatch with atomic set): another command of the batch
    # failed, so none of them was recorded; this one may be sent again unchanged.
    LINKED_COMMAND_FAILED = "LINKED_COMMAND_FAILED"

    # The service's own reasons. They say nothing about the request, only that the
    # service could not answer it now, so they never compete with the ledger's
    # decisions above and have no precedence among themselves.
    #
    # The process already holds its limit of work in flight; nothing was started.
    SERVER_BUSY = "SERVER_BUSY"
    # The caller made more calls than its per-principal rate allows; nothing was started.
    RATE_LIMITED = "RATE_LIMITED"
    # PostgreSQL could not be written; nothing was recorded.
    DATABASE_UNAVAILABLE = "DATABASE_UNAVAILABLE"
    # The connection was lost while the commit was sent: it may have been recorded, so
    # only a retry with the same request_id is safe.
    COMMIT_OUTCOME_UNKNOWN = "COMMIT_OUTCOME_UNKNOWN"
    # A failure of the server itself, never caused by what a client sent.
    INTERNAL_ERROR = "INTERNAL_ERROR"
    # The read model has not yet applied the ``min_position`` the query asked for.
    PROJECTION_BEHIND = "PROJECTION_BEHIND"
    # Elasticsearch cannot answer the query right now.
    READ_MODEL_UNAVAILABLE = "READ_MODEL_UNAVAILABLE"


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One invalid field of a request: ``field`` is its path, e.g. ``lines[2].amount``."""

    field: str
    description: str


class Rejection(ChronosError):
    """A refused call: the ledger refused a command, or the service could not answer.

    Nothing was written, except that with ``COMMIT_OUTCOME_UNKNOWN`` a command may have
    been recorded. Both servers raise this type and translate it once, at the edge.

    Attributes:
        reason: Why, as one of the fixed reasons.
        message: A sentence a person understands.
        violations: For ``VALIDATION_FAILED``, every invalid field.
        metadata: Machine-readable details (e.g. ``account_id``) for ``ErrorInfo``.
    """

    def __init__(
        self,
        reason: Reason,
        message: str,
        *,
        violations: tuple[FieldViolation, ...] = (),
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.violations = violations
        self.metadata = dict(metadata or {})

    def __repr__(self) -> str:
        return f"Rejection({self.reason.value}, {self.message!r})"


# How much of the message lists violations: the ones that fit are spelled out, the rest
# counted (every one stays in ``violations``). A status travels in gRPC trailers, which
# clients refuse beyond 8-16 kB; a usual request's violations fit whole.
MESSAGE_SUMMARY_LENGTH_MAX = 300


def validation_failed(violations: list[FieldViolation]) -> Rejection:
    assert violations, "a validation failure needs at least one violation"
    parts: list[str] = []
    length = 0
    for violation in violations:
        part = f"{violation.field}: {violation.description}"
        length += len(part) + 2
        if parts and length > MESSAGE_SUMMARY_LENGTH_MAX:
            break
        parts.append(part)
    summary = "; ".join(parts)
    if len(violations) > len(parts):
        summary += f"; and {len(violations) - len(parts)} more"
    return Rejection(
        Reason.VALIDATION_FAILED,
        f"The request is invalid: {summary}.",
        violations=tuple(violations),
    )

"""The one translation of a refusal into what a gRPC client sees, for both servers.

A :class:`~chronos.domain.errors.Rejection` leaves a server only through
:func:`rejection_proto` (an item's outcome inside a batch) or :func:`abort` (a call's
status): a gRPC status code chosen by its reason, a message a person understands, and
``google.rpc.ErrorInfo`` (plus ``google.rpc.BadRequest`` for invalid fields) in the
``grpc-status-details-bin`` trailer, which grpcurl and every gRPC SDK decode.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NoReturn

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from chronos.domain.errors import FieldViolation, Reason, Rejection

ERROR_DOMAIN = "chronos.ledger"

STATUS_BY_REASON: dict[Reason, grpc.StatusCode] = {
    # Who may call.
    Reason.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    Reason.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    # The ledger's decisions.
    Reason.VALIDATION_FAILED: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.IDEMPOTENCY_KEY_REUSED: grpc.StatusCode.ALREADY_EXISTS,
    Reason.ACCOUNT_NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Reason.PENDING_TRANSFER_NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Reason.ENTRY_NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Reason.ENTRY_NOT_REVERSIBLE: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.ENTRY_ALREADY_REVERSED: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.ACCOUNT_EXISTS: grpc.StatusCode.ALREADY_EXISTS,
    Reason.ACCOUNT_CLOSED: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.ACCOUNT_FROZEN: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.ACCOUNT_NOT_FROZEN: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.CURRENCY_MISMATCH: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.PENDING_TRANSFER_NOT_PENDING: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.AMOUNT_EXCEEDS_PENDING: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.INSUFFICIENT_FUNDS: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.BALANCE_OVERFLOW: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.ACCOUNT_NOT_EMPTY: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.ACCOUNT_HAS_PENDING: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.CONCURRENCY_CONFLICT: grpc.StatusCode.ABORTED,
    Reason.NOT_APPLIED: grpc.StatusCode.ABORTED,
    Reason.LINKED_COMMAND_FAILED: grpc.StatusCode.ABORTED,
    # The service's own reasons.
    Reason.SERVER_BUSY: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Reason.RATE_LIMITED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Reason.DATABASE_UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    Reason.COMMIT_OUTCOME_UNKNOWN: grpc.StatusCode.UNAVAILABLE,
    Reason.INTERNAL_ERROR: grpc.StatusCode.INTERNAL,
    Reason.PROJECTION_BEHIND: grpc.StatusCode.UNAVAILABLE,
    Reason.READ_MODEL_UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
}
assert set(STATUS_BY_REASON) == set(Reason), "every reason needs a status code"

# A call's status travels in its trailers (the message in grpc-message, percent-encoded,
# and again in grpc-status-details-bin, base64), and gRPC clients refuse trailers over
# 8 kB at random and over 16 kB always: they then see RESOURCE_EXHAUSTED, not the
# answer. A 64-line journal entry with every field invalid made 33.8 kB. These bounds
# keep any status near 5 kB on the wire in the worst case (all text non-ASCII).
MESSAGE_LENGTH_MAX = 512
VIOLATIONS_BYTES_MAX = 1536
_VIOLATION_FIELD_LENGTH_MAX = 128
_VIOLATION_DESCRIPTION_LENGTH_MAX = 256


def rejection_proto(rejection: Rejection) -> status_pb2.Status:
    """The ``google.rpc.Status`` of ``rejection``: sent as a call's status, or as one
    item's outcome inside a batch.

    It carries ErrorInfo (the reason, in the ``chronos.ledger`` domain, with the
    rejection's metadata) and, when there are violations, BadRequest.
    """
    details: list[any_pb2.Any] = []
    info = error_details_pb2.ErrorInfo(
        reason=rejection.reason.value, domain=ERROR_DOMAIN, metadata=rejection.metadata
    )
    packed = any_pb2.Any()
    packed.Pack(info)
    details.append(packed)
    if rejection.violations:
        bad_request = error_details_pb2.BadRequest(field_violations=_bounded(rejection.violations))
        packed = any_pb2.Any()
        packed.Pack(bad_request)
        details.append(packed)
    message = rejection.message
    if len(message) > MESSAGE_LENGTH_MAX:
        message = message[: MESSAGE_LENGTH_MAX - 1] + "…"
    code = STATUS_BY_REASON[rejection.reason]
    return status_pb2.Status(code=getattr(code_pb2, code.name), message=message, details=details)


def rejection_status(rejection: Rejection) -> grpc.Status:
    """The call status of ``rejection`` (see :func:`rejection_proto`)."""
    return rpc_status.to_status(rejection_proto(rejection))


async def abort(
    context: grpc.aio.ServicerContext[object, object], rejection: Rejection
) -> NoReturn:
    """Ends the call with the status of ``rejection`` (raises, as grpc.aio's abort does)."""
    status = rejection_status(rejection)
    await context.abort(status.code, status.details, trailing_metadata=status.trailing_metadata)
    raise AssertionError("grpc.aio's abort() returned")


def _bounded(
    violations: Sequence[FieldViolation],
) -> list[error_details_pb2.BadRequest.FieldViolation]:
    """The violations a status carries: as many as fit the byte budget, then a count."""
    kept: list[error_details_pb2.BadRequest.FieldViolation] = []
    size_bytes = 0
    for violation in violations:
        field = violation.field[:_VIOLATION_FIELD_LENGTH_MAX]
        description = violation.description[:_VIOLATION_DESCRIPTION_LENGTH_MAX]
        size_bytes += len(field.encode()) + len(description.encode())
        if kept and size_bytes > VIOLATIONS_BYTES_MAX:
            break
        kept.append(
            error_details_pb2.BadRequest.FieldViolation(field=field, description=description)
        )
    omitted = len(violations) - len(kept)
    if omitted:
        kept.append(
            error_details_pb2.BadRequest.FieldViolation(
                field="request", description=f"and {omitted} more violations, not listed"
            )
        )
    return kept

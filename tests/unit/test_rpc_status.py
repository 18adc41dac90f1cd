"""Error statuses on the wire (chronos.rpc.status): their size, codes and details."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2

from chronos.domain import limits, validation
from chronos.domain.commands import (
    JournalLine,
    Money,
    OpenAccount,
    PostJournalEntry,
    TransferFunds,
)
from chronos.domain.errors import FieldViolation, Reason, Rejection, validation_failed
from chronos.rpc import rejection_proto, rejection_status

# gRPC clients refuse trailers over 8 KiB at random and over 16 KiB always (their
# defaults), and then see RESOURCE_EXHAUSTED instead of the answer.
TRAILERS_SOFT_LIMIT_BYTES = 8 * 1024

NUL = "\x00"
WORST_CASES = [
    # Every line of the largest journal entry invalid in every field, echoing 64 characters.
    PostJournalEntry(
        request_id=NUL * 200,
        lines=tuple(
            JournalLine(
                account_id="é" * 64, amount=Money(currency=NUL * 16, minor_units=-1), side=None
            )
            for _ in range(limits.JOURNAL_LINES_MAX)
        ),
        description="😀" * 600,
    ),
    # Every metadata entry invalid, with keys and values at their largest.
    OpenAccount(
        request_id=NUL * 200,
        account_id="é" * 64,
        owner_name=NUL * 300,
        currency=NUL * 16,
        overdraft_limit_minor=-1,
        metadata=tuple(
            (f"{index:02d}" + "é" * 70, "😀" * 600) for index in range(limits.METADATA_ENTRIES_MAX)
        ),
    ),
]


@pytest.mark.parametrize("command", WORST_CASES, ids=["journal", "open_account"])
def test_the_largest_refusal_fits_a_clients_trailers(command: object) -> None:
    with pytest.raises(Rejection) as caught:
        validation.validate(command)  # type: ignore[arg-type]
    rejection = caught.value
    assert len(rejection.violations) > 60  # the domain keeps every one
    status = rejection_status(rejection)
    assert status.code is grpc.StatusCode.INVALID_ARGUMENT
    # What goes on the wire: grpc-message (percent-encoded) and the details, base64.
    message_bytes = len(status.details.encode()) * 3
    details_bytes = sum(len(value) * 4 // 3 + 4 for _, value in status.trailing_metadata)
    assert message_bytes + details_bytes < TRAILERS_SOFT_LIMIT_BYTES
    assert status.details.startswith("The request is invalid: ")
    assert " more." in status.details[-16:]


def test_a_usual_refusal_lists_every_violation_in_its_message() -> None:
    command = TransferFunds(
        request_id="",
        from_account_id="nope",
        to_account_id="nope",
        amount=Money(currency="eur", minor_units=-5),
    )
    with pytest.raises(Rejection) as caught:
        validation.validate(command)
    message = rejection_status(caught.value).details
    for field in ("request_id", "from_account_id", "to_account_id", "amount.currency"):
        assert f"{field}: " in message
    assert message.endswith("amount.minor_units: must be positive.")


# Every reason a client can see, as the README's error table gives its code. The wire
# spelling is the contract: renaming a member must not change what travels.
CODE_BY_WIRE_REASON = {
    "UNAUTHENTICATED": "UNAUTHENTICATED",
    "PERMISSION_DENIED": "PERMISSION_DENIED",
    "VALIDATION_FAILED": "INVALID_ARGUMENT",
    "IDEMPOTENCY_KEY_REUSED": "ALREADY_EXISTS",
    "ACCOUNT_NOT_FOUND": "NOT_FOUND",
    "PENDING_TRANSFER_NOT_FOUND": "NOT_FOUND",
    "ENTRY_NOT_FOUND": "NOT_FOUND",
    "ENTRY_NOT_REVERSIBLE": "FAILED_PRECONDITION",
    "ENTRY_ALREADY_REVERSED": "FAILED_PRECONDITION",
    "ACCOUNT_EXISTS": "ALREADY_EXISTS",
    "ACCOUNT_CLOSED": "FAILED_PRECONDITION",
    "ACCOUNT_FROZEN": "FAILED_PRECONDITION",
    "ACCOUNT_NOT_FROZEN": "FAILED_PRECONDITION",
    "CURRENCY_MISMATCH": "FAILED_PRECONDITION",
    "PENDING_TRANSFER_NOT_PENDING": "FAILED_PRECONDITION",
    "AMOUNT_EXCEEDS_PENDING": "FAILED_PRECONDITION",
    "INSUFFICIENT_FUNDS": "FAILED_PRECONDITION",
    "BALANCE_OVERFLOW": "FAILED_PRECONDITION",
    "ACCOUNT_NOT_EMPTY": "FAILED_PRECONDITION",
    "ACCOUNT_HAS_PENDING": "FAILED_PRECONDITION",
    "CONCURRENCY_CONFLICT": "ABORTED",
    "NOT_APPLIED": "ABORTED",
    "LINKED_COMMAND_FAILED": "ABORTED",
    "SERVER_BUSY": "RESOURCE_EXHAUSTED",
    "RATE_LIMITED": "RESOURCE_EXHAUSTED",
    "DATABASE_UNAVAILABLE": "UNAVAILABLE",
    "COMMIT_OUTCOME_UNKNOWN": "UNAVAILABLE",
    "INTERNAL_ERROR": "INTERNAL",
    "PROJECTION_BEHIND": "UNAVAILABLE",
    "READ_MODEL_UNAVAILABLE": "UNAVAILABLE",
}


@pytest.mark.parametrize("reason", list(Reason), ids=lambda reason: reason.value)
def test_every_reason_travels_with_its_code_and_error_info(reason: Reason) -> None:
    status = rejection_proto(Rejection(reason, "Why.", metadata={"account_id": "a"}))
    assert code_pb2.Code.Name(status.code) == CODE_BY_WIRE_REASON[reason.value]
    assert status.message == "Why."
    (detail,) = status.details
    info = error_details_pb2.ErrorInfo()
    assert detail.Unpack(info)
    assert (info.reason, info.domain, dict(info.metadata)) == (
        reason.value,
        "chronos.ledger",
        {"account_id": "a"},
    )


def test_the_reasons_are_exactly_the_wire_reasons() -> None:
    assert [reason.value for reason in Reason] == list(CODE_BY_WIRE_REASON)
    assert all(reason.name == reason.value for reason in Reason)


def test_the_ledgers_decisions_keep_their_precedence_before_the_services_reasons() -> None:
    reasons = list(Reason)
    assert reasons.index(Reason.NOT_APPLIED) < reasons.index(Reason.SERVER_BUSY)
    # Who may call comes before the ledger's decisions (checked before the request).
    assert reasons.index(Reason.UNAUTHENTICATED) < reasons.index(Reason.VALIDATION_FAILED)
    assert reasons.index(Reason.PERMISSION_DENIED) < reasons.index(Reason.VALIDATION_FAILED)
    ledger = reasons[reasons.index(Reason.VALIDATION_FAILED) :]
    assert ledger[:3] == [
        Reason.VALIDATION_FAILED,
        Reason.IDEMPOTENCY_KEY_REUSED,
        Reason.ACCOUNT_NOT_FOUND,
    ]


def test_violations_travel_as_bad_request() -> None:
    rejection = validation_failed([FieldViolation("currency", "is required")])
    status = rejection_proto(rejection)
    assert status.message == "The request is invalid: currency: is required."
    bad_request = error_details_pb2.BadRequest()
    assert status.details[1].Unpack(bad_request)
    assert [(v.field, v.description) for v in bad_request.field_violations] == [
        ("currency", "is required")
    ]

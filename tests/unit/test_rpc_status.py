"""The size of an error status on the wire (chronos.rpc)."""

from __future__ import annotations

import grpc
import pytest

from chronos.domain import limits, validation
from chronos.domain.commands import (
    JournalLine,
    Money,
    OpenAccount,
    PostJournalEntry,
    TransferFunds,
)
from chronos.domain.errors import Rejection
from chronos.rpc import rejection_status

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

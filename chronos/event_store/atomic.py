"""All-or-nothing batches: how the commands of an atomic batch answer when one fails.

An atomic batch (``ExecuteBatch`` with ``atomic`` set) is run as one transaction of its
own: its commands are decided in order, each seeing what the ones before it did, and
either every command commits or none does. When one fails, nothing of the batch is
recorded (no events, no idempotency records), the failing command answers its own
reason and every other command answers LINKED_COMMAND_FAILED naming it. This module is
pure: it only computes those answers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeVar

from chronos.domain.errors import Reason, Rejection

_Outcome = TypeVar("_Outcome")


def linked_failure(failed_index: int, failure: Rejection) -> Rejection:
    """The answer of a command of an atomic batch that did not fail itself but was not
    recorded, because the command at ``failed_index`` (0-based) failed with ``failure``."""
    return Rejection(
        Reason.LINKED_COMMAND_FAILED,
        f"Not recorded: the batch is atomic and its command {failed_index} failed with "
        f"{failure.reason.value}, so none of its commands was recorded. Fix that command "
        "and send the batch again; the same request_ids may be reused.",
        metadata={"failed_index": str(failed_index), "failed_reason": failure.reason.value},
    )


def linked_answers(failures: Mapping[int, Rejection], count: int) -> list[Rejection]:
    """The answers of an atomic batch of ``count`` commands refused before the ledger
    decided any (authorization, validation): every refused command keeps its own
    rejection, since each is true of that command alone, and every other command
    answers LINKED_COMMAND_FAILED naming the first refused one."""
    assert failures, "an atomic batch with no failure has no linked answers"
    first = min(failures)
    link = linked_failure(first, failures[first])
    return [failures.get(index, link) for index in range(count)]


def all_or_nothing(
    outcomes: Sequence[_Outcome | Rejection],
) -> list[_Outcome | Rejection] | None:
    """Settles the outcomes of an atomic batch the ledger decided, in order.

    Returns:
        None when no command failed (the batch commits). Otherwise the answers: the
        first failing command keeps its own rejection and every other command answers
        LINKED_COMMAND_FAILED. A later command's own rejection is not kept: it was
        decided after the failure, against a state that is now void.
    """
    first = next((i for i, o in enumerate(outcomes) if isinstance(o, Rejection)), None)
    if first is None:
        return None
    failure = outcomes[first]
    assert isinstance(failure, Rejection)
    link = linked_failure(first, failure)
    return [failure if index == first else link for index in range(len(outcomes))]

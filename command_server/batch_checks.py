"""The checks of an ``ExecuteBatch`` request as a whole, before any command runs."""

from __future__ import annotations

from collections.abc import Sequence

from chronos.domain import limits
from chronos.domain.commands import Command
from chronos.domain.errors import FieldViolation, Rejection, validation_failed
from chronos.event_store.context import CommandContext
from chronos.v1 import commands_pb2


def batch_violation(request: commands_pb2.ExecuteBatchRequest) -> str | None:
    """Why the batch is refused whole (too few or too many commands or journal lines),
    or None."""
    count = len(request.commands)
    if not 1 <= count <= limits.BATCH_COMMANDS_MAX:
        return f"must hold 1 to {limits.BATCH_COMMANDS_MAX} commands, got {count}"
    lines = sum(
        len(item.post_journal_entry.lines)
        for item in request.commands
        if item.HasField("post_journal_entry")
    )
    if lines > limits.BATCH_JOURNAL_LINES_MAX:
        return (
            f"journal entries must hold at most {limits.BATCH_JOURNAL_LINES_MAX} "
            f"lines in all, got {lines}: split the batch"
        )
    return None


def repeated_request_ids(
    prepared: Sequence[tuple[Command, bytes, CommandContext]], indexes: Sequence[int]
) -> dict[int, Rejection]:
    """The commands of an atomic batch that repeat an earlier command's request_id, by
    index, each with its VALIDATION_FAILED.

    In an ordered batch a repeat replays the first copy's answer; in an atomic batch
    both copies would have to be decided in one transaction, where the first copy has
    no answer yet, so each command needs its own request_id.
    """
    first_at: dict[str, int] = {}
    repeats: dict[int, Rejection] = {}
    for index, (command, _, _) in zip(indexes, prepared, strict=True):
        earlier = first_at.setdefault(command.request_id, index)
        if earlier != index:
            rejection = validation_failed(
                [
                    FieldViolation(
                        "request_id",
                        f"repeats the request_id of command {earlier}: in an atomic batch "
                        "every command needs its own request_id",
                    )
                ]
            )
            rejection.metadata["request_id"] = command.request_id
            repeats[index] = rejection
    return repeats

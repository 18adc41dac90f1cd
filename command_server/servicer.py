"""``chronos.v1.CommandService``: protobuf in, domain command through the writer, protobuf out.

Protobuf ↔ domain mapping happens only at this edge, in :mod:`command_server.requests`
(and :mod:`command_server.holds`). Every error a client can cause leaves as a rich status
(see ``chronos.rpc.status``); nothing a client sends can produce INTERNAL or UNKNOWN.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import grpc
from google.rpc import status_pb2
from opentelemetry import trace

from chronos.domain import limits, validation
from chronos.domain.commands import Command, OpenAccount
from chronos.domain.errors import FieldViolation, Reason, Rejection, validation_failed
from chronos.errors import ChronosError
from chronos.event_store.atomic import linked_answers
from chronos.event_store.results import CommandResult
from chronos.event_store.writer import (
    CommandContext,
    CommitOutcomeUnknown,
    LedgerWriter,
    StoreUnavailable,
)
from chronos.metrics import COMMANDS_REJECTED
from chronos.rpc.refusals import COMMAND_SERVER, refused
from chronos.rpc.status import abort, rejection_proto
from chronos.security.authorization import authorize_command
from chronos.security.caller import current_caller
from chronos.telemetry import SPAN_ENDUSER_ID
from chronos.v1 import commands_pb2, commands_pb2_grpc
from command_server import holds
from command_server.batch_checks import batch_violation, repeated_request_ids
from command_server.requests import (
    FROM_PROTO,
    close_from_proto,
    deposit_from_proto,
    freeze_from_proto,
    journal_from_proto,
    open_account_from_proto,
    result_to_proto,
    reverse_entry_from_proto,
    transfer_from_proto,
    unfreeze_from_proto,
    withdraw_from_proto,
)

_logger = logging.getLogger(__name__)


def _metadata_value(context: grpc.aio.ServicerContext[Any, Any], key: str) -> str:
    for item in context.invocation_metadata() or ():
        if item.key == key and isinstance(item.value, str):
            return item.value[:128]
    return ""


def commands_in(request: Any) -> int:
    """How many commands a request carries, for the server's in-flight limit. An
    oversized batch weighs the most a valid one may, and is then refused as invalid."""
    if isinstance(request, commands_pb2.ExecuteBatchRequest):
        return min(len(request.commands), limits.BATCH_COMMANDS_MAX)
    return 1


class CommandServicer(commands_pb2_grpc.CommandServiceServicer):
    """Implements every CommandService method the same way: map, authorize, validate,
    execute, map. (Which methods a caller may call is checked before, by
    ``chronos.rpc.serving``; here each command's scope and accounts.)"""

    def __init__(
        self,
        writer: LedgerWriter,
        *,
        new_account_id: Callable[[], str] = lambda: str(uuid.uuid4()),
        traceparent: Callable[[], str] = lambda: "",
        hold_accounts: holds.HoldAccounts | None = None,
    ) -> None:
        self._writer = writer
        self._new_account_id = new_account_id
        self._traceparent = traceparent
        self._hold_accounts = hold_accounts or writer.hold_accounts

    def _prepare(
        self, command: Command, context: grpc.aio.ServicerContext[Any, Any]
    ) -> tuple[Command, bytes, CommandContext]:
        """Validates and canonicalizes; raises Rejection (VALIDATION_FAILED)."""
        validation.validate(command)
        command = validation.canonicalize(command)
        payload_hash = validation.fingerprint(command)
        if isinstance(command, OpenAccount) and not command.account_id:
            # Generated after fingerprinting, so a retry (also without an id) matches
            # and replays the id generated the first time.
            command = _with_account_id(command, self._new_account_id())
        # The verified caller (UNAUTHENTICATED, with no subject, when authentication is
        # off): its subject scopes the request_id and is recorded on the events.
        caller = current_caller()
        if caller.subject:
            trace.get_current_span().set_attribute(SPAN_ENDUSER_ID, caller.subject)
        command_context = CommandContext(
            request_id=command.request_id,
            correlation_id=_metadata_value(context, "x-correlation-id"),
            causation_id=_metadata_value(context, "x-causation-id"),
            traceparent=self._traceparent(),
            principal=caller.subject,
            token_id=caller.token_id,
        )
        return command, payload_hash, command_context

    @staticmethod
    def _rejection(error: ChronosError, request_id: str) -> Rejection:
        """The one reading of a failed command as the refusal a client sees."""
        if isinstance(error, Rejection):
            COMMANDS_REJECTED.labels(error.reason.value).inc()
            _logger.info(
                "command rejected: %s", error.reason.value, extra={"request_id": request_id}
            )
            return error
        if isinstance(error, CommitOutcomeUnknown):
            # Not "nothing was recorded": the commit may have happened. A new request_id
            # would then apply the command twice.
            return Rejection(
                Reason.COMMIT_OUTCOME_UNKNOWN,
                "The connection to the ledger database was lost while it committed, so the "
                "outcome is unknown. Retry with the same request_id: it returns the stored "
                f"answer if the command was recorded, and applies it once if not. ({error})",
            )
        if isinstance(error, StoreUnavailable):
            return Rejection(
                Reason.DATABASE_UNAVAILABLE,
                f"The ledger cannot write right now; nothing was recorded. Retry with the "
                f"same request_id. ({error})",
            )
        _logger.error("write failed: %s", error, extra={"request_id": request_id})
        return Rejection(
            Reason.INTERNAL_ERROR,
            "The ledger failed to record the command; nothing was recorded.",
        )

    @staticmethod
    def _failure(error: ChronosError, request_id: str) -> status_pb2.Status:
        """A failed command of a batch, as its item's status."""
        return rejection_proto(CommandServicer._rejection(error, request_id))

    async def _run(
        self, command: Command, context: grpc.aio.ServicerContext[Any, Any]
    ) -> commands_pb2.CommandResponse:
        try:
            command = await holds.with_hold_accounts(command, self._hold_accounts)
        except ChronosError as error:
            await abort(context, self._rejection(error, command.request_id))
        refusal = _refusal(command)
        if refusal is not None:
            await abort(context, refusal)
        try:
            result = await self._writer.execute(*self._prepare(command, context))
        except ChronosError as error:
            await abort(context, self._rejection(error, command.request_id))
        return result_to_proto(result)

    async def OpenAccount(self, request: Any, context: Any) -> commands_pb2.CommandResponse:
        return await self._run(open_account_from_proto(request), context)

    async def Deposit(self, request: Any, context: Any) -> commands_pb2.CommandResponse:
        return await self._run(deposit_from_proto(request), context)

    async def Withdraw(self, request: Any, context: Any) -> commands_pb2.CommandResponse:
        return await self._run(withdraw_from_proto(request), context)

    async def TransferFunds(self, request: Any, context: Any) -> commands_pb2.CommandResponse:
        return await self._run(transfer_from_proto(request), context)

    async def PostJournalEntry(self, request: Any, context: Any) -> commands_pb2.CommandResponse:
        return await self._run(journal_from_proto(request), context)

    async def FreezeAccount(self, request: Any, context: Any) -> commands_pb2.CommandResponse:
        return await self._run(freeze_from_proto(request), context)

    async def UnfreezeAccount(self, request: Any, context: Any) -> commands_pb2.CommandResponse:
        return await self._run(unfreeze_from_proto(request), context)

    async def CloseAccount(self, request: Any, context: Any) -> commands_pb2.CommandResponse:
        return await self._run(close_from_proto(request), context)

    async def CreatePendingTransfer(
        self, request: Any, context: Any
    ) -> commands_pb2.CommandResponse:
        return await self._run(holds.create_from_proto(request), context)

    async def PostPendingTransfer(self, request: Any, context: Any) -> commands_pb2.CommandResponse:
        return await self._run(holds.post_from_proto(request), context)

    async def VoidPendingTransfer(self, request: Any, context: Any) -> commands_pb2.CommandResponse:
        return await self._run(holds.void_from_proto(request), context)

    async def ReverseEntry(self, request: Any, context: Any) -> commands_pb2.CommandResponse:
        return await self._run(reverse_entry_from_proto(request), context)

    async def ExecuteBatch(self, request: Any, context: Any) -> commands_pb2.ExecuteBatchResponse:
        count = len(request.commands)
        violation = batch_violation(request)
        if violation is not None:
            rejection = validation_failed([FieldViolation("commands", violation)])
            await abort(context, self._rejection(rejection, ""))
        # Per command: its Rejection before the writer (refused or invalid), or the
        # prepared command the writer runs.
        refusals: dict[int, Rejection] = {}
        prepared: list[tuple[Command, bytes, CommandContext]] = []
        prepared_at: list[int] = []
        for index, item in enumerate(request.commands):
            try:
                prepared.append(await self._prepare_item(item, context))
            except Rejection as rejection:
                refusals[index] = rejection
                continue
            prepared_at.append(index)
        if request.atomic:
            for index, repeat in repeated_request_ids(prepared, prepared_at).items():
                refusals[index] = self._rejection(repeat, "")
            if refusals:
                return _batch_response(dict(enumerate(self._linked(refusals, count))))
            ran = await self._writer.execute_atomic(prepared)
        else:
            ran = await self._writer.execute_in_order(prepared)
        outcomes: dict[int, CommandResult | Rejection] = dict(refusals)
        for index, (command, _, _), outcome in zip(prepared_at, prepared, ran, strict=True):
            if isinstance(outcome, CommandResult):
                outcomes[index] = outcome
            else:
                outcomes[index] = self._rejection(outcome, command.request_id)
        assert len(outcomes) == count, "every command of a batch needs a result"
        return _batch_response(outcomes)

    def _linked(self, refusals: dict[int, Rejection], count: int) -> list[Rejection]:
        """An atomic batch refused before the writer: each refused command its own
        answer (already counted), every other one LINKED_COMMAND_FAILED (counted here)."""
        return [
            answer if index in refusals else self._rejection(answer, "")
            for index, answer in enumerate(linked_answers(refusals, count))
        ]

    async def _prepare_item(
        self, item: commands_pb2.BatchCommand, context: grpc.aio.ServicerContext[Any, Any]
    ) -> tuple[Command, bytes, CommandContext]:
        """One command of a batch, its hold's accounts filled in, authorized and
        prepared; raises its Rejection (counted and logged once)."""
        kind = item.WhichOneof("command")
        if kind is None:
            rejection = validation_failed(
                [FieldViolation("command", "exactly one command must be set")]
            )
            raise self._rejection(rejection, "")
        command = FROM_PROTO[kind](getattr(item, kind))
        try:
            command = await holds.with_hold_accounts(command, self._hold_accounts)
        except ChronosError as error:
            raise self._rejection(error, command.request_id) from None
        refusal = _refusal(command)
        if refusal is not None:
            raise refusal
        try:
            return self._prepare(command, context)
        except Rejection as rejection:
            raise self._rejection(rejection, command.request_id) from None


def _batch_response(
    outcomes: dict[int, CommandResult | Rejection],
) -> commands_pb2.ExecuteBatchResponse:
    return commands_pb2.ExecuteBatchResponse(
        results=[
            commands_pb2.BatchResult(response=result_to_proto(outcome))
            if isinstance(outcome, CommandResult)
            else commands_pb2.BatchResult(error=rejection_proto(outcome))
            for _, outcome in sorted(outcomes.items())
        ]
    )


def _refusal(command: Command) -> Rejection | None:
    """The current caller's authorization refusal of ``command`` (its scope, its
    accounts), counted and logged; checked before validation, so a caller without the
    right learns nothing about the command."""
    rejection = authorize_command(current_caller(), command)
    return None if rejection is None else refused(COMMAND_SERVER, rejection)


def _with_account_id(command: OpenAccount, account_id: str) -> OpenAccount:
    return replace(command, account_id=account_id)

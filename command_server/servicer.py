"""``chronos.v1.CommandService``: protobuf in, domain command through the writer, protobuf out.

Protobuf ↔ domain mapping happens only here, in the ``*_from_proto`` and
``result_to_proto`` functions. Every error a client can cause leaves as a rich status
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
from chronos.domain.commands import (
    CloseAccount,
    Command,
    Deposit,
    FreezeAccount,
    JournalLine,
    Money,
    OpenAccount,
    PostJournalEntry,
    TransferFunds,
    UnfreezeAccount,
    Withdraw,
)
from chronos.domain.errors import FieldViolation, Reason, Rejection, validation_failed
from chronos.errors import ChronosError
from chronos.event_store.mapper import side_from_proto
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
from chronos.v1 import commands_pb2, commands_pb2_grpc, ledger_pb2
from command_server import holds

_logger = logging.getLogger(__name__)


def _money(message: ledger_pb2.Money) -> Money:
    # An absent amount reads as currency "" and 0 minor units, which validation reports
    # field by field ("amount.currency: is required", "amount.minor_units: must be positive").
    return Money(currency=message.currency, minor_units=message.minor_units)


def open_account_from_proto(request: commands_pb2.OpenAccountRequest) -> OpenAccount:
    return OpenAccount(
        request_id=request.request_id,
        account_id=request.account_id,
        owner_name=request.owner_name,
        currency=request.currency,
        overdraft_limit_minor=request.overdraft_limit_minor,
        metadata=tuple(sorted(request.metadata.items())),
    )


def deposit_from_proto(request: commands_pb2.DepositRequest) -> Deposit:
    return Deposit(
        request_id=request.request_id,
        account_id=request.account_id,
        amount=_money(request.amount),
        description=request.description,
    )


def withdraw_from_proto(request: commands_pb2.WithdrawRequest) -> Withdraw:
    return Withdraw(
        request_id=request.request_id,
        account_id=request.account_id,
        amount=_money(request.amount),
        description=request.description,
    )


def transfer_from_proto(request: commands_pb2.TransferFundsRequest) -> TransferFunds:
    return TransferFunds(
        request_id=request.request_id,
        from_account_id=request.from_account_id,
        to_account_id=request.to_account_id,
        amount=_money(request.amount),
        description=request.description,
    )


def journal_from_proto(request: commands_pb2.PostJournalEntryRequest) -> PostJournalEntry:
    return PostJournalEntry(
        request_id=request.request_id,
        lines=tuple(
            JournalLine(
                account_id=line.account_id,
                amount=_money(line.amount),
                side=side_from_proto(line.side),
            )
            for line in request.lines
        ),
        description=request.description,
    )


def freeze_from_proto(request: commands_pb2.FreezeAccountRequest) -> FreezeAccount:
    return FreezeAccount(
        request_id=request.request_id, account_id=request.account_id, reason=request.reason
    )


def unfreeze_from_proto(request: commands_pb2.UnfreezeAccountRequest) -> UnfreezeAccount:
    return UnfreezeAccount(
        request_id=request.request_id, account_id=request.account_id, reason=request.reason
    )


def close_from_proto(request: commands_pb2.CloseAccountRequest) -> CloseAccount:
    return CloseAccount(
        request_id=request.request_id, account_id=request.account_id, reason=request.reason
    )


def result_to_proto(result: CommandResult) -> commands_pb2.CommandResponse:
    return commands_pb2.CommandResponse(
        position=result.position,
        account_id=result.account_id,
        entry_id=result.entry_id,
        balances=[
            commands_pb2.AccountBalance(
                account_id=balance.account_id,
                balance=ledger_pb2.Money(
                    currency=balance.currency, minor_units=balance.balance_minor
                ),
                version=balance.version,
                pending_debits=ledger_pb2.Money(
                    currency=balance.currency, minor_units=balance.pending_debits_minor
                ),
                pending_credits=ledger_pb2.Money(
                    currency=balance.currency, minor_units=balance.pending_credits_minor
                ),
                available=ledger_pb2.Money(
                    currency=balance.currency, minor_units=balance.available_minor
                ),
            )
            for balance in result.balances
        ],
        replayed=result.replayed,
        event_ids=list(result.event_ids),
        pending_id=result.pending_id,
    )


def _metadata_value(context: grpc.aio.ServicerContext[Any, Any], key: str) -> str:
    for item in context.invocation_metadata() or ():
        if item.key == key and isinstance(item.value, str):
            return item.value[:128]
    return ""


# Which mapping reads each field of the BatchCommand oneof.
_FROM_PROTO: dict[str, Callable[[Any], Command]] = {
    "open_account": open_account_from_proto,
    "deposit": deposit_from_proto,
    "withdraw": withdraw_from_proto,
    "transfer_funds": transfer_from_proto,
    "post_journal_entry": journal_from_proto,
    "freeze_account": freeze_from_proto,
    "unfreeze_account": unfreeze_from_proto,
    "close_account": close_from_proto,
    "create_pending_transfer": holds.create_from_proto,
    "post_pending_transfer": holds.post_from_proto,
    "void_pending_transfer": holds.void_from_proto,
}


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

    async def ExecuteBatch(self, request: Any, context: Any) -> commands_pb2.ExecuteBatchResponse:
        count = len(request.commands)
        violation = None
        if not 1 <= count <= limits.BATCH_COMMANDS_MAX:
            violation = f"must hold 1 to {limits.BATCH_COMMANDS_MAX} commands, got {count}"
        else:
            lines = sum(
                len(item.post_journal_entry.lines)
                for item in request.commands
                if item.HasField("post_journal_entry")
            )
            if lines > limits.BATCH_JOURNAL_LINES_MAX:
                violation = (
                    f"journal entries must hold at most {limits.BATCH_JOURNAL_LINES_MAX} "
                    f"lines in all, got {lines}: split the batch"
                )
        if violation is not None:
            rejection = validation_failed([FieldViolation("commands", violation)])
            await abort(context, self._rejection(rejection, ""))
        results: list[commands_pb2.BatchResult | None] = [None] * count
        prepared: list[tuple[Command, bytes, CommandContext]] = []
        prepared_at: list[int] = []
        for index, item in enumerate(request.commands):
            kind = item.WhichOneof("command")
            if kind is None:
                error: ChronosError = validation_failed(
                    [FieldViolation("command", "exactly one command must be set")]
                )
                results[index] = commands_pb2.BatchResult(error=self._failure(error, ""))
                continue
            command = _FROM_PROTO[kind](getattr(item, kind))
            try:
                command = await holds.with_hold_accounts(command, self._hold_accounts)
            except ChronosError as error:
                results[index] = commands_pb2.BatchResult(error=self._failure(error, ""))
                continue
            refusal = _refusal(command)
            if refusal is not None:
                results[index] = commands_pb2.BatchResult(error=rejection_proto(refusal))
                continue
            try:
                prepared.append(self._prepare(command, context))
            except Rejection as rejection:
                failure = self._failure(rejection, command.request_id)
                results[index] = commands_pb2.BatchResult(error=failure)
                continue
            prepared_at.append(index)
        outcomes = await self._writer.execute_in_order(prepared)
        for index, (command, _, _), outcome in zip(prepared_at, prepared, outcomes, strict=True):
            if isinstance(outcome, CommandResult):
                results[index] = commands_pb2.BatchResult(response=result_to_proto(outcome))
            else:
                failure = self._failure(outcome, command.request_id)
                results[index] = commands_pb2.BatchResult(error=failure)
        answered = [result for result in results if result is not None]
        assert len(answered) == count, "every command of a batch needs a result"
        return commands_pb2.ExecuteBatchResponse(results=answered)


def _refusal(command: Command) -> Rejection | None:
    """The current caller's authorization refusal of ``command`` (its scope, its
    accounts), counted and logged; checked before validation, so a caller without the
    right learns nothing about the command."""
    rejection = authorize_command(current_caller(), command)
    return None if rejection is None else refused(COMMAND_SERVER, rejection)


def _with_account_id(command: OpenAccount, account_id: str) -> OpenAccount:
    return replace(command, account_id=account_id)

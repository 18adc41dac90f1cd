"""``chronos.v1.CommandService``: protobuf in, domain command through the writer, protobuf out.

Protobuf ↔ domain mapping happens only here, in the ``*_from_proto`` and
``result_to_proto`` functions. Every error a client can cause leaves as a rich status
(see ``chronos.rpc``); nothing a client sends can produce INTERNAL or UNKNOWN.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import grpc

from chronos.domain import validation
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
from chronos.domain.errors import Rejection
from chronos.event_store.mapper import side_from_proto
from chronos.event_store.results import CommandResult
from chronos.event_store.writer import (
    CommandContext,
    LedgerWriter,
    StoreFailure,
    StoreUnavailable,
)
from chronos.metrics import COMMANDS_REJECTED
from chronos.rpc import abort, rejection_status, rich_status
from chronos.v1 import commands_pb2, commands_pb2_grpc, ledger_pb2

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
            )
            for balance in result.balances
        ],
        replayed=result.replayed,
        event_ids=list(result.event_ids),
    )


def _metadata_value(context: grpc.aio.ServicerContext[Any, Any], key: str) -> str:
    for item in context.invocation_metadata() or ():
        if item.key == key and isinstance(item.value, str):
            return item.value[:128]
    return ""


class CommandServicer(commands_pb2_grpc.CommandServiceServicer):
    """Implements every CommandService method the same way: map, validate, execute, map."""

    def __init__(
        self,
        writer: LedgerWriter,
        *,
        new_account_id: Callable[[], str] = lambda: str(uuid.uuid4()),
        traceparent: Callable[[], str] = lambda: "",
    ) -> None:
        self._writer = writer
        self._new_account_id = new_account_id
        self._traceparent = traceparent

    async def _run(
        self, command: Command, context: grpc.aio.ServicerContext[Any, Any]
    ) -> commands_pb2.CommandResponse:
        try:
            validation.validate(command)
            command = validation.canonicalize(command)
            payload_hash = validation.fingerprint(command)
            if isinstance(command, OpenAccount) and not command.account_id:
                # Generated after fingerprinting, so a retry (also without an id) matches
                # and replays the id generated the first time.
                command = _with_account_id(command, self._new_account_id())
            command_context = CommandContext(
                request_id=command.request_id,
                correlation_id=_metadata_value(context, "x-correlation-id"),
                causation_id=_metadata_value(context, "x-causation-id"),
                traceparent=self._traceparent(),
            )
            result = await self._writer.execute(command, payload_hash, command_context)
        except Rejection as rejection:
            COMMANDS_REJECTED.labels(rejection.reason.value).inc()
            _logger.info(
                "command rejected: %s",
                rejection.reason.value,
                extra={"request_id": command.request_id},
            )
            await abort(context, rejection_status(rejection))
            raise AssertionError("abort() returned") from rejection
        except StoreUnavailable as error:
            await abort(
                context,
                rich_status(
                    grpc.StatusCode.UNAVAILABLE,
                    "DATABASE_UNAVAILABLE",
                    f"The ledger cannot write right now; nothing was recorded. Retry with the "
                    f"same request_id. ({error})",
                ),
            )
            raise AssertionError("abort() returned") from error
        except StoreFailure as error:
            _logger.error("write failed: %s", error)
            await abort(
                context,
                rich_status(
                    grpc.StatusCode.INTERNAL,
                    "INTERNAL_ERROR",
                    "The ledger failed to record the command; nothing was recorded.",
                ),
            )
            raise AssertionError("abort() returned") from error
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


def _with_account_id(command: OpenAccount, account_id: str) -> OpenAccount:
    return replace(command, account_id=account_id)

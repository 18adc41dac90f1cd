"""CommandService requests to domain commands, and results to responses.

Protobuf ↔ domain mapping for the command server happens only here (and, for the hold
commands, in :mod:`command_server.holds`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chronos.domain.commands import (
    CloseAccount,
    Command,
    Deposit,
    FreezeAccount,
    JournalLine,
    Money,
    OpenAccount,
    PostJournalEntry,
    ReverseEntry,
    TransferFunds,
    UnfreezeAccount,
    Withdraw,
)
from chronos.event_store.mapper import side_from_proto
from chronos.event_store.results import CommandResult
from chronos.v1 import commands_pb2, ledger_pb2
from command_server import holds


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
        metadata=tuple(sorted(request.metadata.items())),
    )


def withdraw_from_proto(request: commands_pb2.WithdrawRequest) -> Withdraw:
    return Withdraw(
        request_id=request.request_id,
        account_id=request.account_id,
        amount=_money(request.amount),
        description=request.description,
        metadata=tuple(sorted(request.metadata.items())),
    )


def transfer_from_proto(request: commands_pb2.TransferFundsRequest) -> TransferFunds:
    return TransferFunds(
        request_id=request.request_id,
        from_account_id=request.from_account_id,
        to_account_id=request.to_account_id,
        amount=_money(request.amount),
        description=request.description,
        metadata=tuple(sorted(request.metadata.items())),
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
        metadata=tuple(sorted(request.metadata.items())),
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


def reverse_entry_from_proto(request: commands_pb2.ReverseEntryRequest) -> ReverseEntry:
    return ReverseEntry(
        request_id=request.request_id,
        entry_id=request.entry_id,
        reason=request.reason,
        force=request.force,
        metadata=tuple(sorted(request.metadata.items())),
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


# Which mapping reads each field of the BatchCommand oneof.
FROM_PROTO: dict[str, Callable[[Any], Command]] = {
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
    "reverse_entry": reverse_entry_from_proto,
}

"""The hold commands at the gRPC edge: protobuf to domain, and the hold's accounts.

A post or void names only its hold; the accounts it moves are the hold's. They are
looked up before the command is authorized (a token restricted to some accounts must
list the hold's from account) and locked: a hold's accounts never change, so the
lookup needs no lock, and the hold's state is read again under the accounts' locks.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace

from chronos.domain.commands import (
    Command,
    CreatePendingTransfer,
    Money,
    PostPendingTransfer,
    VoidPendingTransfer,
)
from chronos.domain.validation import canonical_account_id
from chronos.v1 import commands_pb2

HoldAccounts = Callable[[str], Awaitable[tuple[str, str] | None]]
"""Looks up a hold's (from, to) accounts by its canonical pending id; None: unknown."""


def create_from_proto(request: commands_pb2.CreatePendingTransferRequest) -> CreatePendingTransfer:
    return CreatePendingTransfer(
        request_id=request.request_id,
        from_account_id=request.from_account_id,
        to_account_id=request.to_account_id,
        amount=Money(currency=request.amount.currency, minor_units=request.amount.minor_units),
        description=request.description,
        timeout_seconds=request.timeout_seconds,
        metadata=tuple(sorted(request.metadata.items())),
    )


def post_from_proto(request: commands_pb2.PostPendingTransferRequest) -> PostPendingTransfer:
    return PostPendingTransfer(
        request_id=request.request_id,
        pending_id=request.pending_id,
        amount=Money(currency=request.amount.currency, minor_units=request.amount.minor_units),
        metadata=tuple(sorted(request.metadata.items())),
    )


def void_from_proto(request: commands_pb2.VoidPendingTransferRequest) -> VoidPendingTransfer:
    return VoidPendingTransfer(
        request_id=request.request_id,
        pending_id=request.pending_id,
        reason=request.reason,
        metadata=tuple(sorted(request.metadata.items())),
    )


async def with_hold_accounts(command: Command, lookup: HoldAccounts) -> Command:
    """``command`` with its hold's accounts filled in, if it is a post or void of a hold
    that exists; any other command as it is (an unknown or malformed pending id is then
    refused by authorization, validation or the ledger)."""
    if not isinstance(command, PostPendingTransfer | VoidPendingTransfer):
        return command
    pending_id = canonical_account_id(command.pending_id)
    if pending_id is None:
        return command
    accounts = await lookup(pending_id)
    if accounts is None:
        return command
    return replace(command, from_account_id=accounts[0], to_account_id=accounts[1])

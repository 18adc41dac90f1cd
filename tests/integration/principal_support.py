"""Helpers for the principal tests: the command servicer called in-process as a given
caller, over the real LedgerWriter and PostgreSQL.

The servicer is called the way grpc.aio calls it, with the caller set as the servers'
authentication sets it (``chronos.security.caller.set_current_caller``); the stand-in
for the call's context has only what a servicer reads of it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NamedTuple, NoReturn, TypeVar

import grpc
from google.rpc import error_details_pb2, status_pb2

from chronos.security.caller import Caller, reset_current_caller, set_current_caller
from chronos.v1 import commands_pb2, ledger_pb2
from command_server.servicer import CommandServicer

_Response = TypeVar("_Response")


class Refused(Exception):
    """What ``context.abort`` raised: the call's status code and ErrorInfo reason."""

    def __init__(self, code: grpc.StatusCode, reason: str, details: str) -> None:
        super().__init__(f"{code.name} {reason}: {details}")
        self.code = code
        self.reason = reason


class Metadatum(NamedTuple):
    key: str
    value: str


class CallContext:
    """The part of ``grpc.aio.ServicerContext`` the servicers use."""

    def __init__(self, metadata: Sequence[tuple[str, str]] = ()) -> None:
        self._metadata = tuple(Metadatum(key, value) for key, value in metadata)

    def invocation_metadata(self) -> tuple[Any, ...]:
        return self._metadata

    def time_remaining(self) -> float | None:
        return None

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()
    ) -> NoReturn:
        reason = ""
        for key, value in trailing_metadata or ():
            if key == "grpc-status-details-bin":
                for detail in status_pb2.Status.FromString(value).details:
                    info = error_details_pb2.ErrorInfo()
                    if detail.Unpack(info):
                        reason = info.reason
        raise Refused(code, reason, details)


async def call_as(
    caller: Caller, method: Callable[[Any, Any], Awaitable[_Response]], request: Any
) -> _Response:
    """Calls a servicer method as ``caller``, as an authenticated call would run."""
    token = set_current_caller(caller)
    try:
        return await method(request, CallContext())
    finally:
        reset_current_caller(token)


def eur(minor: int) -> ledger_pb2.Money:
    return ledger_pb2.Money(currency="EUR", minor_units=minor)


async def open_account(servicer: CommandServicer, caller: Caller, request_id: str) -> str:
    response = await call_as(
        caller,
        servicer.OpenAccount,
        commands_pb2.OpenAccountRequest(request_id=request_id, owner_name="Ada", currency="EUR"),
    )
    return str(response.account_id)


async def deposit(
    servicer: CommandServicer, caller: Caller, request_id: str, account_id: str, minor: int
) -> commands_pb2.CommandResponse:
    return await call_as(
        caller,
        servicer.Deposit,
        commands_pb2.DepositRequest(
            request_id=request_id, account_id=account_id, amount=eur(minor)
        ),
    )


async def transfer(
    servicer: CommandServicer,
    caller: Caller,
    request_id: str,
    source: str,
    target: str,
    minor: int,
) -> commands_pb2.CommandResponse:
    return await call_as(
        caller,
        servicer.TransferFunds,
        commands_pb2.TransferFundsRequest(
            request_id=request_id,
            from_account_id=source,
            to_account_id=target,
            amount=eur(minor),
        ),
    )

"""Channels of the load generators (the load test and the bench's Python client), and
the ErrorInfo reason of a failed call.

They are secured like every other client (:mod:`chronos_dev.client`): TLS when the
security names a CA, and the token on every call. But the token goes as plain call
metadata, not as call credentials: gRPC runs a call-credentials plugin on a thread of
its own for every call, which roughly doubles a small client's CPU per call, and the
client shares the machine with the servers it measures.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from chronos_dev.client import ClientSecurity, aio_channel

Metadata = tuple[tuple[str, str], ...]


def load_channel(
    address: str, security: ClientSecurity, *, options: Sequence[tuple[str, object]] = ()
) -> grpc.aio.Channel:
    """An asyncio channel to ``address``: TLS when ``security`` names a CA, no token
    (send :func:`call_metadata` with every call)."""
    transport = ClientSecurity(ca_pem=security.ca_pem, token=None)
    return aio_channel(address, security_=transport, options=options)


def call_metadata(security: ClientSecurity) -> Metadata:
    """The metadata every call carries: the ``authorization`` header, or nothing."""
    return tuple(security.metadata())


def error_reason(error: grpc.RpcError) -> str:
    """The ``google.rpc.ErrorInfo`` reason of a failed call ("" when there is none)."""
    try:
        status = rpc_status.from_call(error)
    except ValueError:
        # The trailer disagrees with the call's status: report the code alone.
        return ""
    if status is None:
        return ""
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return str(info.reason)
    return ""

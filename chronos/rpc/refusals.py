"""Authorization at the gRPC edge: a refused call is counted, logged and answered.

The rules are pure functions in :mod:`chronos.security.authorization`; this module
applies them to the current caller (``chronos.security.caller``, set by authentication
before the servicer runs) and turns a refusal into what the client sees.
"""

from __future__ import annotations

from typing import Any, Final

import grpc

from chronos.domain.errors import Rejection
from chronos.rpc.status import abort
from chronos.security.authorization import COMMAND_SERVICE, QUERY_SERVICE, authorize_call
from chronos.security.caller import current_caller
from chronos.security.refusal_log import record_refusal

# The ``server`` label of the refusal counter, as the servers name themselves in
# their other metrics.
COMMAND_SERVER: Final = "command"
QUERY_SERVER: Final = "query"
_SERVER_BY_SERVICE: Final = {COMMAND_SERVICE: COMMAND_SERVER, QUERY_SERVICE: QUERY_SERVER}


def refused(server: str, rejection: Rejection) -> Rejection:
    """Counts ``rejection`` in ``chronos_auth_refusals_total``, logs it (rate-limited,
    naming the caller's subject, never its token) and returns it, to be sent."""
    record_refusal(server, rejection, current_caller().subject)
    return rejection


def raise_if_refused(server: str, rejection: Rejection | None) -> None:
    """Raises ``rejection`` (counted and logged by :func:`refused`) unless it is None."""
    if rejection is not None:
        raise refused(server, rejection)


async def authorize_method(
    context: grpc.aio.ServicerContext[Any, Any], method_full_name: str
) -> None:
    """Ends the call with PERMISSION_DENIED unless the current caller may call
    ``method_full_name`` (as ``chronos.v1.CommandService.TransferFunds``)."""
    rejection = authorize_call(current_caller(), method_full_name)
    if rejection is not None:
        service = method_full_name.rpartition(".")[0]
        await abort(context, refused(_SERVER_BY_SERVICE.get(service, service), rejection))

"""The console's JSON endpoints, one per read RPC: ``GET /api/<Method>?<field>=<value>``.

Pure mapping, no I/O: query parameters become the RPC's request message (protobuf JSON
rules, so timestamps are RFC 3339, enums their names, a repeated field a repeated
parameter), the answer becomes protobuf JSON with the proto field names, and a refusal
becomes an HTTP status with the google.rpc.ErrorInfo reason and the server's message.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from chronos.v1 import queries_pb2

# Every read RPC of QueryService, and nothing that writes: the console has no write action.
READ_METHODS = (
    "GetAccount",
    "ListTransactions",
    "GetBalanceAt",
    "SearchAccounts",
    "ListPendingTransfers",
    "ListEvents",
    "GetEntry",
)
_SERVICE = queries_pb2.DESCRIPTOR.services_by_name["QueryService"]
# Parameters the console's pages send at most; a longer query string is a mistake.
PARAMETER_VALUES_MAX = 64
PARAMETER_LENGTH_MAX = 1000
# What the browser shows for a refusal: client mistakes 4xx, the read side's trouble 5xx
# (the page shows a banner for those and retries on its next poll).
HTTP_STATUS_BY_CODE = {
    grpc.StatusCode.INVALID_ARGUMENT: HTTPStatus.BAD_REQUEST,
    grpc.StatusCode.OUT_OF_RANGE: HTTPStatus.BAD_REQUEST,
    grpc.StatusCode.NOT_FOUND: HTTPStatus.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION: HTTPStatus.CONFLICT,
    grpc.StatusCode.PERMISSION_DENIED: HTTPStatus.FORBIDDEN,
    grpc.StatusCode.UNAUTHENTICATED: HTTPStatus.UNAUTHORIZED,
    grpc.StatusCode.RESOURCE_EXHAUSTED: HTTPStatus.TOO_MANY_REQUESTS,
    grpc.StatusCode.UNAVAILABLE: HTTPStatus.SERVICE_UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: HTTPStatus.GATEWAY_TIMEOUT,
}


@dataclass(frozen=True, slots=True)
class ApiError(Exception):
    """A refusal as the JSON endpoint answers it."""

    status: HTTPStatus
    code: str
    reason: str
    message: str

    def body(self) -> bytes:
        """``{"error": {"code", "reason", "message"}}`` as UTF-8 JSON."""
        error = {"code": self.code, "reason": self.reason, "message": self.message}
        return json.dumps({"error": error}).encode()


def bad_request(message: str) -> ApiError:
    """A request the console itself refuses before calling the query server."""
    return ApiError(HTTPStatus.BAD_REQUEST, "INVALID_ARGUMENT", "BAD_QUERY_PARAMETER", message)


def parse_request(method: str, parameters: Mapping[str, Sequence[str]]) -> Message:
    """The request message of ``method`` that the query ``parameters`` describe.

    Raises:
        ApiError: an unknown method, or a parameter the request does not take or that
            does not parse (the message says which).
    """
    if method not in READ_METHODS:
        raise ApiError(HTTPStatus.NOT_FOUND, "NOT_FOUND", "UNKNOWN_ENDPOINT", f"no {method!r}")
    request_type = _SERVICE.methods_by_name[method].input_type
    request: Message = getattr(queries_pb2, request_type.name)()
    fields: dict[str, Any] = {}
    for name, values in parameters.items():
        field = request_type.fields_by_name.get(name)
        # Map fields (metadata filters) are not offered: a page has no way to send them.
        if field is None or (field.message_type is not None and _is_map(field.message_type)):
            raise bad_request(f"{method} takes no parameter {name!r}")
        if len(values) > PARAMETER_VALUES_MAX or any(
            len(value) > PARAMETER_LENGTH_MAX for value in values
        ):
            raise bad_request(f"parameter {name!r} is too long")
        if field.is_repeated:
            fields[name] = list(values)
        elif len(values) != 1:
            raise bad_request(f"parameter {name!r} is given {len(values)} times")
        elif values[0] != "":
            fields[name] = values[0]
    try:
        json_format.ParseDict(fields, request)
    except json_format.ParseError as error:
        raise bad_request(f"{method}: {error}") from None
    return request


def _is_map(message_type: Any) -> bool:
    return bool(message_type.GetOptions().map_entry)


def answer_body(answer: Message) -> bytes:
    """The RPC's answer as protobuf JSON with the proto field names, every field shown."""
    document = json_format.MessageToDict(
        answer, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return json.dumps(document).encode()


def refusal(error: grpc.RpcError) -> ApiError:
    """The query server's refusal (its code, ErrorInfo reason and message) for the page."""
    code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
    message = (error.details() if isinstance(error, grpc.Call) else None) or str(code.name)
    reason = ""
    status = rpc_status.from_call(error) if isinstance(error, grpc.Call) else None
    for detail in status.details if status is not None else ():
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            reason = info.reason
            break
    http_status = HTTP_STATUS_BY_CODE.get(code, HTTPStatus.BAD_GATEWAY)
    return ApiError(http_status, code.name, reason, message)

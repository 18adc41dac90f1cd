"""What both gRPC servers share: rich error statuses, health, reflection, shutdown.

Errors reach clients only through :func:`abort`: a gRPC status code, a message a person
understands, and ``google.rpc.ErrorInfo`` (plus ``google.rpc.BadRequest`` for invalid
fields) in the ``grpc-status-details-bin`` trailer, which grpcurl and every gRPC SDK
decode.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import any_pb2, message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError, Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status

from chronos.domain.errors import FieldViolation, Reason, Rejection

_logger = logging.getLogger(__name__)

ERROR_DOMAIN = "chronos.ledger"

STATUS_BY_REASON: dict[Reason, grpc.StatusCode] = {
    Reason.VALIDATION_FAILED: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.IDEMPOTENCY_KEY_REUSED: grpc.StatusCode.ALREADY_EXISTS,
    Reason.ACCOUNT_NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Reason.ACCOUNT_EXISTS: grpc.StatusCode.ALREADY_EXISTS,
    Reason.ACCOUNT_CLOSED: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.ACCOUNT_FROZEN: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.ACCOUNT_NOT_FROZEN: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.CURRENCY_MISMATCH: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.INSUFFICIENT_FUNDS: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.BALANCE_OVERFLOW: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.ACCOUNT_NOT_EMPTY: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.CONCURRENCY_CONFLICT: grpc.StatusCode.ABORTED,
    Reason.NOT_APPLIED: grpc.StatusCode.ABORTED,
}
assert set(STATUS_BY_REASON) == set(Reason), "every reason needs a status code"


def status_proto(
    code: grpc.StatusCode,
    reason: str,
    message: str,
    *,
    violations: Sequence[FieldViolation] = (),
    metadata: dict[str, str] | None = None,
) -> status_pb2.Status:
    """A ``google.rpc.Status`` carrying ErrorInfo (and BadRequest when there are
    violations): sent as a call's status, or as one item's outcome inside a batch."""
    details: list[any_pb2.Any] = []
    info = error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN, metadata=metadata or {})
    packed = any_pb2.Any()
    packed.Pack(info)
    details.append(packed)
    if violations:
        bad_request = error_details_pb2.BadRequest(field_violations=_bounded(violations))
        packed = any_pb2.Any()
        packed.Pack(bad_request)
        details.append(packed)
    if len(message) > MESSAGE_LENGTH_MAX:
        message = message[: MESSAGE_LENGTH_MAX - 1] + "…"
    return status_pb2.Status(code=getattr(code_pb2, code.name), message=message, details=details)


# A call's status travels in its trailers (the message in grpc-message, percent-encoded,
# and again in grpc-status-details-bin, base64), and gRPC clients refuse trailers over
# 8 kB at random and over 16 kB always: they then see RESOURCE_EXHAUSTED, not the
# answer. A 64-line journal entry with every field invalid made 33.8 kB. These bounds
# keep any status near 5 kB on the wire in the worst case (all text non-ASCII).
MESSAGE_LENGTH_MAX = 512
VIOLATIONS_BYTES_MAX = 1536
_VIOLATION_FIELD_LENGTH_MAX = 128
_VIOLATION_DESCRIPTION_LENGTH_MAX = 256


def _bounded(
    violations: Sequence[FieldViolation],
) -> list[error_details_pb2.BadRequest.FieldViolation]:
    """The violations a status carries: as many as fit the byte budget, then a count."""
    kept: list[error_details_pb2.BadRequest.FieldViolation] = []
    size_bytes = 0
    for violation in violations:
        field = violation.field[:_VIOLATION_FIELD_LENGTH_MAX]
        description = violation.description[:_VIOLATION_DESCRIPTION_LENGTH_MAX]
        size_bytes += len(field.encode()) + len(description.encode())
        if kept and size_bytes > VIOLATIONS_BYTES_MAX:
            break
        kept.append(
            error_details_pb2.BadRequest.FieldViolation(field=field, description=description)
        )
    omitted = len(violations) - len(kept)
    if omitted:
        kept.append(
            error_details_pb2.BadRequest.FieldViolation(
                field="request", description=f"and {omitted} more violations, not listed"
            )
        )
    return kept


def rich_status(
    code: grpc.StatusCode,
    reason: str,
    message: str,
    *,
    violations: Sequence[FieldViolation] = (),
    metadata: dict[str, str] | None = None,
) -> grpc.Status:
    """Builds a call status carrying ErrorInfo (and BadRequest when there are violations)."""
    return rpc_status.to_status(
        status_proto(code, reason, message, violations=violations, metadata=metadata)
    )


def rejection_proto(rejection: Rejection) -> status_pb2.Status:
    return status_proto(
        STATUS_BY_REASON[rejection.reason],
        rejection.reason.value,
        rejection.message,
        violations=rejection.violations,
        metadata=rejection.metadata,
    )


def rejection_status(rejection: Rejection) -> grpc.Status:
    return rpc_status.to_status(rejection_proto(rejection))


async def abort(context: grpc.aio.ServicerContext[object, object], status: grpc.Status) -> None:
    """Ends the call with ``status`` (raises, as grpc.aio's abort does)."""
    await context.abort(status.code, status.details, trailing_metadata=status.trailing_metadata)


@dataclass(frozen=True, slots=True)
class _Undecodable:
    """What the deserializer hands over instead of a request it could not decode."""

    message_type: str
    error: str


@dataclass(slots=True)
class InFlightLimit:
    """Bounds the work one server process holds at once, counted in ``unit`` (calls, or
    commands for the command server, where a batch weighs its commands).

    Without it a client flood grows the process without bound: 300 concurrent
    ExecuteBatch calls of 1,000 transfers took a command worker from 197 to 580 MB.
    Work over the limit is refused at once with RESOURCE_EXHAUSTED / SERVER_BUSY, before
    anything is done, so it frees its request's memory and can be retried (counted in
    ``chronos_grpc_requests_total`` by its code).
    """

    maximum: int
    unit: str
    weigh: Callable[[Any], int] = lambda _request: 1
    held: int = 0


def add_servicer(
    server: grpc.aio.Server, servicer: object, service: ServiceDescriptor, limit: InFlightLimit
) -> str:
    """Registers ``servicer``'s methods for ``service`` (all unary) and returns the
    service's full name.

    Used instead of the generated ``add_<Service>Servicer_to_server`` for two things
    every method needs: ``limit`` is applied to each call, and a request that is not a
    well-formed protobuf message (corrupt wire format, or a string field that is not
    UTF-8, which some clients do not check) is answered INVALID_ARGUMENT /
    VALIDATION_FAILED like any other bad input; in gRPC's own deserializer it fails,
    and gRPC answers UNKNOWN with a Python exception's text.
    """
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for method in service.methods:
        if method.client_streaming or method.server_streaming:
            raise ValueError(f"{method.full_name}: only unary methods are supported")
        request_class = message_factory.GetMessageClass(method.input_type)
        response_class = message_factory.GetMessageClass(method.output_type)
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            _guarded(getattr(servicer, method.name), limit),
            request_deserializer=_lenient_deserializer(request_class),
            response_serializer=response_class.SerializeToString,
        )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
    server.add_registered_method_handlers(service.full_name, handlers)
    return str(service.full_name)


def _lenient_deserializer(request_class: type[Message]) -> Callable[[bytes], object]:
    def deserialize(data: bytes) -> object:
        try:
            return request_class.FromString(data)
        except DecodeError as error:
            return _Undecodable(request_class.DESCRIPTOR.full_name, str(error))

    return deserialize


def _guarded(
    behavior: Callable[[Any, Any], Awaitable[Any]], limit: InFlightLimit
) -> Callable[[Any, Any], Awaitable[Any]]:
    async def handle(request: Any, context: Any) -> Any:
        if isinstance(request, _Undecodable):
            await abort(
                context,
                rich_status(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    Reason.VALIDATION_FAILED.value,
                    f"The request is invalid: it is not a well-formed {request.message_type} "
                    f"message ({request.error}).",
                ),
            )
        weight = limit.weigh(request)
        if limit.held + weight > limit.maximum:
            await abort(
                context,
                rich_status(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    "SERVER_BUSY",
                    f"The server holds {limit.held:,} {limit.unit} in flight and takes at most "
                    f"{limit.maximum:,}; this call ({weight:,}) was not started, so nothing was "
                    f"done. Retry after a short backoff (a command with the same request_id).",
                    metadata={"in_flight": str(limit.held), "in_flight_max": str(limit.maximum)},
                ),
            )
        limit.held += weight
        try:
            return await behavior(request, context)
        finally:
            limit.held -= weight

    return handle


def parse_address(address: str) -> tuple[str, int]:
    """Splits ``host:port``; raises ValueError with a clear message otherwise."""
    host, separator, port_text = address.rpartition(":")
    if not separator or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"address must be host:port, got {address!r}")
    return host, int(port_text)


async def serve(
    *,
    name: str,
    address: str,
    register: Callable[[grpc.aio.Server], Iterable[str]],
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    on_stop: Callable[[], Awaitable[None]] | None = None,
    shutdown_grace_seconds: float = 10.0,
    reuse_port: bool = False,
    ready: asyncio.Event | None = None,
) -> None:
    """Runs a grpc.aio server until SIGTERM or SIGINT, then shuts down gracefully.

    Args:
        name: For logs.
        address: ``host:port`` to bind.
        register: Adds the servicers to the server; returns their full service names
            (for health and reflection).
        interceptors: Server interceptors (telemetry).
        on_stop: Awaited after the server stopped accepting and in-flight calls ended
            (or the grace period passed): closes pools and clients.
        shutdown_grace_seconds: Bound on how long in-flight calls may take to finish.
        reuse_port: Bind with SO_REUSEPORT so several processes can share the port.
        ready: Set once the server listens.
    """
    parse_address(address)
    options = [("grpc.so_reuseport", 1 if reuse_port else 0)]
    server = grpc.aio.server(interceptors=list(interceptors), options=options)
    service_names = list(register(server))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for service_name in [*service_names, ""]:
        await health_servicer.set(service_name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        [
            *service_names,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ],
        server,
    )
    if server.add_insecure_port(address) == 0:
        raise OSError(f"{name}: cannot bind {address} (in use?)")
    await server.start()
    _logger.info("%s listening on %s", name, address)
    if ready is not None:
        ready.set()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    _logger.info(
        "%s stopping: draining in-flight calls (up to %.1f s)", name, shutdown_grace_seconds
    )
    for service_name in [*service_names, ""]:
        await health_servicer.set(service_name, health_pb2.HealthCheckResponse.NOT_SERVING)
    await server.stop(shutdown_grace_seconds)
    if on_stop is not None:
        await on_stop()
    _logger.info("%s stopped", name)

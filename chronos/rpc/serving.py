"""How both gRPC servers serve: registration with authentication, an in-flight limit
and lenient request decoding, then TLS, health, reflection and a graceful shutdown.

Refusals leave through :mod:`chronos.rpc.status`, like every other error a client sees.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from chronos.domain.errors import Reason, Rejection
from chronos.rpc.reflection import add_reflection
from chronos.rpc.status import abort
from chronos.security.authentication import Authenticator
from chronos.security.caller import Caller, reset_current_caller, set_current_caller
from chronos.security.config import SecuritySettings
from chronos.security.tls import CertificateFiles

_logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Undecodable:
    """What the deserializer hands over instead of a request it could not decode."""

    message_type: str
    error: str


@dataclass(slots=True)
class InFlightLimit:
    """Bounds the work one server process holds at once, counted in ``unit`` (calls, or
    commands for the command server, where a batch weighs its commands).

    Without it a client flood (many concurrent large batches) grows the process without
    bound. Work over the limit is refused at once with RESOURCE_EXHAUSTED / SERVER_BUSY,
    before anything is done, so it frees its request's memory and can be retried
    (counted in ``chronos_grpc_requests_total`` by its code).
    """

    maximum: int
    unit: str
    weigh: Callable[[Any], int] = lambda _request: 1
    held: int = 0


def add_servicer(
    server: grpc.aio.Server,
    servicer: object,
    service: ServiceDescriptor,
    limit: InFlightLimit,
    authenticator: Authenticator,
) -> str:
    """Registers ``servicer``'s methods for ``service`` (all unary) and returns the
    service's full name.

    Used instead of the generated ``add_<Service>Servicer_to_server`` for what every
    method needs: ``authenticator`` checks the caller first (the servicer finds it with
    ``current_caller()``), ``limit`` is applied to each call, and a request that is not a
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
            _guarded(getattr(servicer, method.name), limit, authenticator, method.full_name),
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


async def authenticated(
    authenticator: Authenticator, context: grpc.aio.ServicerContext[Any, Any]
) -> Caller:
    """The caller of the call ``context`` serves; ends the call when it is refused."""
    try:
        return await authenticator.authenticate(context.invocation_metadata())
    except Rejection as rejection:
        await abort(context, rejection)


def _guarded(
    behavior: Callable[[Any, Any], Awaitable[Any]],
    limit: InFlightLimit,
    authenticator: Authenticator,
    method_full_name: str,
) -> Callable[[Any, Any], Awaitable[Any]]:
    async def handle(request: Any, context: Any) -> Any:
        # Who is calling comes before anything about the request, so that a caller
        # without the right learns nothing from the answer.
        caller = await authenticated(authenticator, context)
        token = set_current_caller(caller)
        try:
            # Authorization of ``method_full_name`` by the caller's scopes goes here,
            # before the request is looked at.
            return await _limited(behavior, limit, request, context)
        finally:
            reset_current_caller(token)

    return handle


async def _limited(
    behavior: Callable[[Any, Any], Awaitable[Any]],
    limit: InFlightLimit,
    request: Any,
    context: Any,
) -> Any:
    if isinstance(request, _Undecodable):
        await abort(
            context,
            Rejection(
                Reason.VALIDATION_FAILED,
                f"The request is invalid: it is not a well-formed {request.message_type} "
                f"message ({request.error}).",
            ),
        )
    weight = limit.weigh(request)
    if limit.held + weight > limit.maximum:
        await abort(
            context,
            Rejection(
                Reason.SERVER_BUSY,
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


# Request metadata one call may carry (see serve()).
METADATA_BYTES_MAX = 96 * 1024


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
    security: SecuritySettings,
    authenticator: Authenticator,
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
        security: TLS (its files are read again on SIGHUP and when they change).
        authenticator: Checks the caller of every reflection call (the servicers' calls
            are checked by ``add_servicer``); health stays open for load balancers.
        interceptors: Server interceptors (telemetry).
        on_stop: Awaited after the server stopped accepting and in-flight calls ended
            (or the grace period passed): closes pools and clients.
        shutdown_grace_seconds: Bound on how long in-flight calls may take to finish.
        reuse_port: Bind with SO_REUSEPORT so several processes can share the port.
        ready: Set once the server listens.
    """
    parse_address(address)
    for warning in security.warnings:
        _logger.warning("%s: %s", name, warning)
    server = grpc.aio.server(interceptors=list(interceptors), options=_options(reuse_port))
    service_names = list(register(server))
    health_servicer = await _add_health(server, service_names)

    async def authenticate(context: grpc.aio.ServicerContext[Any, Any]) -> Caller:
        return await authenticated(authenticator, context)

    add_reflection(
        server,
        [*service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name],
        authenticate,
    )
    loop = asyncio.get_running_loop()
    certificates = _bind(server, name, address, security)
    if certificates is not None:
        loop.add_signal_handler(signal.SIGHUP, certificates.request_reload)
    await server.start()
    _logger.info("%s listening on %s (%s)", name, address, "TLS" if certificates else "plaintext")
    if ready is not None:
        ready.set()

    stop = asyncio.Event()
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


def _options(reuse_port: bool) -> list[tuple[str, int]]:
    return [
        ("grpc.so_reuseport", 1 if reuse_port else 0),
        # gRPC refuses request headers over 8-16 kB itself, with RESOURCE_EXHAUSTED and
        # no reason; up to this bound they reach the authentication, whose length check
        # refuses an oversized token cheaply with UNAUTHENTICATED, like any bad token.
        ("grpc.max_metadata_size", METADATA_BYTES_MAX),
        ("grpc.absolute_max_metadata_size", METADATA_BYTES_MAX),
    ]


async def _add_health(
    server: grpc.aio.Server, service_names: Sequence[str]
) -> health.aio.HealthServicer:
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for service_name in [*service_names, ""]:
        await health_servicer.set(service_name, health_pb2.HealthCheckResponse.SERVING)
    return health_servicer


def _bind(
    server: grpc.aio.Server, name: str, address: str, security: SecuritySettings
) -> CertificateFiles | None:
    """Binds ``address``, with TLS unless it is turned off; returns the TLS files."""
    certificates = None if security.tls is None else CertificateFiles(security.tls)
    if certificates is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, certificates.server_credentials())
    if port == 0:
        raise OSError(f"{name}: cannot bind {address} (in use?)")
    return certificates

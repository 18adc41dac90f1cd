"""How both gRPC servers serve: registration with an in-flight limit and lenient
request decoding, then health, reflection and a graceful shutdown.

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
from grpc_reflection.v1alpha import reflection

from chronos.domain.errors import Reason, Rejection
from chronos.rpc.refusals import authorize_method
from chronos.rpc.status import abort

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
            _guarded(getattr(servicer, method.name), limit, method.full_name),
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
    behavior: Callable[[Any, Any], Awaitable[Any]], limit: InFlightLimit, method_full_name: str
) -> Callable[[Any, Any], Awaitable[Any]]:
    async def handle(request: Any, context: Any) -> Any:
        await authorize_method(context, method_full_name)
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

"""Server reflection (what grpcurl and other tools use to learn the API), authenticated,
as both ``grpc.reflection.v1`` and ``grpc.reflection.v1alpha``.

grpcio-reflection serves only v1alpha. The v1 protocol has the same messages under the
package ``grpc.reflection.v1``, so their wire format is identical: the v1 service is the
same servicer under the v1 name, and its file descriptor (so that tools can describe it)
is the v1alpha one renamed. Method names resolve as symbols too (``describe
chronos.v1.CommandService.TransferFunds``), which the protobuf pool alone does not do.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import _async, _base
from grpc_reflection.v1alpha import reflection_pb2 as v1alpha_pb2

V1ALPHA_SERVICE = "grpc.reflection.v1alpha.ServerReflection"
V1_SERVICE = "grpc.reflection.v1.ServerReflection"
_V1ALPHA_PACKAGE = ".grpc.reflection.v1alpha."
_V1_PACKAGE = ".grpc.reflection.v1."
_V1_FILE = "grpc/reflection/v1/reflection.proto"


class _Servicer(_async.ReflectionServicer):  # type: ignore[misc]
    def _file_containing_symbol(self, request: Any, fully_qualified_name: str) -> Any:
        response = super()._file_containing_symbol(request, fully_qualified_name)
        if not response.HasField("error_response"):
            return response
        service_name, _, method_name = fully_qualified_name.rpartition(".")
        try:
            service = self._pool.FindServiceByName(service_name)
        except KeyError:
            return response
        if method_name not in service.methods_by_name:
            return response
        return _base._file_descriptor_response(service.file, request)


def register_v1_descriptor(pool: descriptor_pool.DescriptorPool | None = None) -> None:
    """Adds ``grpc/reflection/v1/reflection.proto`` to ``pool`` (default: the default
    pool), built from the v1alpha file with the package renamed. Idempotent."""
    pool = descriptor_pool.Default() if pool is None else pool
    try:
        pool.FindFileByName(_V1_FILE)
        return
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto()
    v1alpha_pb2.DESCRIPTOR.CopyToProto(proto)
    proto.name = _V1_FILE
    proto.package = _V1_PACKAGE.strip(".")
    proto.ClearField("options")
    for message in proto.message_type:
        _rename_types(message)
    for service in proto.service:
        for method in service.method:
            method.input_type = method.input_type.replace(_V1ALPHA_PACKAGE, _V1_PACKAGE)
            method.output_type = method.output_type.replace(_V1ALPHA_PACKAGE, _V1_PACKAGE)
    pool.AddSerializedFile(proto.SerializeToString())


def _rename_types(message: descriptor_pb2.DescriptorProto) -> None:
    for field in message.field:
        # Set only where present: in proto2, assigning even "" marks a field as set.
        if field.HasField("type_name"):
            field.type_name = field.type_name.replace(_V1ALPHA_PACKAGE, _V1_PACKAGE)
    for nested in message.nested_type:
        _rename_types(nested)


def add_reflection(
    server: grpc.aio.Server,
    service_names: Iterable[str],
    authenticate: Callable[[grpc.aio.ServicerContext[Any, Any]], Awaitable[object]],
) -> None:
    """Serves reflection of ``service_names`` (and itself) on ``server``; each stream
    first passes ``authenticate`` (which aborts the call when the caller is refused)."""
    register_v1_descriptor()
    servicer = _Servicer([*service_names, V1_SERVICE, V1ALPHA_SERVICE])

    async def info(
        requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        await authenticate(context)
        async for response in servicer.ServerReflectionInfo(requests, context):
            yield response

    handler = grpc.stream_stream_rpc_method_handler(
        info,
        request_deserializer=v1alpha_pb2.ServerReflectionRequest.FromString,
        response_serializer=v1alpha_pb2.ServerReflectionResponse.SerializeToString,
    )
    for name in (V1_SERVICE, V1ALPHA_SERVICE):
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(name, {"ServerReflectionInfo": handler}),)
        )

"""The console's connection to QueryService: one channel, TLS as configured, and the
bearer token from a file, re-read when the file changes (so a rotated token is picked up
without a restart)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import grpc
from google.protobuf.message import Message

from chronos.v1 import queries_pb2
from query_server.console.api import READ_METHODS
from query_server.console.config import ConsoleConfig

_SERVICE = queries_pb2.DESCRIPTOR.services_by_name["QueryService"]

# A token is a JWT of a few hundred bytes; a file much larger is a mistake.
TOKEN_FILE_BYTES_MAX = 16 * 1024


class TokenFile:
    """The token in a file, cached until the file's modification time changes."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._token = ""

    def token(self) -> str:
        """The file's token, stripped of surrounding white space.

        Raises:
            OSError: the file cannot be read.
            ValueError: the file is empty or too large.
        """
        status = os.stat(self._path)
        stamp = (status.st_mtime_ns, status.st_size)
        with self._lock:
            if stamp != self._stamp:
                if status.st_size > TOKEN_FILE_BYTES_MAX:
                    raise ValueError(f"{self._path} is larger than a token")
                token = self._path.read_text().strip()
                if not token:
                    raise ValueError(f"{self._path} holds no token")
                self._token, self._stamp = token, stamp
            return self._token


# gRPC backs off up to two minutes between reconnects by default; the console should
# show the read side again within a poll or two of its return.
CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.min_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 2000),
)


def open_channel(config: ConsoleConfig) -> grpc.Channel:
    """A channel to the query server, TLS unless the configuration says plaintext."""
    if not config.tls:
        return grpc.insecure_channel(config.query_address, options=CHANNEL_OPTIONS)
    roots = Path(config.ca_file).read_bytes() if config.ca_file else None
    credentials = grpc.ssl_channel_credentials(root_certificates=roots)
    return grpc.secure_channel(config.query_address, credentials, options=CHANNEL_OPTIONS)


class QueryClient:
    """Calls QueryService's read RPCs by name, with the token and a deadline."""

    def __init__(
        self, channel: grpc.Channel, token_file: TokenFile | None, timeout_seconds: float
    ) -> None:
        self._methods = {
            name: channel.unary_unary(
                f"/{_SERVICE.full_name}/{name}",
                request_serializer=_serialize,
                response_deserializer=getattr(
                    queries_pb2, _SERVICE.methods_by_name[name].output_type.name
                ).FromString,
            )
            for name in READ_METHODS
        }
        self._token_file = token_file
        self._timeout_seconds = timeout_seconds

    def call(self, method: str, request: Message) -> Message:
        """The answer of ``method`` (a QueryService method name) to ``request``.

        Raises:
            grpc.RpcError: the query server refused or could not answer.
        """
        metadata = []
        if self._token_file is not None:
            metadata.append(("authorization", f"Bearer {self._token_file.token()}"))
        answer: Message = self._methods[method](
            request, metadata=metadata, timeout=self._timeout_seconds
        )
        return answer


def _serialize(request: Message) -> bytes:
    serialized: bytes = request.SerializeToString()
    return serialized

"""The console's pure parts: query parameters to RPC requests, refusals to JSON, its
settings, its token file, and its HTTP surface (GET only, Host checked, static files)
with a fake query client."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from http import HTTPStatus
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2

from chronos.settings import ConfigError
from chronos.v1 import queries_pb2
from query_server.console.api import READ_METHODS, ApiError, parse_request, refusal
from query_server.console.config import ConsoleConfig, is_loopback
from query_server.console.query_client import TokenFile
from query_server.console.server import STATIC_TYPES, ConsoleServer


def test_parameters_become_the_rpcs_request() -> None:
    request = parse_request(
        "ListEvents",
        {
            "event_types": ["FundsTransferred", "FundsDeposited"],
            "account_id": ["a-1"],
            "start_time": ["2026-01-02T03:04:05.678Z"],
            "from_position": ["41"],
            "order": ["EVENT_ORDER_ASCENDING"],
            "page_size": ["7"],
            "text": [""],
        },
    )
    assert isinstance(request, queries_pb2.ListEventsRequest)
    assert list(request.event_types) == ["FundsTransferred", "FundsDeposited"]
    assert request.account_id == "a-1" and request.text == ""
    assert request.start_time.ToJsonString() == "2026-01-02T03:04:05.678Z"
    assert (request.from_position, request.page_size) == (41, 7)
    assert request.order == queries_pb2.EVENT_ORDER_ASCENDING
    status = parse_request("SearchAccounts", {"status": ["ACCOUNT_STATUS_FROZEN"]})
    assert status == queries_pb2.SearchAccountsRequest(status=2)


def test_every_read_rpc_has_an_endpoint_and_nothing_else_does() -> None:
    service = queries_pb2.DESCRIPTOR.services_by_name["QueryService"]
    assert set(READ_METHODS) == {method.name for method in service.methods}
    for method in READ_METHODS:
        assert parse_request(method, {}).ByteSize() == 0
    for name in ("TransferFunds", "Withdraw", "config", ""):
        with pytest.raises(ApiError) as refused:
            parse_request(name, {})
        assert refused.value.status == HTTPStatus.NOT_FOUND


@pytest.mark.parametrize(
    ("method", "parameters", "named"),
    [
        ("ListEvents", {"start_time": ["yesterday"]}, "start_time"),
        ("GetBalanceAt", {"at_time": ["2026-13-01T00:00:00Z"]}, "at_time"),
        ("ListEvents", {"page_size": ["many"]}, "page_size"),
        ("ListEvents", {"order": ["SIDEWAYS"]}, "order"),
        ("GetAccount", {"nope": ["1"]}, "nope"),
        ("GetAccount", {"account_id": ["a", "b"]}, "account_id"),
        ("ListTransactions", {"metadata": ["x"]}, "metadata"),
        ("GetEntry", {"entry_id": ["x" * 1001]}, "entry_id"),
    ],
)
def test_a_bad_parameter_is_a_400_that_names_it(
    method: str, parameters: dict[str, list[str]], named: str
) -> None:
    with pytest.raises(ApiError) as refused:
        parse_request(method, parameters)
    error = refused.value
    assert (error.status, error.code, error.reason) == (
        HTTPStatus.BAD_REQUEST,
        "INVALID_ARGUMENT",
        "BAD_QUERY_PARAMETER",
    )
    assert named in error.message and "Traceback" not in error.message
    assert json.loads(error.body()) == {
        "error": {
            "code": "INVALID_ARGUMENT",
            "reason": "BAD_QUERY_PARAMETER",
            "message": error.message,
        }
    }


class _Refused(grpc.RpcError, grpc.Call):  # type: ignore[misc]
    """A failed call as grpc raises it: code, details and the rich status trailer."""

    def __init__(self, code: grpc.StatusCode, message: str, reason: str) -> None:
        self._code, self._message = code, message
        detail = any_pb2.Any()
        detail.Pack(error_details_pb2.ErrorInfo(reason=reason, domain="chronos.ledger"))
        status = status_pb2.Status(
            code=getattr(code_pb2, code.name), message=message, details=[detail] if reason else []
        )
        self._trailer = (("grpc-status-details-bin", status.SerializeToString()),)

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._message

    def trailing_metadata(self) -> Any:
        return self._trailer

    def initial_metadata(self) -> Any:
        return ()

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> float | None:
        return None

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: Any) -> bool:
        return False


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (grpc.StatusCode.NOT_FOUND, HTTPStatus.NOT_FOUND),
        (grpc.StatusCode.INVALID_ARGUMENT, HTTPStatus.BAD_REQUEST),
        (grpc.StatusCode.PERMISSION_DENIED, HTTPStatus.FORBIDDEN),
        (grpc.StatusCode.UNAVAILABLE, HTTPStatus.SERVICE_UNAVAILABLE),
        (grpc.StatusCode.DEADLINE_EXCEEDED, HTTPStatus.GATEWAY_TIMEOUT),
        (grpc.StatusCode.INTERNAL, HTTPStatus.BAD_GATEWAY),
    ],
)
def test_a_refusal_keeps_its_reason_and_message(code: grpc.StatusCode, status: HTTPStatus) -> None:
    error = refusal(_Refused(code, "account x does not exist", "ACCOUNT_NOT_FOUND"))
    assert (error.status, error.code, error.reason, error.message) == (
        status,
        code.name,
        "ACCOUNT_NOT_FOUND",
        "account x does not exist",
    )
    bare = refusal(_Refused(code, "", ""))
    assert (bare.reason, bare.message) == ("", code.name)


def test_the_console_serves_on_loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    for host in ("127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "10.0.0.1", "example.com", "::"):
        assert not is_loopback(host), host
    monkeypatch.setenv("CHRONOS_CONSOLE_ADDRESS", "0.0.0.0:8080")
    with pytest.raises(ConfigError, match="loopback"):
        ConsoleConfig.from_env()
    monkeypatch.setenv("CHRONOS_CONSOLE_ADDRESS", "127.0.0.1:8081")
    monkeypatch.setenv("CHRONOS_CONSOLE_TRACE_URL_TEMPLATE", "http://jaeger/trace/")
    with pytest.raises(ConfigError, match="trace_id"):
        ConsoleConfig.from_env()
    monkeypatch.setenv("CHRONOS_CONSOLE_TRACE_URL_TEMPLATE", "http://jaeger/trace/{trace_id}")
    monkeypatch.setenv("CHRONOS_INSECURE_NO_TLS", "1")
    monkeypatch.setenv("CHRONOS_CONSOLE_TOKEN_FILE", "")
    config = ConsoleConfig.from_env()
    assert (config.address, config.tls, config.token_file) == ("127.0.0.1:8081", False, None)


def test_the_token_file_is_reread_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("first-token\n")
    tokens = TokenFile(path)
    assert tokens.token() == "first-token"
    path.write_text("second-token-longer\n")
    assert tokens.token() == "second-token-longer"
    path.write_text("  \n")
    with pytest.raises(ValueError, match="no token"):
        tokens.token()
    path.unlink()
    with pytest.raises(OSError):
        tokens.token()


class _FakeClient:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Message]] = []
        self.error: BaseException | None = None

    def call(self, method: str, request: Message) -> Message:
        self.calls.append((method, request))
        if self.error is not None:
            raise self.error
        return queries_pb2.GetAccountResponse(account_id="a-1", as_of_position=9)


@pytest.fixture
def served() -> Iterator[tuple[ConsoleServer, _FakeClient]]:
    client = _FakeClient()
    server = ConsoleServer(("127.0.0.1", 0), client, "http://t/{trace_id}")  # type: ignore[arg-type]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, client
    finally:
        server.shutdown()
        server.server_close()


def _fetch(server: ConsoleServer, path: str, method: str = "GET", host: str = "") -> Any:
    port = server.server_address[1]
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    headers = {"Host": host or f"127.0.0.1:{port}"}
    connection.request(method, path, headers=headers)
    response = connection.getresponse()
    return response.status, response.getheader("Content-Type"), response.read(), response


def test_the_http_surface_is_read_only_and_answers_its_own_host_only(
    served: tuple[ConsoleServer, _FakeClient],
) -> None:
    server, client = served
    status, content_type, body, _ = _fetch(server, "/api/GetAccount?account_id=a-1")
    assert (status, content_type) == (200, "application/json")
    assert json.loads(body)["account_id"] == "a-1" and json.loads(body)["as_of_position"] == "9"
    assert client.calls == [("GetAccount", queries_pb2.GetAccountRequest(account_id="a-1"))]
    for method in ("POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"):
        status, _, _, response = _fetch(server, "/api/GetAccount", method=method)
        assert status == 405 and response.getheader("Allow") == "GET", method
    assert _fetch(server, "/api/GetAccount", host="attacker.example:80")[0] == 421
    assert len(client.calls) == 1
    config = json.loads(_fetch(server, "/api/config")[2])
    assert config == {"trace_url_template": "http://t/{trace_id}"}


def test_the_static_files_are_package_data(served: tuple[ConsoleServer, _FakeClient]) -> None:
    server, _ = served
    for name in STATIC_TYPES:
        status, content_type, body, response = _fetch(server, f"/static/{name}")
        assert (status, content_type) == (200, STATIC_TYPES[name]) and body, name
        assert "default-src 'self'" in response.getheader("Content-Security-Policy")
    status, _, body, _ = _fetch(server, "/")
    assert status == 200 and b"/static/console.js" in body
    assert _fetch(server, "/static/../config.py")[0] == 404
    assert _fetch(server, "/etc/passwd")[0] == 404


def test_failures_become_json_never_a_traceback(served: tuple[ConsoleServer, _FakeClient]) -> None:
    server, client = served
    client.error = _Refused(
        grpc.StatusCode.UNAVAILABLE, "Elasticsearch is down", "READ_MODEL_UNAVAILABLE"
    )
    status, _, body, _ = _fetch(server, "/api/GetAccount?account_id=a")
    assert status == 503 and json.loads(body)["error"]["reason"] == "READ_MODEL_UNAVAILABLE"
    client.error = FileNotFoundError("/secret/token")
    status, _, body, _ = _fetch(server, "/api/GetAccount?account_id=a")
    assert status == 503 and json.loads(body)["error"]["reason"] == "CONSOLE_TOKEN_UNREADABLE"
    client.error = RuntimeError("bug")
    status, _, body, _ = _fetch(server, "/api/GetAccount?account_id=a")
    assert status == 500 and json.loads(body)["error"] == {
        "code": "INTERNAL",
        "reason": "CONSOLE_FAULT",
        "message": "console fault",
    }
    status, _, body, _ = _fetch(server, "/api/ListEvents?start_time=noon")
    assert status == 400 and b"Traceback" not in body

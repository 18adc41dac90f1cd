"""Authentication and TLS of both real servers: every RPC refuses every hostile token
with UNAUTHENTICATED (never INTERNAL/UNKNOWN) and writes nothing; reflection is
authenticated, health is open; TLS, mutual TLS, certificate rotation, the refusal to
start insecure on the network, and the rate limit."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from google.protobuf import descriptor_pb2, message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2
from grpc_status import rpc_status

from chronos.security.tokens import issue_token, load_signing_key
from chronos.v1 import commands_pb2, queries_pb2
from chronos_dev import launcher
from chronos_dev.pki import LocalPki, ensure_local_pki
from tests.e2e.helpers import details_of, free_port
from tests.e2e.secure_servers import (
    AUDIENCE,
    ISSUER,
    Tokens,
    credentials,
    health_status,
    request_id,
    secure_env,
    secure_server,
)
from tests.integration.conftest import create_database, drop_database

COMMAND_SERVICE = commands_pb2.DESCRIPTOR.services_by_name["CommandService"]
QUERY_SERVICE = queries_pb2.DESCRIPTOR.services_by_name["QueryService"]
REFLECTION_METHODS = (
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> LocalPki:
    return ensure_local_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tokens(pki: LocalPki) -> Tokens:
    return Tokens(pki)


@pytest.fixture(scope="module")
def command_server(
    pg_dsn: str, pki: LocalPki, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str, Path]]:
    name, dsn = create_database(pg_dsn)
    address = f"127.0.0.1:{free_port()}"
    env = secure_env(pki) | {"CHRONOS_PG_DSN": dsn, "CHRONOS_COMMAND_ADDR": address}
    log_path = tmp_path_factory.mktemp("authn-command") / "command.log"
    try:
        with secure_server("command_server", env, log_path, address, credentials(pki.ca_cert)):
            yield address, dsn, log_path
    finally:
        drop_database(pg_dsn, name)


def query_env(
    pki: LocalPki, es_url: str, address: str, cert_dir: Path | None = None
) -> dict[str, str]:
    return secure_env(pki, cert_dir) | {
        "CHRONOS_ES_URL": es_url,
        "CHRONOS_INDEX_PREFIX": f"authn-{os.getpid()}",
        "CHRONOS_QUERY_ADDR": address,
    }


@pytest.fixture(scope="module")
def query_server(
    es_url: str, pki: LocalPki, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    address = f"127.0.0.1:{free_port()}"
    log_path = tmp_path_factory.mktemp("authn-query") / "query.log"
    env = query_env(pki, es_url, address)
    with secure_server("query_server", env, log_path, address, credentials(pki.ca_cert)):
        yield address


def sample_request(method: MethodDescriptor) -> Any:
    """A request that would write if it ran (OpenAccount, a batch of one), else empty."""
    request_class = message_factory.GetMessageClass(method.input_type)
    open_account = commands_pb2.OpenAccountRequest(
        request_id=request_id(), owner_name="Mallory", currency="EUR"
    )
    if method.name == "OpenAccount":
        return open_account
    if method.name == "ExecuteBatch":
        return commands_pb2.ExecuteBatchRequest(
            commands=[commands_pb2.BatchCommand(open_account=open_account)]
        )
    return request_class()


def call(
    channel: grpc.Channel,
    service: ServiceDescriptor,
    method: MethodDescriptor,
    authorization: str | None,
) -> tuple[grpc.StatusCode, str, str]:
    """Calls ``method``; returns (code, ErrorInfo reason, message) (OK, "", "" on success)."""
    stub = channel.unary_unary(
        f"/{service.full_name}/{method.name}",
        request_serializer=lambda message: message.SerializeToString(),
        response_deserializer=lambda data: data,
    )
    metadata = None if authorization is None else [("authorization", authorization)]
    try:
        stub(sample_request(method), metadata=metadata, timeout=10)
    except grpc.RpcError as error:
        status = rpc_status.from_call(error)
        reason = details_of(status)[0] if status is not None else ""
        return error.code(), reason, error.details() or ""
    return grpc.StatusCode.OK, "", ""


def written_rows(dsn: str) -> tuple[int, int, int]:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM idempotency),"
            " (SELECT count(*) FROM outbox)"
        ).fetchone()
    assert row is not None
    return row[0], row[1], row[2]


def assert_refused(
    code: grpc.StatusCode, reason: str, message: str, case: str, token: str | None
) -> None:
    assert code is grpc.StatusCode.UNAUTHENTICATED, (case, code, message)
    assert reason == "UNAUTHENTICATED", (case, reason)
    assert message.startswith("Not authenticated: "), (case, message)
    if token is not None and len(token) > 40:
        assert token.split()[-1][:40] not in message, f"{case}: the token is echoed"


def test_every_command_rpc_refuses_every_hostile_token_and_writes_nothing(
    command_server: tuple[str, str, Path], pki: LocalPki, tokens: Tokens
) -> None:
    address, dsn, log_path = command_server
    before = written_rows(dsn)
    with grpc.secure_channel(address, credentials(pki.ca_cert)) as channel:
        for case, authorization in tokens.hostile().items():
            for method in COMMAND_SERVICE.methods:
                code, reason, message = call(channel, COMMAND_SERVICE, method, authorization)
                assert_refused(code, reason, message, f"{case} {method.name}", authorization)
        assert written_rows(dsn) == before
        # The same calls with a valid token do write: the count above could have moved.
        open_account = COMMAND_SERVICE.methods_by_name["OpenAccount"]
        code, _, message = call(channel, COMMAND_SERVICE, open_account, "Bearer " + tokens.valid())
        assert code is grpc.StatusCode.OK, message
    assert written_rows(dsn)[0] == before[0] + 1
    log = log_path.read_text()
    assert "refused a call: UNAUTHENTICATED" in log
    for case, authorization in tokens.hostile().items():
        if authorization is not None and len(authorization) > 40:
            assert authorization.split()[-1][-40:] not in log, f"{case}: the token is logged"


def test_authentication_comes_before_decoding_the_request(
    command_server: tuple[str, str, Path], pki: LocalPki
) -> None:
    with grpc.secure_channel(command_server[0], credentials(pki.ca_cert)) as channel:
        transfer = channel.unary_unary(
            "/chronos.v1.CommandService/TransferFunds",
            request_serializer=lambda data: data,
            response_deserializer=lambda data: data,
        )
        with pytest.raises(grpc.RpcError) as refused:
            transfer(b"\xff\xff not protobuf", timeout=10)
    assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED


def test_every_query_rpc_refuses_every_hostile_token(
    query_server: str, pki: LocalPki, tokens: Tokens
) -> None:
    with grpc.secure_channel(query_server, credentials(pki.ca_cert)) as channel:
        for case, authorization in tokens.hostile().items():
            for method in QUERY_SERVICE.methods:
                code, reason, message = call(channel, QUERY_SERVICE, method, authorization)
                assert_refused(code, reason, message, f"{case} {method.name}", authorization)
        get_account = QUERY_SERVICE.methods_by_name["GetAccount"]
        code, reason, _ = call(channel, QUERY_SERVICE, get_account, "Bearer " + tokens.valid())
        assert code is not grpc.StatusCode.UNAUTHENTICATED and reason != "UNAUTHENTICATED"


def test_the_refusal_message_names_the_check(
    query_server: str, pki: LocalPki, tokens: Tokens
) -> None:
    expected = {
        "no token": "no bearer token",
        "garbage": "not a well-formed JWT",
        "expired": "expired",
        "not yet valid": "not valid yet",
        "wrong issuer": "not issued by",
        "wrong audience": "not meant for this service",
        "alg none": "algorithm is not allowed",
        "hs256 with the public key": "algorithm is not allowed",
        "unknown kid": "unknown key",
        "tampered payload": "signature does not verify",
        "64 kB": "longer than",
    }
    get_account = QUERY_SERVICE.methods_by_name["GetAccount"]
    with grpc.secure_channel(query_server, credentials(pki.ca_cert)) as channel:
        for case, authorization in tokens.hostile().items():
            message = call(channel, QUERY_SERVICE, get_account, authorization)[2]
            assert expected[case] in message, (case, message)


def reflect(
    channel: grpc.Channel,
    method: str,
    request: reflection_pb2.ServerReflectionRequest,
    token: str | None,
) -> reflection_pb2.ServerReflectionResponse:
    stream = channel.stream_stream(
        method,
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    metadata = None if token is None else [("authorization", f"Bearer {token}")]
    return next(iter(stream(iter([request]), metadata=metadata, timeout=10)))


@pytest.mark.parametrize("method", REFLECTION_METHODS)
def test_reflection_is_authenticated_and_resolves_method_symbols(
    command_server: tuple[str, str, Path], pki: LocalPki, tokens: Tokens, method: str
) -> None:
    list_services = reflection_pb2.ServerReflectionRequest(list_services="")
    with grpc.secure_channel(command_server[0], credentials(pki.ca_cert)) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            reflect(channel, method, list_services, None)
        assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
        token = tokens.valid()
        services = reflect(channel, method, list_services, token).list_services_response.service
        names = {service.name for service in services}
        assert {
            "chronos.v1.CommandService",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        } <= names
        for symbol in (
            "chronos.v1.CommandService.TransferFunds",
            "grpc.reflection.v1.ServerReflection",
        ):
            answer = reflect(
                channel,
                method,
                reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol),
                token,
            )
            assert answer.HasField("file_descriptor_response"), (symbol, answer.error_response)
            files = [
                descriptor_pb2.FileDescriptorProto.FromString(data)
                for data in answer.file_descriptor_response.file_descriptor_proto
            ]
            service_name = symbol.rsplit(".", 1)[0] if "TransferFunds" in symbol else symbol
            assert any(
                f"{file.package}.{service.name}" == service_name
                for file in files
                for service in file.service
            )


def test_health_is_open_without_a_token(query_server: str, pki: LocalPki) -> None:
    assert (
        health_status(query_server, credentials(pki.ca_cert))
        == health_pb2.HealthCheckResponse.SERVING
    )


def test_a_plaintext_client_cannot_call_the_tls_port(query_server: str) -> None:
    with grpc.insecure_channel(query_server) as channel, pytest.raises(grpc.RpcError) as refused:
        channel.unary_unary("/grpc.health.v1.Health/Check")(
            health_pb2.HealthCheckRequest().SerializeToString(), timeout=5
        )
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_refuses_a_client_without_a_certificate(
    es_url: str, pki: LocalPki, tokens: Tokens, tmp_path: Path
) -> None:
    address = f"127.0.0.1:{free_port()}"
    env = query_env(pki, es_url, address) | {"CHRONOS_TLS_CLIENT_CA_FILE": str(pki.ca_cert)}
    with_cert = credentials(pki.ca_cert, (pki.client_cert, pki.client_key))
    with secure_server("query_server", env, tmp_path / "query.log", address, with_cert):
        with pytest.raises(grpc.RpcError) as refused:
            health_status(address, credentials(pki.ca_cert))
        assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
        with grpc.secure_channel(address, with_cert) as channel:
            get_account = QUERY_SERVICE.methods_by_name["GetAccount"]
            code, reason, _ = call(channel, QUERY_SERVICE, get_account, "Bearer " + tokens.valid())
            assert code is not grpc.StatusCode.UNAUTHENTICATED and reason != "UNAUTHENTICATED"
            code = call(channel, QUERY_SERVICE, get_account, None)[0]
            assert code is grpc.StatusCode.UNAUTHENTICATED


def test_a_rotated_certificate_is_served_to_new_connections_without_a_restart(
    es_url: str, pki: LocalPki, tmp_path: Path
) -> None:
    cert_dir = tmp_path / "served"
    cert_dir.mkdir()
    for path in (pki.server_cert, pki.server_key):
        shutil.copy(path, cert_dir / path.name)
    rotated = ensure_local_pki(tmp_path / "rotated")  # another CA
    address = f"127.0.0.1:{free_port()}"
    env = query_env(pki, es_url, address, cert_dir)
    serving = health_pb2.HealthCheckResponse.SERVING
    with secure_server(
        "query_server", env, tmp_path / "query.log", address, credentials(pki.ca_cert)
    ):
        with pytest.raises(grpc.RpcError):
            health_status(address, credentials(rotated.ca_cert))
        for source in (rotated.server_key, rotated.server_cert):
            staged = cert_dir / f".{source.name}.new"
            shutil.copy(source, staged)
            os.replace(staged, cert_dir / source.name)
        deadline = time.monotonic() + 10
        while True:
            try:
                assert health_status(address, credentials(rotated.ca_cert)) == serving
                break
            except grpc.RpcError:
                assert time.monotonic() < deadline, "the new certificate was not served"
                time.sleep(0.2)
        with pytest.raises(grpc.RpcError):
            health_status(address, credentials(pki.ca_cert))


def test_a_non_loopback_bind_without_tls_refuses_to_start(es_url: str, tmp_path: Path) -> None:
    env = {
        "CHRONOS_QUERY_ADDR": f"0.0.0.0:{free_port()}",
        "CHRONOS_ES_URL": es_url,
        "CHRONOS_INSECURE_NO_TLS": "1",
        "CHRONOS_INSECURE_NO_AUTH": "1",
        "CHRONOS_INSECURE_ALLOW_REMOTE": "",
        "CHRONOS_QUERY_METRICS_PORT": "0",
    }
    log_path = tmp_path / "query.log"
    process = launcher.spawn("query_server", launcher.service_environment(env), log_path)
    assert process.wait(timeout=60) == 2
    output = log_path.read_text()
    assert "query-server: CHRONOS_INSECURE_NO_TLS and CHRONOS_INSECURE_NO_AUTH may only" in output
    assert "used on a loopback address" in output and "CHRONOS_INSECURE_ALLOW_REMOTE" in output
    assert "Traceback" not in output


def test_allow_remote_starts_insecure_with_a_warning(es_url: str, tmp_path: Path) -> None:
    port = free_port()
    env = {
        "CHRONOS_QUERY_ADDR": f"0.0.0.0:{port}",
        "CHRONOS_INSECURE_NO_TLS": "1",
        "CHRONOS_INSECURE_NO_AUTH": "1",
        "CHRONOS_INSECURE_ALLOW_REMOTE": "1",
        "CHRONOS_ES_URL": es_url,
        "CHRONOS_QUERY_METRICS_PORT": "0",
    }
    log_path = tmp_path / "query.log"
    process = launcher.spawn("query_server", launcher.service_environment(env), log_path)
    try:
        launcher.wait_serving(
            "query_server",
            f"127.0.0.1:{port}",
            process,
            log_path,
            deadline=time.monotonic() + 60,
            security_=launcher.PLAINTEXT,
        )
    finally:
        launcher.stop(process)
    assert "INSECURE: CHRONOS_INSECURE_NO_TLS and CHRONOS_INSECURE_NO_AUTH" in log_path.read_text()


def test_the_rate_limit_refuses_with_rate_limited(
    es_url: str, pki: LocalPki, tokens: Tokens, tmp_path: Path
) -> None:
    address = f"127.0.0.1:{free_port()}"
    env = query_env(pki, es_url, address) | {
        "CHRONOS_RATE_LIMIT_PER_SECOND": "0.001",
        "CHRONOS_RATE_LIMIT_BURST": "2",
    }
    get_account = QUERY_SERVICE.methods_by_name["GetAccount"]
    with (
        secure_server(
            "query_server", env, tmp_path / "query.log", address, credentials(pki.ca_cert)
        ),
        grpc.secure_channel(address, credentials(pki.ca_cert)) as channel,
    ):
        alice, bob = ("Bearer " + tokens.valid(subject) for subject in ("alice", "bob"))
        answers = [call(channel, QUERY_SERVICE, get_account, alice) for _ in range(3)]
        assert [reason == "RATE_LIMITED" for _, reason, _ in answers] == [False, False, True]
        assert answers[2][0] is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert call(channel, QUERY_SERVICE, get_account, bob)[1] != "RATE_LIMITED"


@contextmanager
def local_identity_provider(pki: LocalPki) -> Iterator[str]:
    """A loopback OpenID Connect provider serving its discovery document and the PKI's
    JWKS; yields its issuer URL. Counts nothing: the server's cache is tested in units."""
    jwks = pki.jwks.read_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            issuer = f"http://127.0.0.1:{self.server.server_address[1]}"
            if self.path == "/.well-known/openid-configuration":
                body = json.dumps({"issuer": issuer, "jwks_uri": f"{issuer}/keys"}).encode()
            elif self.path == "/keys":
                body = jwks
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_tokens_verify_against_an_oidc_issuers_keys(
    es_url: str, pki: LocalPki, tmp_path: Path
) -> None:
    address = f"127.0.0.1:{free_port()}"
    get_account = QUERY_SERVICE.methods_by_name["GetAccount"]
    with local_identity_provider(pki) as issuer:
        env = query_env(pki, es_url, address) | {
            "CHRONOS_AUTH_JWKS_FILE": "",
            "CHRONOS_AUTH_OIDC_ISSUER": issuer,
            "CHRONOS_AUTH_ISSUER": issuer,
        }
        creds = credentials(pki.ca_cert)
        with (
            secure_server("query_server", env, tmp_path / "query.log", address, creds),
            grpc.secure_channel(address, creds) as channel,
        ):
            key = load_signing_key(pki.signing_key)
            token = issue_token(
                key, subject="idp-user", scopes=["ledger:read"], issuer=issuer, audience=AUDIENCE
            )
            code, reason, _ = call(channel, QUERY_SERVICE, get_account, f"Bearer {token}")
            assert code is not grpc.StatusCode.UNAUTHENTICATED and reason != "UNAUTHENTICATED"
            local = issue_token(
                key, subject="x", scopes=["admin"], issuer=ISSUER, audience=AUDIENCE
            )
            code, _, message = call(channel, QUERY_SERVICE, get_account, f"Bearer {local}")
            assert code is grpc.StatusCode.UNAUTHENTICATED and "not issued by" in message

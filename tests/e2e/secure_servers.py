"""Starting the real servers with TLS and authentication on, and calling them, for the
authentication tests."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from grpc_health.v1 import health_pb2, health_pb2_grpc

from chronos.security.tokens import issue_token, load_signing_key, public_jwk
from chronos_dev import launcher
from chronos_dev.pki import LocalPki

ISSUER = "chronos-local"
AUDIENCE = "chronos-ledger"
START_SECONDS_MAX = 60.0


def secure_env(pki: LocalPki, cert_dir: Path | None = None) -> dict[str, str]:
    """What turns TLS and authentication on (the launcher turns them off otherwise)."""
    cert_dir = cert_dir or pki.directory
    return {
        "CHRONOS_INSECURE_NO_TLS": "",
        "CHRONOS_INSECURE_NO_AUTH": "",
        "CHRONOS_TLS_CERT_FILE": str(cert_dir / pki.server_cert.name),
        "CHRONOS_TLS_KEY_FILE": str(cert_dir / pki.server_key.name),
        "CHRONOS_AUTH_JWKS_FILE": str(pki.jwks),
        "CHRONOS_COMMAND_METRICS_PORT": "0",
        "CHRONOS_QUERY_METRICS_PORT": "0",
    }


def credentials(ca: Path, client_cert: tuple[Path, Path] | None = None) -> grpc.ChannelCredentials:
    if client_cert is None:
        return grpc.ssl_channel_credentials(root_certificates=ca.read_bytes())
    cert, key = client_cert
    return grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes(),
        private_key=key.read_bytes(),
        certificate_chain=cert.read_bytes(),
    )


def health_status(address: str, creds: grpc.ChannelCredentials, timeout: float = 2.0) -> Any:
    with grpc.secure_channel(address, creds) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout).status


@contextmanager
def secure_server(
    module: str, env: dict[str, str], log_path: Path, address: str, creds: grpc.ChannelCredentials
) -> Iterator[Any]:
    """Starts ``python -m module`` and waits until its health check over TLS says SERVING."""
    process = launcher.spawn(module, launcher.service_environment(env), log_path)
    try:
        deadline = time.monotonic() + START_SECONDS_MAX
        while True:
            launcher.check_alive(module, process, log_path)
            try:
                if (
                    health_status(address, creds, timeout=1)
                    == health_pb2.HealthCheckResponse.SERVING
                ):
                    break
            except grpc.RpcError:
                pass
            assert time.monotonic() < deadline, f"{module} not serving:\n{log_path.read_text()}"
            time.sleep(0.1)
        yield process
    finally:
        launcher.stop(process)


@dataclass(frozen=True)
class Tokens:
    """A valid token and every hostile one, minted with the local PKI's signing key."""

    pki: LocalPki

    def valid(self, subject: str = "e2e-admin", scopes: tuple[str, ...] = ("admin",)) -> str:
        key = load_signing_key(self.pki.signing_key)
        return issue_token(key, subject=subject, scopes=scopes, issuer=ISSUER, audience=AUDIENCE)

    def hostile(self) -> dict[str, str | None]:
        """Case name -> ``authorization`` metadata value (None: no metadata at all)."""
        key = load_signing_key(self.pki.signing_key)

        def signed(**options: Any) -> str:
            arguments: dict[str, Any] = {
                "subject": "mallory",
                "scopes": ["admin"],
                "issuer": ISSUER,
                "audience": AUDIENCE,
            }
            return issue_token(key, **(arguments | options))

        header, payload, signature = self.valid().split(".")
        claims = json.loads(_unb64(payload)) | {"sub": "someone-else"}
        kid = public_jwk(key.public_key())["kid"]
        stranger = Ed25519PrivateKey.generate()
        return {
            "no token": None,
            "garbage": "Bearer garbage",
            "expired": "Bearer " + signed(now=time.time() - 7200, ttl_seconds=60),
            "not yet valid": "Bearer " + signed(now=time.time() + 3600),
            "wrong issuer": "Bearer " + signed(issuer="someone-else"),
            "wrong audience": "Bearer " + signed(audience="another-api"),
            "alg none": "Bearer " + _alg_none(claims, kid),
            "hs256 with the public key": "Bearer " + _hs256_with_public_key(key, claims, kid),
            "unknown kid": "Bearer "
            + issue_token(
                stranger, subject="eve", scopes=["admin"], issuer=ISSUER, audience=AUDIENCE
            ),
            "tampered payload": f"Bearer {header}.{_b64(json.dumps(claims).encode())}.{signature}",
            "64 kB": "Bearer " + "A" * (64 * 1024),
        }


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _alg_none(claims: dict[str, Any], kid: str) -> str:
    header = _b64(json.dumps({"alg": "none", "kid": kid, "typ": "JWT"}).encode())
    return f"{header}.{_b64(json.dumps(claims).encode())}."


def _hs256_with_public_key(key: Ed25519PrivateKey, claims: dict[str, Any], kid: str) -> str:
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = _b64(json.dumps({"alg": "HS256", "kid": kid, "typ": "JWT"}).encode())
    body = f"{header}.{_b64(json.dumps(claims).encode())}"
    return f"{body}.{_b64(hmac.new(public_pem, body.encode(), hashlib.sha256).digest())}"


def request_id() -> str:
    return f"authn-{uuid.uuid4()}"

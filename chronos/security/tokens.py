"""Tokens signed with a local Ed25519 key: for development, tests and operations.

Production deployments usually take tokens from an identity provider instead (see
docs/security.md); the servers verify both the same way, against a JWKS.

PyJWT signs and verifies: it is the most widely deployed JOSE library for Python, it
makes the caller name the accepted algorithms on every decode (so ``none`` and
algorithm confusion are refused by construction), and it needs only ``cryptography``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from chronos.security.scopes import ACCOUNTS_CLAIM

ALGORITHM = "EdDSA"
TTL_SECONDS_DEFAULT = 3600
TTL_SECONDS_MAX = 30 * 24 * 3600


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def public_jwk(public_key: Ed25519PublicKey) -> dict[str, str]:
    """The key as a JWK, with its RFC 7638 thumbprint as ``kid``."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    members = {"crv": "Ed25519", "kty": "OKP", "x": _b64url(raw)}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    kid = _b64url(hashlib.sha256(canonical).digest())
    return {**members, "kid": kid, "alg": ALGORITHM, "use": "sig"}


def jwks_document(public_keys: Iterable[Ed25519PublicKey]) -> dict[str, Any]:
    """A JWKS (``{"keys": [...]}``) of ``public_keys``."""
    return {"keys": [public_jwk(key) for key in public_keys]}


def new_signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    """The Ed25519 private key in the PEM file ``path``."""
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} does not hold an Ed25519 private key")
    return key


def issue_token(
    key: Ed25519PrivateKey,
    *,
    subject: str,
    scopes: Iterable[str],
    issuer: str,
    audience: str,
    accounts: Iterable[str] | None = None,
    ttl_seconds: int = TTL_SECONDS_DEFAULT,
    now: float | None = None,
    extra_claims: Mapping[str, Any] | None = None,
) -> str:
    """A signed JWT for ``subject`` with ``scopes`` (and, when given, an account
    restriction), valid from now for ``ttl_seconds``."""
    if not subject:
        raise ValueError("a token needs a subject")
    if not 0 < ttl_seconds <= TTL_SECONDS_MAX:
        raise ValueError(f"ttl_seconds must be between 1 and {TTL_SECONDS_MAX}")
    issued_at = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "sub": subject,
        "jti": str(uuid.uuid4()),
        "iat": issued_at,
        "nbf": issued_at,
        "exp": issued_at + ttl_seconds,
        "scope": " ".join(sorted(set(scopes))),
    }
    if accounts is not None:
        claims[ACCOUNTS_CLAIM] = sorted(set(accounts))
    claims.update(extra_claims or {})
    kid = public_jwk(key.public_key())["kid"]
    return jwt.encode(claims, key, algorithm=ALGORITHM, headers={"kid": kid})

"""The public keys bearer tokens are verified with: from a JWKS file, or from an OpenID
Connect issuer's JWKS (its discovery document names it), fetched and cached.

Only signature keys of the allowed algorithms are kept, each bound to its one algorithm
by its key type: a token cannot pick another algorithm for a key (algorithm confusion).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import jwt

from chronos.config import ConfigError

_logger = logging.getLogger(__name__)

# The algorithm each allowed key type verifies. Never `none`, never an HMAC algorithm:
# a server holding only public keys must not accept a token "signed" with one.
ALGORITHM_BY_KEY_TYPE: Mapping[tuple[str, str], str] = {
    ("OKP", "Ed25519"): "EdDSA",
    ("EC", "P-256"): "ES256",
    ("RSA", ""): "RS256",
}
ALLOWED_ALGORITHMS = frozenset(ALGORITHM_BY_KEY_TYPE.values())

# Bounds on what an identity provider can make a server hold or wait for.
KEYS_MAX = 64
DOCUMENT_BYTES_MAX = 256 * 1024
FETCH_TIMEOUT_SECONDS = 5.0
# An unknown key id may mean the provider rotated its keys: the JWKS is fetched again,
# but at most this often, so a flood of tokens with made-up key ids costs one fetch.
UNKNOWN_KEY_REFETCH_SECONDS_MIN = 60.0


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """One public key, its id and the one algorithm it verifies."""

    kid: str
    algorithm: str
    key: Any


class KeySource(Protocol):
    """Where the verifier finds the key a token names."""

    async def key(self, kid: str) -> VerificationKey | None: ...


def parse_jwks(document: object) -> dict[str, VerificationKey]:
    """The usable keys of a JWKS document, by ``kid``; others are skipped with a log line.

    Raises:
        ValueError: the document is not a JWKS.
    """
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError('a JWKS is a JSON object with a "keys" list')
    keys: dict[str, VerificationKey] = {}
    for entry in document["keys"][:KEYS_MAX]:
        parsed = _parse_jwk(entry)
        if parsed is not None:
            keys[parsed.kid] = parsed
    return keys


def _parse_jwk(entry: object) -> VerificationKey | None:
    if not isinstance(entry, dict):
        return None
    kid = entry.get("kid")
    curve = entry.get("crv", "") if entry.get("kty") != "RSA" else ""
    algorithm = ALGORITHM_BY_KEY_TYPE.get((str(entry.get("kty")), str(curve)))
    if not isinstance(kid, str) or not kid or algorithm is None:
        _logger.info("JWKS: skipped a key of type %s (no kid, or not allowed)", entry.get("kty"))
        return None
    if entry.get("use", "sig") != "sig" or entry.get("alg", algorithm) != algorithm:
        _logger.info("JWKS: skipped key %s (not a %s signature key)", kid, algorithm)
        return None
    try:
        key = jwt.PyJWK(entry, algorithm=algorithm).key
    except jwt.PyJWTError as error:
        _logger.warning("JWKS: skipped key %s: %s", kid, error)
        return None
    return VerificationKey(kid=kid, algorithm=algorithm, key=key)


class JwksFileKeys:
    """The keys of a JWKS file, read again when the file changes (key rotation)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._stamp: tuple[int, int] | None = None
        self._keys: dict[str, VerificationKey] = {}
        try:
            self._reload()
        except (OSError, ValueError) as error:
            raise ConfigError(f"CHRONOS_AUTH_JWKS_FILE: {path}: {error}") from error
        if not self._keys:
            raise ConfigError(f"CHRONOS_AUTH_JWKS_FILE: {path} holds no usable key")

    def _reload(self) -> None:
        stat = self._path.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp != self._stamp:
            self._keys = parse_jwks(json.loads(self._path.read_bytes()[:DOCUMENT_BYTES_MAX]))
            self._stamp = stamp

    async def key(self, kid: str) -> VerificationKey | None:
        found = self._keys.get(kid)
        if found is None:
            try:
                self._reload()
            except (OSError, ValueError) as error:
                _logger.warning("JWKS file %s unreadable, keeping its keys: %s", self._path, error)
            found = self._keys.get(kid)
        return found


def fetch_json(url: str, timeout_seconds: float = FETCH_TIMEOUT_SECONDS) -> object:
    """GETs ``url`` and parses its JSON body (at most DOCUMENT_BYTES_MAX bytes)."""
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout_seconds) as response:
        body = response.read(DOCUMENT_BYTES_MAX + 1)
    if len(body) > DOCUMENT_BYTES_MAX:
        raise ValueError(f"{url}: the document exceeds {DOCUMENT_BYTES_MAX} bytes")
    return json.loads(body)


class OidcKeys:
    """The keys of an OpenID Connect issuer: its discovery document names ``jwks_uri``.

    Fetched on first use and again after ``refresh_seconds``; an unknown key id fetches
    again at most once per UNKNOWN_KEY_REFETCH_SECONDS_MIN. A failed fetch keeps the
    keys fetched before. Fetches run in a thread, one at a time, so a slow provider
    never blocks the server's event loop.
    """

    def __init__(
        self,
        issuer_url: str,
        refresh_seconds: float,
        *,
        fetch: Callable[[str], object] = fetch_json,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._discovery_url = issuer_url.rstrip("/") + "/.well-known/openid-configuration"
        self._refresh_seconds = refresh_seconds
        self._fetch = fetch
        self._clock = clock
        self._keys: dict[str, VerificationKey] = {}
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()

    async def key(self, kid: str) -> VerificationKey | None:
        now = self._clock()
        stale = now - self._fetched_at >= self._refresh_seconds
        unknown = kid not in self._keys
        refetch_gap = min(self._refresh_seconds, UNKNOWN_KEY_REFETCH_SECONDS_MIN)
        if stale or (unknown and now - self._fetched_at >= refetch_gap):
            async with self._lock:
                # Another call may have fetched while this one waited for the lock.
                if self._clock() - self._fetched_at >= refetch_gap:
                    await self._refresh()
        return self._keys.get(kid)

    async def _refresh(self) -> None:
        # Counted as an attempt even when it fails, so an unreachable provider is asked
        # again after the gap, not on every call.
        self._fetched_at = self._clock()
        try:
            keys = await asyncio.to_thread(self._fetch_keys)
        except Exception as error:  # Any failure keeps the keys fetched before.
            _logger.warning("OIDC keys not fetched from %s: %s", self._discovery_url, error)
            return
        self._keys = keys

    def _fetch_keys(self) -> dict[str, VerificationKey]:
        discovery = self._fetch(self._discovery_url)
        jwks_uri = discovery.get("jwks_uri") if isinstance(discovery, dict) else None
        # Keys fetched in plaintext could be swapped on the way: https, unless the issuer
        # itself is a loopback http one (a local provider in development).
        schemes = (
            ("https://", "http://") if self._discovery_url.startswith("http:") else ("https://",)
        )
        if not isinstance(jwks_uri, str) or not jwks_uri.startswith(schemes):
            raise ValueError("the discovery document has no usable (https) jwks_uri")
        return parse_jwks(self._fetch(jwks_uri))

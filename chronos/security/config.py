"""Security settings both gRPC servers read (declared once; see ``chronos.settings``).

Secure by default: TLS and authentication are on unless a development setting turns
them off, and off is refused on a non-loopback address unless
``CHRONOS_INSECURE_ALLOW_REMOTE`` says so explicitly.
"""

from __future__ import annotations

import ipaddress
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from chronos.security.keys import JwksFileKeys
from chronos.security.tls import CertificateFiles, TlsFiles
from chronos.settings import ConfigError, SettingsGroup, flag, integer, number, text

TLS_CERT_FILE = text(
    "CHRONOS_TLS_CERT_FILE",
    "",
    type_name="path",
    doc="PEM certificate (chain) the gRPC servers present; re-read when the file changes.",
)
TLS_KEY_FILE = text(
    "CHRONOS_TLS_KEY_FILE",
    "",
    type_name="path",
    doc="PEM private key of `CHRONOS_TLS_CERT_FILE`; re-read when the file changes.",
)
TLS_CLIENT_CA_FILE = text(
    "CHRONOS_TLS_CLIENT_CA_FILE",
    "",
    type_name="path",
    doc="When set, mutual TLS: clients must present a certificate this CA signed.",
)
INSECURE_NO_TLS = flag(
    "CHRONOS_INSECURE_NO_TLS", doc="Development only: serve gRPC in plaintext (loopback only)."
)
INSECURE_NO_AUTH = flag(
    "CHRONOS_INSECURE_NO_AUTH",
    doc="Development only: accept calls without a token, with every scope (loopback only).",
)
INSECURE_ALLOW_REMOTE = flag(
    "CHRONOS_INSECURE_ALLOW_REMOTE",
    doc="Allow the two settings above on a non-loopback address (a warning at every start).",
)
AUTH_JWKS_FILE = text(
    "CHRONOS_AUTH_JWKS_FILE",
    "",
    type_name="path",
    doc="JWKS file of the keys tokens are signed with (or use `CHRONOS_AUTH_OIDC_ISSUER`).",
)
AUTH_OIDC_ISSUER = text(
    "CHRONOS_AUTH_OIDC_ISSUER",
    "",
    type_name="URL",
    doc="OpenID Connect issuer whose JWKS (from its discovery document) verifies tokens.",
)
AUTH_ISSUER = text(
    "CHRONOS_AUTH_ISSUER",
    "chronos-local",
    doc="The `iss` a token must carry (with OIDC, normally the issuer URL).",
)
AUTH_AUDIENCE = text("CHRONOS_AUTH_AUDIENCE", "chronos-ledger", doc="The `aud` a token must carry.")
AUTH_CLOCK_SKEW_SECONDS = integer(
    "CHRONOS_AUTH_CLOCK_SKEW_SECONDS",
    30,
    minimum=0,
    maximum=300,
    doc="Tolerated clock difference when checking `exp` and `nbf`.",
)
AUTH_JWKS_REFRESH_SECONDS = integer(
    "CHRONOS_AUTH_JWKS_REFRESH_SECONDS",
    300,
    minimum=10,
    maximum=86400,
    doc="How long fetched OIDC keys are kept before they are fetched again.",
)
AUTH_TOKEN_CACHE_MAX = integer(
    "CHRONOS_AUTH_TOKEN_CACHE_MAX",
    10_000,
    minimum=0,
    maximum=1_000_000,
    doc="Verified tokens kept per process until they expire (0: verify every call).",
)
RATE_LIMIT_PER_SECOND = number(
    "CHRONOS_RATE_LIMIT_PER_SECOND",
    0.0,
    minimum=0.0,
    maximum=1_000_000.0,
    doc="Calls per second one principal may make to one server process (0: no limit).",
)
RATE_LIMIT_BURST = integer(
    "CHRONOS_RATE_LIMIT_BURST",
    100,
    minimum=1,
    maximum=1_000_000,
    doc="Calls a principal may make at once above the rate before RATE_LIMITED.",
)
# Read by clients (tooling, tests, the demo), not by the servers.
TLS_CA_FILE = text(
    "CHRONOS_TLS_CA_FILE",
    "",
    type_name="path",
    doc="Clients: the CA that signed the servers' certificates.",
)
AUTH_SIGNING_KEY_FILE = text(
    "CHRONOS_AUTH_SIGNING_KEY_FILE",
    "",
    type_name="path",
    doc="`chronos token issue`: the Ed25519 private key (PEM) tokens are signed with.",
)

SETTINGS = SettingsGroup(
    title="Security (both gRPC servers, and `chronos token issue`)",
    summary="TLS, bearer-token authentication and the per-principal rate limit of the "
    "command and query servers; see docs/security.md.",
    settings=(
        TLS_CERT_FILE,
        TLS_KEY_FILE,
        TLS_CLIENT_CA_FILE,
        INSECURE_NO_TLS,
        INSECURE_NO_AUTH,
        INSECURE_ALLOW_REMOTE,
        AUTH_JWKS_FILE,
        AUTH_OIDC_ISSUER,
        AUTH_ISSUER,
        AUTH_AUDIENCE,
        AUTH_CLOCK_SKEW_SECONDS,
        AUTH_JWKS_REFRESH_SECONDS,
        AUTH_TOKEN_CACHE_MAX,
        RATE_LIMIT_PER_SECOND,
        RATE_LIMIT_BURST,
        TLS_CA_FILE,
        AUTH_SIGNING_KEY_FILE,
    ),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthSettings:
    """How bearer tokens are verified: keys from a JWKS file or an OIDC issuer."""

    jwks_file: Path | None
    oidc_issuer: str
    issuer: str
    audience: str
    clock_skew_seconds: int
    jwks_refresh_seconds: int
    token_cache_max: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SecuritySettings:
    """A server's security, read once at start. ``tls`` None: plaintext; ``auth`` None:
    every call runs as :data:`chronos.security.caller.UNAUTHENTICATED`."""

    tls: TlsFiles | None
    auth: AuthSettings | None
    rate_limit_per_second: float
    rate_limit_burst: int
    # Why this server runs without TLS or authentication on a non-loopback address:
    # logged as a warning at every start.
    warnings: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, address: str, environ: Mapping[str, str] | None = None) -> SecuritySettings:
        """Reads the settings for a server bound to ``address`` (``host:port``).

        Raises:
            ConfigError: TLS or authentication is on and not configured, or off on a
                non-loopback address without ``CHRONOS_INSECURE_ALLOW_REMOTE``.
        """
        no_tls = INSECURE_NO_TLS.read(environ)
        no_auth = INSECURE_NO_AUTH.read(environ)
        warnings = _insecure_warnings(address, no_tls, no_auth, environ)
        return cls(
            tls=None if no_tls else _tls_files(environ),
            auth=None if no_auth else _auth_settings(environ),
            rate_limit_per_second=RATE_LIMIT_PER_SECOND.read(environ),
            rate_limit_burst=RATE_LIMIT_BURST.read(environ),
            warnings=warnings,
        )


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address's host part) only accepts local connections."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _insecure_warnings(
    address: str, no_tls: bool, no_auth: bool, environ: Mapping[str, str] | None
) -> tuple[str, ...]:
    host = address.rpartition(":")[0]
    if not (no_tls or no_auth) or is_loopback(host):
        return ()
    turned_off = " and ".join(
        name
        for name, off in ((INSECURE_NO_TLS.name, no_tls), (INSECURE_NO_AUTH.name, no_auth))
        if off
    )
    if not INSECURE_ALLOW_REMOTE.read(environ):
        raise ConfigError(
            f"{turned_off} may only be used on a loopback address, and {address} is not "
            f"one: configure TLS and authentication, or set {INSECURE_ALLOW_REMOTE.name}=1 "
            "to run insecure on the network on purpose"
        )
    return (
        f"INSECURE: {turned_off} on the non-loopback address {address} "
        f"({INSECURE_ALLOW_REMOTE.name}=1): anyone who can reach it is trusted",
    )


def _tls_files(environ: Mapping[str, str] | None) -> TlsFiles:
    cert_file, key_file = TLS_CERT_FILE.read(environ), TLS_KEY_FILE.read(environ)
    for setting, value in ((TLS_CERT_FILE, cert_file), (TLS_KEY_FILE, key_file)):
        if not value:
            raise ConfigError(
                f"TLS is on by default and {setting.name} is not set: set "
                f"{TLS_CERT_FILE.name} and {TLS_KEY_FILE.name} (or, on loopback for "
                f"development only, {INSECURE_NO_TLS.name}=1)"
            )
    client_ca = TLS_CLIENT_CA_FILE.read(environ)
    files = TlsFiles(
        cert_file=Path(cert_file),
        key_file=Path(key_file),
        client_ca_file=Path(client_ca) if client_ca else None,
    )
    for setting, path in (
        (TLS_CERT_FILE, files.cert_file),
        (TLS_KEY_FILE, files.key_file),
        (TLS_CLIENT_CA_FILE, files.client_ca_file),
    ):
        if path is not None and not path.is_file():
            raise ConfigError(f"{setting.name}: {path} is not a readable file")
    # Read now so that a malformed file or a key of another certificate stops the start.
    CertificateFiles(files)
    return files


def _auth_settings(environ: Mapping[str, str] | None) -> AuthSettings:
    jwks_file, oidc_issuer = AUTH_JWKS_FILE.read(environ), AUTH_OIDC_ISSUER.read(environ)
    if bool(jwks_file) == bool(oidc_issuer):
        raise ConfigError(
            f"authentication is on by default and needs exactly one of {AUTH_JWKS_FILE.name} "
            f"and {AUTH_OIDC_ISSUER.name} (or, on loopback for development only, "
            f"{INSECURE_NO_AUTH.name}=1)"
        )
    if jwks_file:
        # Read now so that a missing or empty file stops the start with one clear line.
        JwksFileKeys(Path(jwks_file))
    if oidc_issuer:
        _check_issuer_url(oidc_issuer)
    return AuthSettings(
        jwks_file=Path(jwks_file) if jwks_file else None,
        oidc_issuer=oidc_issuer.rstrip("/"),
        issuer=AUTH_ISSUER.read(environ),
        audience=AUTH_AUDIENCE.read(environ),
        clock_skew_seconds=AUTH_CLOCK_SKEW_SECONDS.read(environ),
        jwks_refresh_seconds=AUTH_JWKS_REFRESH_SECONDS.read(environ),
        token_cache_max=AUTH_TOKEN_CACHE_MAX.read(environ),
    )


def _check_issuer_url(url: str) -> None:
    # Keys fetched in plaintext could be swapped by anyone on the path; http is allowed
    # only to a loopback issuer (a local identity provider in development).
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname and is_loopback(parts.hostname):
        return
    raise ConfigError(
        f"{AUTH_OIDC_ISSUER.name} must be an https:// URL (http:// only on loopback), got {url!r}"
    )

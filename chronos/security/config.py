"""Security settings both gRPC servers read (declared once; see ``chronos.settings``).

Secure by default: TLS and authentication are on unless a development setting turns
them off, and off is refused on a non-loopback address unless
``CHRONOS_INSECURE_ALLOW_REMOTE`` says so explicitly.
"""

from __future__ import annotations

from chronos.settings import flag, integer, number, text

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

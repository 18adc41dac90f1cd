"""gRPC channels to the Chronos servers, secured as the environment describes.

Every tool and test that calls the servers opens its channel here. With
``CHRONOS_TLS_CA_FILE`` set (the local stack exports it) the channel is TLS, trusting that
CA; with ``CHRONOS_AUTH_SIGNING_KEY_FILE`` set each call carries a bearer token minted with
that key (``admin`` unless other scopes are asked for). Without them, plaintext and no
token (servers run with ``CHRONOS_INSECURE_NO_TLS`` / ``CHRONOS_INSECURE_NO_AUTH``).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from chronos.security import config as security
from chronos.security.scopes import ADMIN
from chronos.security.tokens import TTL_SECONDS_MAX, issue_token, load_signing_key

SUBJECT_DEFAULT = "chronos-dev"


@dataclass(frozen=True, slots=True)
class ClientSecurity:
    """What a client needs: the CA to trust (None: plaintext) and the token (None: none)."""

    ca_pem: bytes | None
    token: str | None

    def channel_credentials(self) -> grpc.ChannelCredentials:
        assert self.ca_pem is not None, "plaintext channels take no credentials"
        credentials = grpc.ssl_channel_credentials(root_certificates=self.ca_pem)
        if self.token is None:
            return credentials
        return grpc.composite_channel_credentials(
            credentials, grpc.access_token_call_credentials(self.token)
        )

    def metadata(self) -> list[tuple[str, str]]:
        """The ``authorization`` header, for clients that set metadata themselves."""
        return [] if self.token is None else [("authorization", f"Bearer {self.token}")]


def token_from_env(
    environ: Mapping[str, str] | None = None,
    *,
    subject: str = SUBJECT_DEFAULT,
    scopes: Iterable[str] = (ADMIN,),
    accounts: Iterable[str] | None = None,
    ttl_seconds: int = 24 * 3600,
) -> str | None:
    """A token signed with the configured key, or None when no key is configured."""
    environ = os.environ if environ is None else environ
    key_file = security.AUTH_SIGNING_KEY_FILE.read(environ)
    if not key_file or security.INSECURE_NO_AUTH.read(environ):
        return None
    return _token(
        key_file,
        subject,
        tuple(sorted(scopes)),
        None if accounts is None else tuple(sorted(accounts)),
        min(ttl_seconds, TTL_SECONDS_MAX),
        security.AUTH_ISSUER.read(environ),
        security.AUTH_AUDIENCE.read(environ),
    )


@functools.lru_cache(maxsize=64)
def _token(
    key_file: str,
    subject: str,
    scopes: tuple[str, ...],
    accounts: tuple[str, ...] | None,
    ttl_seconds: int,
    issuer: str,
    audience: str,
) -> str:
    # Minted once per process and set of claims: tools run for minutes, tokens last a day.
    return issue_token(
        load_signing_key(Path(key_file)),
        subject=subject,
        scopes=scopes,
        accounts=accounts,
        issuer=issuer,
        audience=audience,
        ttl_seconds=ttl_seconds,
    )


def client_security(
    environ: Mapping[str, str] | None = None,
    *,
    subject: str = SUBJECT_DEFAULT,
    scopes: Iterable[str] = (ADMIN,),
    accounts: Iterable[str] | None = None,
) -> ClientSecurity:
    """The CA and token the environment gives a client."""
    environ = os.environ if environ is None else environ
    ca_file = security.TLS_CA_FILE.read(environ)
    ca_pem = None
    if ca_file and not security.INSECURE_NO_TLS.read(environ):
        ca_pem = Path(ca_file).read_bytes()
    token = token_from_env(environ, subject=subject, scopes=scopes, accounts=accounts)
    return ClientSecurity(ca_pem=ca_pem, token=token)


def channel(
    address: str,
    *,
    security_: ClientSecurity | None = None,
    options: Sequence[tuple[str, object]] = (),
) -> grpc.Channel:
    """A blocking channel to ``address``, secured as ``security_`` (default: the environment)."""
    resolved = client_security() if security_ is None else security_
    if resolved.ca_pem is None:
        return grpc.insecure_channel(address, options=list(options))
    return grpc.secure_channel(address, resolved.channel_credentials(), options=list(options))


def aio_channel(
    address: str,
    *,
    security_: ClientSecurity | None = None,
    options: Sequence[tuple[str, object]] = (),
) -> grpc.aio.Channel:
    """An asyncio channel to ``address``, secured as ``security_`` (default: the environment)."""
    resolved = client_security() if security_ is None else security_
    if resolved.ca_pem is None:
        return grpc.aio.insecure_channel(address, options=list(options))
    return grpc.aio.secure_channel(address, resolved.channel_credentials(), options=list(options))

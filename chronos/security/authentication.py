"""Who is calling: the one check every call of both servers passes first.

:meth:`Authenticator.authenticate` reads the bearer token of a call's metadata,
verifies it (``chronos.security.verify``), applies the per-principal rate limit, and
counts and logs each refusal (rate-limited, never with the token).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from opentelemetry import trace

from chronos.domain.errors import Reason, Rejection
from chronos.metrics import AUTH_REFUSALS
from chronos.security.caller import UNAUTHENTICATED, Caller
from chronos.security.config import SecuritySettings
from chronos.security.keys import JwksFileKeys, KeySource, OidcKeys
from chronos.security.rate_limit import RateLimiter
from chronos.security.verify import TokenVerifier, unauthenticated
from chronos.telemetry import Throttle

_logger = logging.getLogger(__name__)

# One line per this many seconds at most: a client with a bad token retrying in a loop
# would otherwise fill the log (the counter still counts every refusal).
REFUSAL_LOG_INTERVAL_SECONDS = 10.0


class Authenticator:
    """Authenticates the calls of the server named ``server`` (``command``, ``query``).

    Without a verifier (``CHRONOS_INSECURE_NO_AUTH``) every call runs as
    :data:`~chronos.security.caller.UNAUTHENTICATED`.
    """

    def __init__(
        self, server: str, verifier: TokenVerifier | None, limiter: RateLimiter | None = None
    ) -> None:
        self._server = server
        self._verifier = verifier
        self._limiter = limiter
        self._refusal_log = Throttle(REFUSAL_LOG_INTERVAL_SECONDS)

    async def authenticate(self, metadata: Sequence[tuple[str, Any]] | None) -> Caller:
        """The caller of a call with ``metadata`` (its invocation metadata).

        Raises:
            Rejection: UNAUTHENTICATED, or RATE_LIMITED; counted and logged.
        """
        caller = UNAUTHENTICATED
        try:
            if self._verifier is not None:
                caller = await self._verifier.verify(_authorization(metadata))
            if self._limiter is not None and not self._limiter.admit(caller.subject):
                raise Rejection(
                    Reason.RATE_LIMITED,
                    "Too many calls: this caller's rate limit is reached; nothing was done. "
                    "Retry after a backoff.",
                )
        except Rejection as rejection:
            self.refused(rejection, caller.subject)
            raise
        if caller.subject:
            trace.get_current_span().set_attribute("enduser.id", caller.subject)
        return caller

    def refused(self, rejection: Rejection, subject: str) -> None:
        """Counts and logs (rate-limited) a refused call."""
        AUTH_REFUSALS.labels(self._server, rejection.reason.value).inc()
        held_back = self._refusal_log.admit()
        if held_back is not None:
            _logger.warning(
                "%s server refused a call: %s %s (subject %r; %d more refusals since the "
                "last line)",
                self._server,
                rejection.reason.value,
                rejection.message,
                subject,
                held_back,
            )


def _authorization(metadata: Sequence[tuple[str, Any]] | None) -> str | None:
    values = [value for key, value in metadata or () if key == "authorization"]
    if len(values) > 1:
        raise unauthenticated("the call carries more than one authorization metadata")
    if not values:
        return None
    value = values[0]
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def build_authenticator(server: str, settings: SecuritySettings) -> Authenticator:
    """The authenticator ``settings`` describe (reads the JWKS file now, if any).

    Raises:
        ConfigError: the JWKS file is unreadable or holds no usable key.
    """
    verifier = None
    if settings.auth is not None:
        auth = settings.auth
        keys: KeySource = (
            JwksFileKeys(auth.jwks_file)
            if auth.jwks_file is not None
            else OidcKeys(auth.oidc_issuer, auth.jwks_refresh_seconds)
        )
        verifier = TokenVerifier(
            keys,
            issuer=auth.issuer,
            audience=auth.audience,
            clock_skew_seconds=auth.clock_skew_seconds,
            cache_max=auth.token_cache_max,
        )
    limiter = None
    if settings.rate_limit_per_second > 0:
        limiter = RateLimiter(settings.rate_limit_per_second, settings.rate_limit_burst)
    return Authenticator(server, verifier, limiter)

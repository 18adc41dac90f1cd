"""Verifies the bearer token of a call and turns it into a :class:`Caller`.

Every refusal is ``Rejection(Reason.UNAUTHENTICATED, message)`` whose message says which
check failed in plain words. It never repeats the token, nor a claim the token chose,
except the issuer and audience the server expects (which are not secret).
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import jwt

from chronos.domain.errors import Reason, Rejection
from chronos.security.caller import Caller
from chronos.security.keys import ALLOWED_ALGORITHMS, KeySource
from chronos.security.scopes import ACCOUNTS_CLAIM

# A JWT with a few scopes and accounts is well under 2 kB; anything past this bound is
# refused before it is parsed or hashed, so a huge header costs a length check.
TOKEN_LENGTH_MAX = 8192
_BEARER = "bearer "
# Bounds on what a token's claims may hold, so one cached caller stays small.
_CLAIM_ITEMS_MAX = 1000
_CLAIM_TEXT_LENGTH_MAX = 256


def unauthenticated(why: str) -> Rejection:
    """The refusal of a call whose token failed a check (``why`` names the check)."""
    return Rejection(Reason.UNAUTHENTICATED, f"Not authenticated: {why}.")


class TokenVerifier:
    """Checks signature (by the key the ``kid`` names, with its one algorithm), ``iss``,
    ``aud``, ``exp``, ``nbf`` (with ``clock_skew_seconds``) and ``sub``.

    A verified token is kept (by its SHA-256, up to ``cache_max`` of them, the oldest
    dropped first) until it expires, so a caller's next calls cost a dictionary lookup.
    """

    def __init__(
        self,
        keys: KeySource,
        *,
        issuer: str,
        audience: str,
        clock_skew_seconds: float,
        cache_max: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keys = keys
        self._issuer = issuer
        self._audience = audience
        self._clock_skew_seconds = clock_skew_seconds
        self._cache_max = cache_max
        self._clock = clock
        self._cache: OrderedDict[bytes, Caller] = OrderedDict()

    async def verify(self, authorization: str | None) -> Caller:
        """The caller of an ``authorization`` header value (``Bearer <jwt>``).

        Raises:
            Rejection: UNAUTHENTICATED, saying which check failed.
        """
        token = _bearer_token(authorization)
        digest = hashlib.sha256(token.encode()).digest()
        cached = self._cache.get(digest)
        if cached is not None:
            if cached.expires_at > self._clock():
                return cached
            del self._cache[digest]
        caller = await self._verify(token)
        if self._cache_max and caller.expires_at > self._clock():
            if len(self._cache) >= self._cache_max:
                self._cache.popitem(last=False)
            self._cache[digest] = caller
        return caller

    async def _verify(self, token: str) -> Caller:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise unauthenticated("the bearer token is not a well-formed JWT") from None
        algorithm = header.get("alg")
        if algorithm not in ALLOWED_ALGORITHMS:
            raise unauthenticated(
                "the token's signing algorithm is not allowed "
                f"(allowed: {', '.join(sorted(ALLOWED_ALGORITHMS))})"
            )
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise unauthenticated("the token names no signing key (no kid in its header)")
        key = await self._keys.key(kid)
        if key is None:
            raise unauthenticated("the token is signed with an unknown key")
        if key.algorithm != algorithm:
            raise unauthenticated(
                f"the token's algorithm does not match its key, which is a {key.algorithm} key"
            )
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[key.algorithm],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._clock_skew_seconds,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.PyJWTError as error:
            raise unauthenticated(self._failed_check(error)) from None
        return _caller(claims)

    def _failed_check(self, error: jwt.PyJWTError) -> str:
        # Subclasses first: InvalidSignatureError is a DecodeError, and the claim errors
        # are InvalidTokenErrors.
        if isinstance(error, jwt.ExpiredSignatureError):
            return "the token has expired"
        if isinstance(error, jwt.ImmatureSignatureError):
            return "the token is not valid yet (nbf or iat is in the future)"
        if isinstance(error, jwt.InvalidIssuerError):
            return f"the token was not issued by {self._issuer!r}"
        if isinstance(error, jwt.InvalidAudienceError):
            return f"the token is not meant for this service (audience {self._audience!r})"
        if isinstance(error, jwt.InvalidSignatureError):
            return "the token's signature does not verify"
        if isinstance(error, jwt.MissingRequiredClaimError):
            return f"the token lacks the {error.claim!r} claim"
        if isinstance(error, jwt.InvalidAlgorithmError):
            return "the token's signing algorithm is not allowed"
        return "the bearer token is not a well-formed JWT"


def _bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise unauthenticated("no bearer token: send the metadata 'authorization: Bearer <token>'")
    if len(authorization) > TOKEN_LENGTH_MAX + len(_BEARER):
        raise unauthenticated(f"the bearer token is longer than {TOKEN_LENGTH_MAX} bytes")
    if authorization[: len(_BEARER)].lower() != _BEARER:
        raise unauthenticated("the authorization metadata is not 'Bearer <token>'")
    token = authorization[len(_BEARER) :].strip()
    if not token:
        raise unauthenticated("the bearer token is empty")
    return token


def _caller(claims: dict[str, Any]) -> Caller:
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject or len(subject) > _CLAIM_TEXT_LENGTH_MAX:
        raise unauthenticated(
            f"the token's subject (sub) must be text of 1 to {_CLAIM_TEXT_LENGTH_MAX} characters"
        )
    token_id = claims.get("jti", "")
    if not isinstance(token_id, str) or len(token_id) > _CLAIM_TEXT_LENGTH_MAX:
        raise unauthenticated("the token's id (jti) is not short text")
    scope, scp = claims.get("scope"), claims.get("scp")
    if isinstance(scope, str):
        scopes = frozenset(scope.split())
    elif scope is None and scp is None:
        scopes = frozenset()
    else:
        scopes = _texts(scp if scope is None else scope, "scopes (scope, scp)")
    accounts_claim = claims.get(ACCOUNTS_CLAIM)
    accounts = None if accounts_claim is None else _texts(accounts_claim, ACCOUNTS_CLAIM)
    expires_at = claims["exp"]
    if not isinstance(expires_at, int | float):
        raise unauthenticated("the token's expiry (exp) is not a number")
    return Caller(
        subject=subject,
        token_id=token_id,
        scopes=scopes,
        accounts=accounts,
        expires_at=float(expires_at),
    )


def _texts(value: object, what: str) -> frozenset[str]:
    if (
        not isinstance(value, list)
        or len(value) > _CLAIM_ITEMS_MAX
        or not all(isinstance(item, str) and len(item) <= _CLAIM_TEXT_LENGTH_MAX for item in value)
    ):
        raise unauthenticated(f"the token's {what} claim is not a list of short texts")
    return frozenset(value)

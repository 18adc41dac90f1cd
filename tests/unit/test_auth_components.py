"""The rate limiter, the OIDC key cache and the authenticator's refusals."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from chronos.domain.errors import Reason, Rejection
from chronos.metrics import AUTH_REFUSALS
from chronos.security.authentication import Authenticator
from chronos.security.caller import UNAUTHENTICATED
from chronos.security.keys import OidcKeys
from chronos.security.rate_limit import RateLimiter
from chronos.security.tokens import jwks_document, public_jwk


def test_the_rate_limit_lets_a_burst_through_then_the_rate() -> None:
    now = [0.0]
    limiter = RateLimiter(2.0, 3, clock=lambda: now[0])
    assert [limiter.admit("a") for _ in range(4)] == [True, True, True, False]
    assert limiter.admit("b"), "each principal has its own bucket"
    now[0] += 0.5  # one call's worth at 2 per second
    assert [limiter.admit("a") for _ in range(2)] == [True, False]


def test_the_rate_limit_keeps_a_bounded_number_of_buckets() -> None:
    limiter = RateLimiter(1.0, 1, buckets_max=2, clock=lambda: 0.0)
    assert limiter.admit("a") and limiter.admit("b") and limiter.admit("c")
    assert limiter.admit("a"), "a's bucket was dropped, so it starts full again"
    assert not limiter.admit("c")


class FakeProvider:
    def __init__(self) -> None:
        self.key = Ed25519PrivateKey.generate()
        self.fetches: list[str] = []

    def fetch(self, url: str) -> object:
        self.fetches.append(url)
        if url.endswith("/.well-known/openid-configuration"):
            return {"issuer": "https://idp.test", "jwks_uri": "https://idp.test/keys"}
        return jwks_document([self.key.public_key()])


def test_oidc_keys_are_fetched_once_and_refreshed_after_the_interval() -> None:
    provider, now = FakeProvider(), [1000.0]
    keys = OidcKeys("https://idp.test/", 300, fetch=provider.fetch, clock=lambda: now[0])
    kid = public_jwk(provider.key.public_key())["kid"]
    assert asyncio.run(keys.key(kid)) is not None
    assert provider.fetches == [
        "https://idp.test/.well-known/openid-configuration",
        "https://idp.test/keys",
    ]
    asyncio.run(keys.key(kid))
    assert len(provider.fetches) == 2, "a known key is served from the cache"
    now[0] += 301
    asyncio.run(keys.key(kid))
    assert len(provider.fetches) == 4


def test_unknown_key_ids_refetch_at_most_once_per_gap() -> None:
    provider, now = FakeProvider(), [1000.0]
    keys = OidcKeys("https://idp.test", 300, fetch=provider.fetch, clock=lambda: now[0])
    for index in range(50):
        assert asyncio.run(keys.key(f"made-up-{index}")) is None
    assert len(provider.fetches) == 2
    now[0] += 61
    asyncio.run(keys.key("made-up"))
    assert len(provider.fetches) == 4


def test_a_failed_fetch_keeps_the_keys_and_a_plaintext_jwks_uri_is_refused() -> None:
    def fetch(url: str) -> object:
        return {"jwks_uri": "http://idp.test/keys"}

    keys = OidcKeys("https://idp.test", 300, fetch=fetch, clock=lambda: 0.0)
    assert asyncio.run(keys.key("any")) is None


class RefusingVerifier:
    async def verify(self, authorization: str | None) -> Any:
        raise Rejection(Reason.UNAUTHENTICATED, "Not authenticated: no bearer token.")


def test_refusals_are_counted_by_server_and_reason() -> None:
    authenticator = Authenticator("unit", RefusingVerifier())  # type: ignore[arg-type]
    before = AUTH_REFUSALS.labels("unit", "UNAUTHENTICATED")._value.get()
    with pytest.raises(Rejection):
        asyncio.run(authenticator.authenticate([("authorization", "Bearer x")]))
    assert AUTH_REFUSALS.labels("unit", "UNAUTHENTICATED")._value.get() == before + 1


def test_without_a_verifier_calls_run_unauthenticated_and_may_be_rate_limited() -> None:
    authenticator = Authenticator("unit", None, RateLimiter(1.0, 1, clock=lambda: 0.0))
    assert asyncio.run(authenticator.authenticate(())) is UNAUTHENTICATED
    with pytest.raises(Rejection) as raised:
        asyncio.run(authenticator.authenticate(()))
    assert raised.value.reason is Reason.RATE_LIMITED


def test_two_authorization_headers_are_refused() -> None:
    authenticator = Authenticator("unit", RefusingVerifier())  # type: ignore[arg-type]
    with pytest.raises(Rejection, match="more than one"):
        asyncio.run(
            authenticator.authenticate([("authorization", "Bearer a"), ("authorization", "b")])
        )

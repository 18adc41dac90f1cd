"""The bearer-token verifier against every hostile token: each is UNAUTHENTICATED with
a message naming the failed check and never the token; a valid one gives its Caller."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from chronos.domain.errors import Reason, Rejection
from chronos.security.caller import Caller
from chronos.security.keys import VerificationKey, parse_jwks
from chronos.security.tokens import issue_token, jwks_document, public_jwk
from chronos.security.verify import TOKEN_LENGTH_MAX, TokenVerifier

ISSUER = "chronos-test"
AUDIENCE = "chronos-ledger"
KEY = Ed25519PrivateKey.generate()
KID = public_jwk(KEY.public_key())["kid"]


class CountingKeys:
    """A key source over fixed keys that counts lookups (a cache hit makes none)."""

    def __init__(self, keys: dict[str, VerificationKey]) -> None:
        self.keys = keys
        self.lookups = 0

    async def key(self, kid: str) -> VerificationKey | None:
        self.lookups += 1
        return self.keys.get(kid)


def make_verifier(
    keys: dict[str, VerificationKey] | None = None, **options: Any
) -> tuple[TokenVerifier, CountingKeys]:
    source = CountingKeys(
        keys if keys is not None else parse_jwks(jwks_document([KEY.public_key()]))
    )
    settings: dict[str, Any] = {
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "clock_skew_seconds": 5,
        "cache_max": 100,
    }
    settings.update(options)
    return TokenVerifier(source, **settings), source


def token(**options: Any) -> str:
    arguments: dict[str, Any] = {
        "subject": "alice",
        "scopes": ["ledger:read", "funds:write"],
        "issuer": ISSUER,
        "audience": AUDIENCE,
    }
    arguments.update(options)
    return issue_token(KEY, **arguments)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "mallory",
        "exp": now + 600,
        "scope": "admin",
    } | extra


def refusal(authorization: str | None, verifier: TokenVerifier | None = None) -> str:
    verifier = verifier or make_verifier()[0]
    with pytest.raises(Rejection) as raised:
        asyncio.run(verifier.verify(authorization))
    assert raised.value.reason is Reason.UNAUTHENTICATED
    message = raised.value.message
    if authorization and len(authorization) > 20:
        assert authorization.split()[-1] not in message, "the token is echoed"
    return message


def test_a_valid_token_gives_its_caller() -> None:
    verifier, _ = make_verifier()
    caller = asyncio.run(verifier.verify("Bearer " + token(accounts=["acc-1", "acc-2"])))
    assert caller.subject == "alice"
    assert caller.scopes == frozenset({"ledger:read", "funds:write"})
    assert caller.accounts == frozenset({"acc-1", "acc-2"})
    assert caller.token_id and caller.expires_at > time.time()


def test_scopes_may_come_as_an_scp_list_and_no_account_claim_is_unrestricted() -> None:
    signed = jwt.encode(claims(scope=None, scp=["accounts:write"]), KEY, "EdDSA", {"kid": KID})
    caller = asyncio.run(make_verifier()[0].verify(f"bearer {signed}"))
    assert caller == Caller(
        subject="mallory", scopes=frozenset({"accounts:write"}), expires_at=caller.expires_at
    )
    assert caller.accounts is None


def test_no_token_is_refused() -> None:
    assert "no bearer token" in refusal(None)
    assert "no bearer token" in refusal("")
    assert "not 'Bearer <token>'" in refusal("Basic dXNlcjpwYXNz")


def test_garbage_is_refused() -> None:
    assert "not a well-formed JWT" in refusal("Bearer not-a-jwt-at-all-but-long-enough")
    assert "not a well-formed JWT" in refusal("Bearer a.b.c")


def test_an_expired_token_is_refused() -> None:
    assert "expired" in refusal("Bearer " + token(now=time.time() - 7200, ttl_seconds=60))


def test_a_token_not_valid_yet_is_refused() -> None:
    assert "not valid yet" in refusal("Bearer " + token(now=time.time() + 3600))


def test_a_token_within_the_clock_skew_is_accepted() -> None:
    verifier, _ = make_verifier(clock_skew_seconds=30)
    assert asyncio.run(verifier.verify("Bearer " + token(now=time.time() + 10))).subject


def test_a_wrong_issuer_is_refused() -> None:
    message = refusal("Bearer " + token(issuer="someone-else"))
    assert f"not issued by {ISSUER!r}" in message and "someone-else" not in message


def test_a_wrong_audience_is_refused() -> None:
    assert "not meant for this service" in refusal("Bearer " + token(audience="other-api"))


def test_alg_none_is_refused() -> None:
    header = b64(json.dumps({"alg": "none", "kid": KID, "typ": "JWT"}).encode())
    payload = b64(json.dumps(claims()).encode())
    assert "algorithm is not allowed" in refusal(f"Bearer {header}.{payload}.")


def test_hs256_signed_with_the_public_key_is_refused() -> None:
    public_pem = KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = b64(json.dumps({"alg": "HS256", "kid": KID, "typ": "JWT"}).encode())
    payload = b64(json.dumps(claims()).encode())
    signature = hmac.new(public_pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    assert "algorithm is not allowed" in refusal(f"Bearer {header}.{payload}.{b64(signature)}")


def test_an_unknown_key_is_refused() -> None:
    stranger = Ed25519PrivateKey.generate()
    signed = issue_token(
        stranger, subject="eve", scopes=["admin"], issuer=ISSUER, audience=AUDIENCE
    )
    assert "unknown key" in refusal(f"Bearer {signed}")


def test_a_token_without_a_kid_is_refused() -> None:
    signed = jwt.encode(claims(), KEY, "EdDSA")
    assert "no kid" in refusal(f"Bearer {signed}")


def test_a_payload_tampered_after_signing_is_refused() -> None:
    header, _payload, signature = token().split(".")
    forged = b64(json.dumps(claims(sub="alice")).encode())
    assert "signature does not verify" in refusal(f"Bearer {header}.{forged}.{signature}")


def test_a_64_kb_token_is_refused_before_it_is_parsed() -> None:
    huge = "Bearer " + "A" * (64 * 1024)
    assert f"longer than {TOKEN_LENGTH_MAX}" in refusal(huge)


def test_a_key_of_another_type_than_the_algorithm_is_refused() -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ec_jwk = jwt.algorithms.ECAlgorithm.to_jwk(ec_key.public_key(), as_dict=True)
    verifier, _ = make_verifier(parse_jwks({"keys": [{**ec_jwk, "kid": KID}]}))
    # An EdDSA token naming a key id that belongs to a P-256 key.
    assert "does not match its key" in refusal("Bearer " + token(), verifier)


def test_es256_and_rs256_tokens_verify_with_their_keys() -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwks = {
        "keys": [
            {**jwt.algorithms.ECAlgorithm.to_jwk(ec_key.public_key(), as_dict=True), "kid": "e"},
            {**jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key(), as_dict=True), "kid": "r"},
        ]
    }
    verifier, _ = make_verifier(parse_jwks(jwks))
    for key, algorithm, kid in ((ec_key, "ES256", "e"), (rsa_key, "RS256", "r")):
        signed = jwt.encode(claims(sub=algorithm), key, algorithm, {"kid": kid})
        assert asyncio.run(verifier.verify(f"Bearer {signed}")).subject == algorithm


def test_a_token_without_a_subject_is_refused() -> None:
    unsigned = claims()
    del unsigned["sub"]
    signed = jwt.encode(unsigned, KEY, "EdDSA", {"kid": KID})
    assert "'sub'" in refusal(f"Bearer {signed}")


def test_symmetric_and_unknown_keys_in_a_jwks_are_skipped() -> None:
    keys = parse_jwks(
        {
            "keys": [
                {"kty": "oct", "k": b64(b"secret"), "kid": "h"},
                {"kty": "OKP", "crv": "Ed448", "x": "AA", "kid": "x"},
                {**public_jwk(KEY.public_key()), "use": "enc"},
            ]
        }
    )
    assert keys == {}


def test_a_verified_token_is_cached_until_it_expires() -> None:
    now = [time.time()]
    verifier, keys = make_verifier(clock=lambda: now[0])
    signed = "Bearer " + token(ttl_seconds=120)
    first = asyncio.run(verifier.verify(signed))
    assert asyncio.run(verifier.verify(signed)) is first
    assert keys.lookups == 1, "the second call was not a cache hit"
    now[0] += 121  # past its expiry: dropped from the cache and verified again
    asyncio.run(verifier.verify(signed))
    assert keys.lookups == 2


def test_the_cache_is_bounded() -> None:
    verifier, keys = make_verifier(cache_max=2)
    tokens = ["Bearer " + token(subject=f"user-{index}") for index in range(3)]
    for signed in tokens:
        asyncio.run(verifier.verify(signed))
    asyncio.run(verifier.verify(tokens[0]))  # the oldest was dropped
    assert keys.lookups == 4
    asyncio.run(verifier.verify(tokens[2]))
    assert keys.lookups == 4


def test_a_refused_token_is_not_cached() -> None:
    verifier, keys = make_verifier()
    signed = "Bearer " + token(audience="other")
    for _ in range(2):
        refusal(signed, verifier)
    assert keys.lookups == 2

"""Signed checkpoints of the hash chain: what they say, how they are signed and checked.

A checkpoint states "the chain hash at position P is H", signed with an Ed25519 key
that the database never sees. Kept outside PostgreSQL (a retained Kafka topic, and the
read side), checkpoints catch what the stored hashes cannot: a chain rewritten
consistently by someone who can edit the events.

Wire form (the Kafka message value, UTF-8 JSON)::

    {"position": 1234, "chain_hash": "<64 hex>", "recorded_at": "<ISO 8601>",
     "key_id": "<the key's JWK thumbprint>", "signature": "<base64url>"}

The signature is Ed25519 over the signed bytes: the four other members as compact JSON
with sorted keys (``signed_bytes``). The public keys come from a JWKS, as the tokens'.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from chronos.audit.chain import HASH_SIZE
from chronos.security.tokens import public_jwk

# A checkpoint message is small; anything larger is not one.
MESSAGE_SIZE_MAX = 4096


@dataclass(frozen=True, slots=True, kw_only=True)
class Checkpoint:
    """The chain hash at a position, as the poller's leader saw it published.

    Attributes:
        position: The position of the event the hash is of.
        chain_hash: That event's chain hash (32 bytes).
        recorded_at: That event's recorded time (ISO 8601).
        key_id: The signing key's id (its JWK thumbprint).
    """

    position: int
    chain_hash: bytes
    recorded_at: str
    key_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckedCheckpoint:
    """A checkpoint read back, and whether its signature makes it trustworthy.

    Attributes:
        checkpoint: What it says (None when it could not even be parsed).
        trusted: The signature verifies with a known key.
        problem: Why it is not trusted ("" when it is).
    """

    checkpoint: Checkpoint | None
    trusted: bool
    problem: str


def key_id(public_key: Ed25519PublicKey) -> str:
    """The id of a checkpoint signing key: its JWK thumbprint (RFC 7638)."""
    return public_jwk(public_key)["kid"]


def signed_bytes(checkpoint: Checkpoint) -> bytes:
    """The bytes the signature covers."""
    members = {
        "chain_hash": checkpoint.chain_hash.hex(),
        "key_id": checkpoint.key_id,
        "position": checkpoint.position,
        "recorded_at": checkpoint.recorded_at,
    }
    return json.dumps(members, separators=(",", ":"), sort_keys=True).encode()


def encode_signed(checkpoint: Checkpoint, key: Ed25519PrivateKey) -> bytes:
    """The checkpoint's wire form, signed with ``key``."""
    assert len(checkpoint.chain_hash) == HASH_SIZE, "a chain hash is 32 bytes"
    assert checkpoint.key_id == key_id(key.public_key()), "the key_id names the signing key"
    signature = base64.urlsafe_b64encode(key.sign(signed_bytes(checkpoint))).decode("ascii")
    message = json.loads(signed_bytes(checkpoint))
    message["signature"] = signature
    return json.dumps(message, separators=(",", ":"), sort_keys=True).encode()


def decode_and_check(
    value: bytes, public_keys: Mapping[str, Ed25519PublicKey]
) -> CheckedCheckpoint:
    """Parses a checkpoint message and checks its signature against ``public_keys``.

    Args:
        value: The message's bytes.
        public_keys: The trusted keys, by key id.

    Returns:
        The checkpoint, trusted only when its signature verifies with the key it names.
    """
    try:
        checkpoint, signature = _parse(value)
    except (ValueError, TypeError, KeyError, binascii.Error) as error:
        return CheckedCheckpoint(checkpoint=None, trusted=False, problem=f"malformed: {error}")
    public_key = public_keys.get(checkpoint.key_id)
    if public_key is None:
        return CheckedCheckpoint(
            checkpoint=checkpoint,
            trusted=False,
            problem=f"signed with unknown key {checkpoint.key_id!r}",
        )
    try:
        public_key.verify(signature, signed_bytes(checkpoint))
    except InvalidSignature:
        return CheckedCheckpoint(checkpoint=checkpoint, trusted=False, problem="bad signature")
    return CheckedCheckpoint(checkpoint=checkpoint, trusted=True, problem="")


def public_keys_from_jwks(document: Mapping[str, Any]) -> dict[str, Ed25519PublicKey]:
    """The Ed25519 keys of a JWKS document, by key id (their thumbprints, recomputed:
    a ``kid`` in the file is not taken on trust)."""
    keys = {}
    for jwk in document.get("keys", []):
        if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
            continue
        raw = base64.urlsafe_b64decode(jwk["x"] + "=" * (-len(jwk["x"]) % 4))
        public_key = Ed25519PublicKey.from_public_bytes(raw)
        keys[key_id(public_key)] = public_key
    return keys


def _parse(value: bytes) -> tuple[Checkpoint, bytes]:
    if len(value) > MESSAGE_SIZE_MAX:
        raise ValueError(f"larger than {MESSAGE_SIZE_MAX} bytes")
    message = json.loads(value)
    if not isinstance(message, dict):
        raise ValueError("not a JSON object")
    position = message["position"]
    if not isinstance(position, int) or isinstance(position, bool) or position < 1:
        raise ValueError("position is not a positive integer")
    chain_hash = bytes.fromhex(str(message["chain_hash"]))
    if len(chain_hash) != HASH_SIZE:
        raise ValueError("chain_hash is not 32 bytes")
    checkpoint = Checkpoint(
        position=position,
        chain_hash=chain_hash,
        recorded_at=str(message["recorded_at"]),
        key_id=str(message["key_id"]),
    )
    return checkpoint, base64.urlsafe_b64decode(str(message["signature"]))

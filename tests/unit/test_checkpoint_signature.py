"""Signed checkpoints: what makes one trusted, and what does not (pure, no Kafka)."""

from __future__ import annotations

import json

from chronos.audit.checkpoint import (
    Checkpoint,
    decode_and_check,
    encode_signed,
    key_id,
    public_keys_from_jwks,
)
from chronos.audit.verify import trusted_checkpoints
from chronos.security.tokens import jwks_document, new_signing_key

KEY = new_signing_key()
TRUSTED = public_keys_from_jwks(jwks_document([KEY.public_key()]))


def _checkpoint(position: int = 42, hash_byte: int = 7) -> Checkpoint:
    return Checkpoint(
        position=position,
        chain_hash=bytes([hash_byte]) * 32,
        recorded_at="2026-12-05T13:00:00+00:00",
        key_id=key_id(KEY.public_key()),
    )


def test_a_well_signed_checkpoint_is_trusted_and_read_back_whole() -> None:
    checked = decode_and_check(encode_signed(_checkpoint(), KEY), TRUSTED)
    assert checked.trusted and checked.problem == ""
    assert checked.checkpoint == _checkpoint()


def test_any_changed_member_breaks_the_signature() -> None:
    message = json.loads(encode_signed(_checkpoint(), KEY))
    for member, value in (
        ("position", 43),
        ("chain_hash", "08" * 32),
        ("recorded_at", "2026-12-05T13:00:01+00:00"),
    ):
        forged = json.dumps({**message, member: value}).encode()
        checked = decode_and_check(forged, TRUSTED)
        assert (checked.trusted, checked.problem) == (False, "bad signature"), member


def test_an_unknown_key_or_a_malformed_message_is_not_trusted() -> None:
    other = new_signing_key()
    foreign = Checkpoint(
        position=1,
        chain_hash=bytes(32),
        recorded_at="2026-12-05T13:00:00+00:00",
        key_id=key_id(other.public_key()),
    )
    checked = decode_and_check(encode_signed(foreign, other), TRUSTED)
    assert not checked.trusted and checked.problem.startswith("signed with unknown key")
    for value in (b"", b"[]", b'{"position": 0}', b"x" * 5000, b'{"position": true}'):
        checked = decode_and_check(value, TRUSTED)
        assert checked.checkpoint is None and checked.problem.startswith("malformed")


def test_a_jwks_kid_is_not_taken_on_trust() -> None:
    document = jwks_document([KEY.public_key()])
    document["keys"][0]["kid"] = "someone-else"
    assert list(public_keys_from_jwks(document)) == [key_id(KEY.public_key())]


def test_two_signed_checkpoints_that_disagree_are_neither_trusted() -> None:
    checked = [
        decode_and_check(encode_signed(_checkpoint(42, 1), KEY), TRUSTED),
        decode_and_check(encode_signed(_checkpoint(42, 2), KEY), TRUSTED),
        decode_and_check(encode_signed(_checkpoint(50, 3), KEY), TRUSTED),
    ]
    trusted, problems = trusted_checkpoints(checked)
    assert trusted == {50: bytes([3]) * 32}
    assert problems == [
        "checkpoint at position 42: two signed checkpoints disagree, neither is trusted"
    ]

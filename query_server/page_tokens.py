"""Page tokens: opaque, checksummed, bound to the method and query they continue."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
from collections.abc import Callable
from typing import Any

from chronos.domain import limits
from chronos.domain.validation import canonical_account_id
from chronos.errors import ChronosError

PAGE_TOKEN_LENGTH_MAX = 1024


class InvalidPageToken(ChronosError):
    """A page token that this server did not issue for this query."""


_TOKEN_VERSION = 1
_CHECKSUM_BYTES = 8


def _binding(method: str, params: dict[str, Any]) -> str:
    canonical = json.dumps([method, params], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def encode_page_token(method: str, params: dict[str, Any], search_after: list[Any]) -> str:
    """An opaque token for the page after ``search_after``, bound to ``params``.

    The token is URL-safe base64 of a checksum and a small JSON document holding the
    method, a hash of the query parameters and the sort values to continue after. The
    checksum catches corrupted or hand-edited tokens; it is not a secret (a token only
    ever leads to data the same request could read anyway).
    """
    body = json.dumps(
        {"v": _TOKEN_VERSION, "m": method, "b": _binding(method, params), "a": search_after},
        separators=(",", ":"),
    ).encode()
    checksum = hashlib.sha256(body).digest()[:_CHECKSUM_BYTES]
    return base64.urlsafe_b64encode(checksum + body).decode().rstrip("=")


def decode_page_token(token: str, method: str, params: dict[str, Any]) -> list[Any]:
    """The sort values a token continues after.

    Raises:
        InvalidPageToken: malformed, tampered with, or issued for another query.
    """
    if len(token) > PAGE_TOKEN_LENGTH_MAX:
        raise InvalidPageToken("is too long")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError) as error:
        raise InvalidPageToken("is not a page token") from error
    checksum, body = raw[:_CHECKSUM_BYTES], raw[_CHECKSUM_BYTES:]
    if (
        len(checksum) != _CHECKSUM_BYTES
        or hashlib.sha256(body).digest()[:_CHECKSUM_BYTES] != checksum
    ):
        raise InvalidPageToken("is not a page token (checksum mismatch)")
    try:
        data = json.loads(body)
    except ValueError as error:
        raise InvalidPageToken("is not a page token") from error
    if not isinstance(data, dict) or data.get("v") != _TOKEN_VERSION or data.get("m") != method:
        raise InvalidPageToken("was issued for another method")
    if data.get("b") != _binding(method, params):
        raise InvalidPageToken("was issued for different query parameters")
    values = data.get("a")
    checks = _SORT_VALUE_CHECKS[method]
    # The checksum is no secret, so a token can be forged: its values must be ones
    # Elasticsearch takes, or the search fails (a 400, or an integer JSON cannot carry)
    # and the caller would be told the read model is unavailable.
    if (
        not isinstance(values, list)
        or len(values) != len(checks)
        or not all(check(value) for check, value in zip(checks, values, strict=True))
    ):
        raise InvalidPageToken("is not a page token")
    return values


def _is_position(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= limits.INT64_MAX


def _is_score(value: Any) -> bool:
    # _score is a 32-bit float in Elasticsearch.
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and abs(value) <= _FLOAT32_MAX
    )


def _is_account_id(value: Any) -> bool:
    return isinstance(value, str) and canonical_account_id(value) == value


_FLOAT32_MAX = 3.4028234663852886e38
# The sort values each method's pages continue after (its search's sort clause).
_SORT_VALUE_CHECKS: dict[str, tuple[Callable[[Any], bool], ...]] = {
    "ListTransactions": (_is_position,),
    "SearchAccounts": (_is_score, _is_account_id),
    # placed_at (epoch nanoseconds), then the pending id.
    "ListPendingTransfers": (_is_position, _is_account_id),
    "ListEvents": (_is_position,),
}

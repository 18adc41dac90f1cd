"""docs/api.md's table of reasons says what the servers send: every reason, its code."""

from __future__ import annotations

import re
from pathlib import Path

from chronos.domain.errors import Reason
from chronos.rpc.status import STATUS_BY_REASON

API_DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"
_ROW = re.compile(r"^\| `(?P<reason>[A-Z_]+)` \| `(?P<code>[A-Z_]+)` \|", re.MULTILINE)


def documented_codes(text: str) -> dict[str, str]:
    """Reason -> gRPC code name, from the rows of the errors table."""
    return {match["reason"]: match["code"] for match in _ROW.finditer(text)}


def test_every_reason_is_documented_with_the_code_the_servers_send() -> None:
    sent = {reason.value: code.name for reason, code in STATUS_BY_REASON.items()}
    assert documented_codes(API_DOC.read_text()) == sent


def test_the_table_reader_sees_a_wrong_code() -> None:
    text = "| `ACCOUNT_EXISTS` | `NOT_FOUND` | when |\n| `X` | `ABORTED` | when |\n"
    assert documented_codes(text) == {"ACCOUNT_EXISTS": "NOT_FOUND", "X": "ABORTED"}
    assert len(Reason) == len(STATUS_BY_REASON)

"""Hostile input never gets INTERNAL or UNKNOWN, always a rich error, and writes nothing.

Why this exists: the README promises that nothing a client can send produces INTERNAL or
UNKNOWN, that every error carries a ``google.rpc.ErrorInfo`` (domain ``chronos.ledger``)
and a sentence a person understands, and that a refused command stores nothing. Two
breaches were found by hand: a NUL in ``owner_name`` reached PostgreSQL and answered
INTERNAL (fixed in ddf451f), and query times outside 1970-2262 made Elasticsearch answer
400, which the query server passed on as UNAVAILABLE (fixed in 2aad69d). Rather than one
case per bug found, this module sends a seeded, bounded storm of hostile requests to every
RPC of both services, running as real processes over the real PostgreSQL, Kafka and
Elasticsearch, judges every answer (and every item of every batch) by the rule, and then
checks in PostgreSQL that only the accepted commands left rows.

The servers stay healthy throughout, so UNAVAILABLE is right only as ``PROJECTION_BEHIND``
(a ``min_position`` the projection has not reached, bounded server-side by a short
``CHRONOS_QUERY_MIN_POSITION_WAIT_SECONDS_MAX``). ``DATABASE_UNAVAILABLE`` or
``READ_MODEL_UNAVAILABLE`` would mean a server blamed its database for what the client
sent: the class of the second bug. Each reason must also come with the status code the
README's error table gives it.

Every offender is collected and reported at once (request -> code, reason, message),
followed by the servers' warning and error log lines, so one run shows them all.
"""

from __future__ import annotations

import base64
import json
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import psycopg
import pytest
from google.protobuf import timestamp_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from chronos.domain import limits
from chronos.domain.ledger import system_account_id
from chronos.v1 import commands_pb2 as pb
from chronos.v1 import commands_pb2_grpc, ledger_pb2, queries_pb2, queries_pb2_grpc
from chronos_dev.client import channel as open_channel
from query_server.event_requests import _events_binding, events_query
from query_server.page_tokens import encode_page_token
from query_server.requests import SEARCH_QUERY_LENGTH_MAX
from tests.e2e.helpers import PipelineEnv, pipeline_env, service_process

T = TypeVar("T")

SEED = 20261130
# Calls in the storm; the baseline, batches and the concurrent burst come on top: about
# 650 calls and 1,080 batch items judged in all.
COMMAND_CALLS = 300
QUERY_CALLS = 300
# Generous for one call; no call of the storm waits on anything but the server's own
# bound on min_position waits, which is short so that refusals stay fast.
CALL_TIMEOUT_SECONDS = 10.0
MIN_POSITION_WAIT_SECONDS_MAX = 0.1
CATCH_UP_SECONDS_MAX = 60.0
# Far over every limit, yet a 1,000-command batch of such values stays under gRPC's 4 MB.
TEXT_LENGTH_HUGE = 20_000
MESSAGE_SHOWN_LENGTH_MAX = 300
LOG_LINES_SHOWN_MAX = 40

ERROR_DOMAIN = "chronos.ledger"
FORBIDDEN_CODES = frozenset({"INTERNAL", "UNKNOWN"})
# The README's error table, minus the reasons that blame a server (SERVER_REASONS): the
# servers are healthy during the storm, so those would blame them for a client's input.
# NOT_APPLIED follows a server failure earlier in a batch.
SERVER_REASONS = frozenset(
    {"DATABASE_UNAVAILABLE", "COMMIT_OUTCOME_UNKNOWN", "NOT_APPLIED", "READ_MODEL_UNAVAILABLE"}
)
EXPECTED_CODE_BY_REASON = {
    "VALIDATION_FAILED": "INVALID_ARGUMENT",
    "ACCOUNT_NOT_FOUND": "NOT_FOUND",
    "ACCOUNT_EXISTS": "ALREADY_EXISTS",
    "IDEMPOTENCY_KEY_REUSED": "ALREADY_EXISTS",
    "INSUFFICIENT_FUNDS": "FAILED_PRECONDITION",
    "ACCOUNT_FROZEN": "FAILED_PRECONDITION",
    "ACCOUNT_CLOSED": "FAILED_PRECONDITION",
    "CURRENCY_MISMATCH": "FAILED_PRECONDITION",
    "ACCOUNT_NOT_EMPTY": "FAILED_PRECONDITION",
    "ACCOUNT_NOT_FROZEN": "FAILED_PRECONDITION",
    "BALANCE_OVERFLOW": "FAILED_PRECONDITION",
    "CONCURRENCY_CONFLICT": "ABORTED",
    "PROJECTION_BEHIND": "UNAVAILABLE",
    "ENTRY_NOT_FOUND": "NOT_FOUND",
}

COMMAND_RPCS = (
    "OpenAccount",
    "Deposit",
    "Withdraw",
    "TransferFunds",
    "PostJournalEntry",
    "FreezeAccount",
    "UnfreezeAccount",
    "CloseAccount",
)
QUERY_RPCS = (
    "GetAccount",
    "ListTransactions",
    "GetBalanceAt",
    "SearchAccounts",
    "ListEvents",
    "GetEntry",
)
# The BatchCommand oneof field of each command RPC.
BATCH_FIELD_BY_RPC = {
    "OpenAccount": "open_account",
    "Deposit": "deposit",
    "Withdraw": "withdraw",
    "TransferFunds": "transfer_funds",
    "PostJournalEntry": "post_journal_entry",
    "FreezeAccount": "freeze_account",
    "UnfreezeAccount": "unfreeze_account",
    "CloseAccount": "close_account",
}
# Batch sizes, in the order they are sent during the storm: none, one, mixed ones, the
# limit and one over it.
BATCH_SIZES = (0, 1, 7, limits.BATCH_COMMANDS_MAX + 1, 25, 40, limits.BATCH_COMMANDS_MAX, 3)
CONCURRENT_COPIES = 8

# --- hostile pools -------------------------------------------------------------------


def hostile_texts(length_max: int) -> list[str]:
    """Text around a field's limit and every kind of character a person would not type."""
    return [
        "",
        " ",
        "\u3000",
        "a" * length_max,
        "a" * (length_max + 1),
        "é" * length_max,
        "😀" * length_max,
        "😀" * (length_max + 1),
        "e\u0301" * (length_max // 2),
        "\u0301",
        "\u0301\u0308\u20dd",
        "👩\u200d👩\u200d👧\u200d👦",
        "👍🏽🏳️\u200d🌈",
        "مرحبا بالعالم",
        "שלום עולם",
        "\u202eevil\u202c",
        "\u200b\u200c\u200d",
        "\ufeff",
        "\uffff\U0010ffff",
        "\x00",
        "Ada\x00Lovelace",
        "\x01",
        "\x1b[31mred",
        "\x7f",
        "\x85",
        "\x9f",
        "line\nbreak\r\n\ttab",
        "\u2028\u2029",
        "'; DROP TABLE events; --",
        "%s%n%(x)s{0}",
        "\\u0000",
        '{"$gt": ""}',
        '*?~^:()[]{}\\/ AND OR NOT "',
        "x" * TEXT_LENGTH_HUGE,
    ]


OWNER_NAMES = ("Ada Lovelace", "Grace Hopper", "Zoë Ødegård", "محمد", "李小龍", "O'Brien")
DESCRIPTIONS = ("", "rent", "invoice 42", "Überweisung")
HOSTILE_REQUEST_IDS = (
    "",
    " ",
    "r" * limits.REQUEST_ID_LENGTH_MAX,
    "r" * (limits.REQUEST_ID_LENGTH_MAX + 1),
    "😀" * limits.REQUEST_ID_LENGTH_MAX,
    "😀" * (limits.REQUEST_ID_LENGTH_MAX + 1),
    "request\x00",
    "request\x1f",
    "request\u2028",
    "\t",
    "\u0301",
    "👩\u200d👩\u200d👧\u200d👦",
    "مرحبا",
    "\u202eevil",
    "'; DROP TABLE idempotency; --",
    "x" * TEXT_LENGTH_HUGE,
)
MALFORMED_ACCOUNT_IDS = (
    "",
    " ",
    "nope",
    "00000000-0000-0000-0000-000000000000",
    "ffffffff-ffff-ffff-ffff-ffffffffffff",
    "11111111-1111-4111-8111-11111111111",
    "11111111-1111-4111-8111-1111111111111",
    "g1111111-1111-4111-8111-111111111111",
    "11111111-1111-4111-8111-111111111111\x00",
    " 11111111-1111-4111-8111-111111111111 ",
    # Python's int() reads Arabic-Indic digits and underscores, so uuid.UUID does too.
    "١١١١١١١١-١١١١-٤١١١-٨١١١-١١١١١١١١١١١١",
    "1111_111-1111-4111-8111-111111111111",
    "{11111111-1111-4111-8111-111111111111",
    "urn:uuid:urn:uuid:11111111-1111-4111-8111-111111111111",
    "😀" * 36,
    "x" * 65,
    "x" * TEXT_LENGTH_HUGE,
    "\u0301",
    "'; DROP TABLE accounts; --",
)
SYSTEM_ACCOUNT_IDS = (
    system_account_id("EUR"),
    system_account_id("EUR").upper(),
    "{" + system_account_id("EUR") + "}",
    system_account_id("USD"),
    system_account_id("XXX"),
)
CURRENCIES_HOSTILE = (
    "JPY",
    "XXX",
    "eur",
    "Eur",
    "EU",
    "EURO",
    "ZZZ",
    "",
    "€",
    "ＥＵＲ",
    "E\x00R",
    "EU\u0301",
    "😀😀😀",
    "E R",
)
AMOUNTS_MINOR_HOSTILE = (
    0,
    1,
    -1,
    2,
    2**31,
    10**15,
    2**62,
    limits.INT64_MAX,
    limits.INT64_MIN,
    -limits.INT64_MAX,
)
OVERDRAFT_LIMITS_MINOR = (0, 0, 0, 1, 500, 10**6, limits.INT64_MAX, -1, limits.INT64_MIN)
# Enum values out of range: proto3 enums are open, so the wire carries any int32 (the
# generated stubs' types say otherwise, hence Any).
SIDE_OUT_OF_RANGE: Any = 99
SIDES_HOSTILE: tuple[Any, ...] = (0, 3, -1, SIDE_OUT_OF_RANGE, 2**31 - 1, -(2**31))
JOURNAL_LINE_COUNTS = (
    0,
    1,
    2,
    2,
    2,
    3,
    3,
    4,
    limits.JOURNAL_LINES_MAX,
    limits.JOURNAL_LINES_MAX + 1,
)
CORRELATION_IDS = ("", "c" * 127, "c" * 2000, "\"'\\{}[]", " padded ", "%00", "null")
PAGE_SIZES = (0, 0, 1, 2, 50, 100, 101, 500, 501, -1, 2**31 - 1, -(2**31))
STATUSES: tuple[Any, ...] = (0, 1, 2, 3, 4, -1, 2**31 - 1, -(2**31))
SEARCH_CURRENCIES = ("", "", "EUR", "USD", "eur", "EU", "EURO", "ZZZ", "€€€", "ＥＵＲ", "E\x00R")
JUNK_PAGE_TOKENS = (
    "=",
    "====",
    "!!!!",
    "AAAA",
    "A" * 1024,
    "A" * 1025,
    "😀",
    "\x00",
    base64.urlsafe_b64encode(b'{"v":1}').decode(),
    "-_-_",
    " ",
)
# search_after values a client can put into a well-formed token: the checksum is no
# secret (query_server.page_tokens says so), so a token is client input like any other.
FORGED_POSITIONS = (-1, 0, limits.INT64_MAX, 2**63, 2**64, 2**70, limits.INT64_MIN - 1)
FORGED_ACCOUNT_SORTS: tuple[list[Any], ...] = (
    ["a", "b"],
    [1e308, "x"],
    [-1.0, ""],
    [2**70, "x"],
    [float("inf"), "x"],
    [float("nan"), "x"],
    ["score", 5],
    [0.5, 2**70],
)


def timestamp(seconds: int, nanos: int = 0) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)


YEAR_1_SECONDS = -62_135_596_800
YEAR_9999_END_SECONDS = 253_402_300_799
DATE_NANOS_END_SECONDS, DATE_NANOS_END_NANOS = divmod(2**63 - 1, 10**9)
# Valid timestamps (years 1-9999), at the edges of Elasticsearch's date_nanos range and
# beyond it on both sides.
TIMESTAMPS_VALID = (
    timestamp(0),
    timestamp(1_800_000_000),
    timestamp(YEAR_1_SECONDS),
    timestamp(YEAR_9999_END_SECONDS, 999_999_999),
    timestamp(-1, 999_999_999),
    timestamp(DATE_NANOS_END_SECONDS, DATE_NANOS_END_NANOS),
    timestamp(DATE_NANOS_END_SECONDS, DATE_NANOS_END_NANOS + 1),
)
# Not valid timestamps: the query server must say so, not pass them on.
TIMESTAMPS_INVALID = (
    timestamp(0, -1),
    timestamp(0, 10**9),
    timestamp(0, -(2**31)),
    timestamp(YEAR_9999_END_SECONDS + 1),
    timestamp(YEAR_1_SECONDS - 1),
    timestamp(limits.INT64_MAX),
    timestamp(limits.INT64_MIN),
)


# --- describing requests -------------------------------------------------------------


def describe(message: Message) -> str:
    """A one-line, bounded rendering of a request: long strings shortened, control
    characters escaped."""
    parts = [f"{f.name}={_describe_field(f, value)}" for f, value in message.ListFields()]
    return "{" + ", ".join(parts) + "}"


def _describe_field(descriptor: FieldDescriptor, value: Any) -> str:
    if descriptor.name == "page_token":
        return _describe_page_token(value)
    message_type = descriptor.message_type
    if message_type is not None and message_type.GetOptions().map_entry:
        shown = [f"{_short(k)}: {_short(v)}" for k, v in list(value.items())[:3]]
        more = f", …{len(value)} entries" if len(value) > 3 else ""
        return "{" + ", ".join(shown) + more + "}"
    if descriptor.is_repeated:
        items = [_describe_one(descriptor, item) for item in list(value)[:3]]
        more = f", …{len(value)} items" if len(value) > 3 else ""
        return "[" + ", ".join(items) + more + "]"
    return _describe_one(descriptor, value)


def _describe_one(descriptor: FieldDescriptor, value: Any) -> str:
    return describe(value) if descriptor.message_type is not None else _short(value)


def _describe_page_token(token: str) -> str:
    """What a well-formed token continues after (tokens are an 8-byte checksum, then JSON:
    see query_server.page_tokens.encode_page_token); anything else as it is."""
    try:
        body = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))[8:]
        after = json.loads(body)["a"]
    except (ValueError, KeyError, TypeError):
        return _short(token)
    return f"<token after {after!r}>"


def _short(value: Any) -> str:
    if isinstance(value, str) and len(value) > 48:
        return f"{value[:24]!r}…({len(value)} chars)"
    return repr(value)


# --- judging answers -----------------------------------------------------------------


@dataclass
class Storm:
    """Everything the storm saw: offenders, outcomes and the accepted commands."""

    offenders: list[str] = field(default_factory=list)
    # (rpc, code, ErrorInfo reason) -> calls (for a batch: items).
    outcomes: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    # request_id of every accepted command -> the event ids its first answer announced.
    accepted: dict[str, frozenset[str]] = field(default_factory=dict)
    accounts: list[str] = field(default_factory=list)
    # The entry ids of accepted money movements, for GetEntry and ListEvents.
    entries: list[str] = field(default_factory=list)
    head_position: int = 0
    calls: int = 0
    batch_items: int = 0
    last_refusal: str = ""
    # request_ids answered with replayed = false (the ones that took effect).
    executed_request_ids: set[str] = field(default_factory=set)

    def accept(self, rpc: str, summary: str, request: Any, response: Any) -> None:
        """Records an accepted command's answer."""
        self.outcomes[(rpc, "OK", "")] += 1
        request_id, event_ids = request.request_id, frozenset(response.event_ids)
        known = self.accepted.setdefault(request_id, event_ids)
        if known != event_ids:
            self.offend(summary, "OK", "", "", "answers to one request_id announce other events")
        if not response.replayed:
            # Concurrent copies may answer in any order, so count effects, not order them.
            if request_id in self.executed_request_ids:
                self.offend(summary, "OK", "", "", "a second effect for one request_id")
            self.executed_request_ids.add(request_id)
        self.head_position = max(self.head_position, response.position)
        if rpc == "OpenAccount" and response.account_id not in self.accounts:
            self.accounts.append(response.account_id)
        if response.entry_id and response.entry_id not in self.entries:
            self.entries.append(response.entry_id)

    def refused_call(self, rpc: str, summary: str, error: grpc.RpcError) -> None:
        """Judges a call that ended with an error status."""
        code = error.code().name
        message = error.details() or ""
        try:
            status = rpc_status.from_call(error)
        except ValueError as mismatch:  # the details disagree with the call's status
            self.outcomes[(rpc, code, "")] += 1
            problem = f"the client could not read the status the server sent ({mismatch})"
            self.offend(summary, code, "", message, problem)
            return
        self.judge(rpc, summary, code, status, message)

    def refused_item(self, rpc: str, summary: str, status: status_pb2.Status) -> None:
        """Judges one batch item's ``google.rpc.Status``."""
        try:
            code = code_pb2.Code.Name(status.code)
        except ValueError:
            code = f"code {status.code}"
        problems = ["an error outcome with code OK"] if status.code == code_pb2.OK else []
        self.judge(rpc, summary, code, status, status.message, problems)

    def judge(
        self,
        rpc: str,
        summary: str,
        code: str,
        status: status_pb2.Status | None,
        message: str,
        problems: list[str] | None = None,
    ) -> None:
        problems = list(problems or [])
        if code in FORBIDDEN_CODES:
            problems.append(f"{code} must never answer a client")
        reason = ""
        infos = error_infos(status)
        if status is None:
            problems.append("no google.rpc.Status details")
        elif not infos:
            problems.append("no google.rpc.ErrorInfo")
        else:
            reason = infos[0].reason
            if infos[0].domain != ERROR_DOMAIN:
                problems.append(f"ErrorInfo domain {infos[0].domain!r}")
            if not reason:
                problems.append("empty ErrorInfo reason")
            elif reason in SERVER_REASONS:
                problems.append("a healthy server blamed for what the client sent")
            elif reason not in EXPECTED_CODE_BY_REASON:
                problems.append("a reason the README's error table does not list")
            elif EXPECTED_CODE_BY_REASON[reason] != code:
                problems.append(f"{reason} should come as {EXPECTED_CODE_BY_REASON[reason]}")
        if not message.strip():
            problems.append("empty message")
        self.outcomes[(rpc, code, reason)] += 1
        self.last_refusal = f"{code} {reason}: {message}"
        if problems:
            self.offend(summary, code, reason, message, "; ".join(problems))

    def offend(self, summary: str, code: str, reason: str, message: str, problem: str) -> None:
        shown = message[:MESSAGE_SHOWN_LENGTH_MAX]
        self.offenders.append(
            f"{summary}\n    -> {code} {reason or '(no reason)'}: {shown!r}\n    !! {problem}"
        )


def error_infos(status: status_pb2.Status | None) -> list[error_details_pb2.ErrorInfo]:
    infos = []
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            infos.append(info)
    return infos


# --- building hostile requests -------------------------------------------------------


class HostileRequests:
    """Requests whose fields come from the hostile pools, often enough from valid values
    that ledger rules (funds, freezes, currencies, idempotency) are reached too. The
    generator draws only from its own seeded ``random.Random``."""

    def __init__(self, rng: random.Random, storm: Storm) -> None:
        self.rng = rng
        self._storm = storm
        self._request_ids: list[str] = []
        # (rpc, request, next_page_token) from successful paged queries.
        self.page_tokens: list[tuple[str, Message, str]] = []

    def chance(self, probability: float) -> bool:
        return self.rng.random() < probability

    def pick(self, pool: Sequence[T]) -> T:
        return self.rng.choice(pool)

    def next_page(self, rpc: str) -> Message | None:
        """The next page of a drawn successful paged query, as a client would ask for it;
        None when the query drawn was of another RPC than ``rpc``."""
        drawn, request, token = self.pick(self.page_tokens)
        if drawn != rpc:
            return None
        follow_up = type(request)()
        follow_up.CopyFrom(request)
        follow_up.page_token = token
        return follow_up

    def either(self, ordinary: Sequence[T], hostile: Sequence[T], share: float) -> T:
        """A value from ``hostile`` with probability ``share``, else from ``ordinary``:
        one hostile field among ordinary ones gets past validation more often."""
        return self.pick(hostile if self.chance(share) else ordinary)

    def timestamp(self, required: bool) -> timestamp_pb2.Timestamp | None:
        roll = self.rng.random()
        if roll < (0.05 if required else 0.4):
            return None
        if roll < 0.8:
            return self.pick(TIMESTAMPS_VALID)
        return self.pick(TIMESTAMPS_INVALID)

    def new_uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def fresh_request_id(self) -> str:
        return f"hostile-{self.new_uuid()}"

    def request_id(self) -> str:
        roll = self.rng.random()
        if roll < 0.12 and self._request_ids:
            # Used before: a different payload under the same key (or, rarely, the same).
            value = self.pick(self._request_ids)
        elif roll < 0.24:
            value = self.pick(HOSTILE_REQUEST_IDS)
        else:
            value = self.fresh_request_id()
        self._request_ids.append(value)
        return value

    def spelled(self, account_id: str) -> str:
        """One of the spellings uuid.UUID accepts for the same id."""
        return str(
            self.pick(
                [
                    account_id,
                    account_id,
                    account_id.upper(),
                    "{" + account_id + "}",
                    "urn:uuid:" + account_id,
                    account_id.replace("-", ""),
                ]
            )
        )

    def account_id(self) -> str:
        roll = self.rng.random()
        if roll < 0.7 and self._storm.accounts:
            return self.spelled(self.pick(self._storm.accounts))
        if roll < 0.8:
            return str(self.pick(SYSTEM_ACCOUNT_IDS))
        if roll < 0.86:
            return self.new_uuid()
        return str(self.pick(MALFORMED_ACCOUNT_IDS))

    def text(self, length_max: int, ordinary: Sequence[str]) -> str:
        if self.chance(0.5):
            return str(self.pick(ordinary))
        return str(self.pick(hostile_texts(length_max)))

    def currency(self) -> str:
        roll = self.rng.random()
        if roll < 0.6:
            return "EUR"
        if roll < 0.75:
            return "USD"
        return str(self.pick(CURRENCIES_HOSTILE))

    def amount_minor(self) -> int:
        roll = self.rng.random()
        if roll < 0.65:
            return self.rng.randint(1, 5_000)
        if roll < 0.75:
            # Valid, but far beyond any balance: overdrafts and int64 overflow.
            return int(self.pick((2**62, limits.INT64_MAX)))
        return int(self.pick(AMOUNTS_MINOR_HOSTILE))

    def money(self) -> ledger_pb2.Money | None:
        if self.chance(0.05):
            return None
        return ledger_pb2.Money(currency=self.currency(), minor_units=self.amount_minor())

    def metadata(self) -> dict[str, str]:
        entries_max = limits.METADATA_ENTRIES_MAX
        key_max, value_max = limits.METADATA_KEY_LENGTH_MAX, limits.METADATA_VALUE_LENGTH_MAX
        choices: list[Callable[[], dict[str, str]]] = [
            dict,
            lambda: {"segment": "retail"},
            lambda: {f"k{i}": "v" for i in range(entries_max)},
            lambda: {f"k{i}": "v" for i in range(entries_max + 1)},
            lambda: {"k" * key_max: "v"},
            lambda: {"k" * (key_max + 1): "v"},
            lambda: {"": "v"},
            lambda: {"segment\x00": "retail"},
            lambda: {"segment": "retail\x00"},
            lambda: {"segment": "v" * value_max},
            lambda: {"segment": "v" * (value_max + 1)},
            lambda: {"segment": "a\nb\tc\r"},
            lambda: {"😀": "👩\u200d👩\u200d👧\u200d👦"},
            lambda: {"\u0301": "\u202e"},
            lambda: {"segment": self.pick(hostile_texts(value_max))},
            lambda: {self.pick(hostile_texts(key_max)): "v"},
        ]
        return self.pick(choices)()

    def call_metadata(self) -> tuple[tuple[str, str], ...]:
        if not self.chance(0.15):
            return ()
        return (
            ("x-correlation-id", self.pick(CORRELATION_IDS)),
            ("x-causation-id", self.pick(CORRELATION_IDS)),
        )

    # Commands.

    def command(self, rpc: str) -> Message:
        builders: dict[str, Callable[[], Message]] = {
            "OpenAccount": self.open_account,
            "Deposit": lambda: self.money_movement(pb.DepositRequest),
            "Withdraw": lambda: self.money_movement(pb.WithdrawRequest),
            "TransferFunds": self.transfer,
            "PostJournalEntry": self.journal_entry,
            "FreezeAccount": lambda: self.status_change(pb.FreezeAccountRequest),
            "UnfreezeAccount": lambda: self.status_change(pb.UnfreezeAccountRequest),
            "CloseAccount": lambda: self.status_change(pb.CloseAccountRequest),
        }
        return builders[rpc]()

    def open_account(self) -> pb.OpenAccountRequest:
        roll = self.rng.random()
        account_id = ""
        if roll < 0.2:
            account_id = self.spelled(self.new_uuid())
        elif roll < 0.5:
            account_id = self.account_id()
        return pb.OpenAccountRequest(
            request_id=self.request_id(),
            account_id=account_id,
            owner_name=self.text(limits.OWNER_NAME_LENGTH_MAX, OWNER_NAMES),
            currency=self.currency(),
            overdraft_limit_minor=self.pick(OVERDRAFT_LIMITS_MINOR),
            metadata=self.metadata(),
        )

    def money_movement(self, kind: Callable[..., Message]) -> Message:
        return kind(
            request_id=self.request_id(),
            account_id=self.account_id(),
            amount=self.money(),
            description=self.text(limits.DESCRIPTION_LENGTH_MAX, DESCRIPTIONS),
        )

    def transfer(self) -> pb.TransferFundsRequest:
        from_account_id = self.account_id()
        to_account_id = self.account_id()
        if self.chance(0.1) and self._storm.accounts:
            same = self.pick(self._storm.accounts)
            from_account_id, to_account_id = self.spelled(same), self.spelled(same)
        return pb.TransferFundsRequest(
            request_id=self.request_id(),
            from_account_id=from_account_id,
            to_account_id=to_account_id,
            amount=self.money(),
            description=self.text(limits.DESCRIPTION_LENGTH_MAX, DESCRIPTIONS),
        )

    def journal_entry(self) -> pb.PostJournalEntryRequest:
        count = int(self.pick(JOURNAL_LINE_COUNTS))
        lines = []
        if self.chance(0.6):
            # Balanced, so that the ledger's rules decide, not validation.
            currency = "EUR" if self.chance(0.8) else "USD"
            net_minor = 0
            for index in range(count):
                amount_minor = self.rng.randint(1, 500)
                side = self.pick((ledger_pb2.SIDE_DEBIT, ledger_pb2.SIDE_CREDIT))
                if index == count - 1 and net_minor != 0:
                    amount_minor = abs(net_minor)
                    side = ledger_pb2.SIDE_DEBIT if net_minor > 0 else ledger_pb2.SIDE_CREDIT
                net_minor += amount_minor if side == ledger_pb2.SIDE_CREDIT else -amount_minor
                lines.append(
                    pb.JournalLine(
                        account_id=self.account_id(),
                        amount=ledger_pb2.Money(currency=currency, minor_units=amount_minor),
                        side=side,
                    )
                )
        else:
            for _ in range(count):
                any_side = self.pick(
                    (ledger_pb2.SIDE_DEBIT, ledger_pb2.SIDE_CREDIT, *SIDES_HOSTILE)
                )
                lines.append(
                    pb.JournalLine(account_id=self.account_id(), amount=self.money(), side=any_side)
                )
        return pb.PostJournalEntryRequest(
            request_id=self.request_id(),
            lines=lines,
            description=self.text(limits.DESCRIPTION_LENGTH_MAX, DESCRIPTIONS),
        )

    def status_change(self, kind: Callable[..., Message]) -> Message:
        return kind(
            request_id=self.request_id(),
            account_id=self.account_id(),
            reason=self.text(limits.REASON_LENGTH_MAX, DESCRIPTIONS),
        )

    def batch(self, size: int) -> pb.ExecuteBatchRequest:
        """``size`` commands, some repeated whole, some reusing an earlier item's
        request_id with another payload, some with no command set."""
        commands: list[pb.BatchCommand] = []
        for _ in range(size):
            roll = self.rng.random()
            if roll < 0.04:
                commands.append(pb.BatchCommand())
                continue
            if roll < 0.12 and commands and commands[-1].WhichOneof("command"):
                copy = pb.BatchCommand()
                copy.CopyFrom(self.pick(commands))
                commands.append(copy)
                continue
            rpc = self.pick(COMMAND_RPCS)
            request = self.command(rpc)
            if roll < 0.18 and commands:
                earlier = self.pick(commands)
                kind = earlier.WhichOneof("command")
                if kind is not None:
                    request.request_id = getattr(earlier, kind).request_id
            commands.append(pb.BatchCommand(**{BATCH_FIELD_BY_RPC[rpc]: request}))
        return pb.ExecuteBatchRequest(commands=commands)

    # Queries.

    def query(self, rpc: str, head_position: int) -> Message:
        builders: dict[str, Callable[[int], Message]] = {
            "GetAccount": self.get_account,
            "ListTransactions": self.list_transactions,
            "GetBalanceAt": self.get_balance_at,
            "SearchAccounts": self.search_accounts,
            "ListEvents": self.list_events,
            "GetEntry": self.get_entry,
        }
        return builders[rpc](head_position)

    def min_position(self, head_position: int) -> int:
        if self.chance(0.6):
            return 0
        # head + 1 and INT64_MAX are never reached: PROJECTION_BEHIND after a short wait.
        return int(
            self.pick((-1, limits.INT64_MIN, 1, head_position, head_position + 1, limits.INT64_MAX))
        )

    def page_token(self) -> str:
        roll = self.rng.random()
        if roll < 0.65:
            return ""
        if roll < 0.8 and self.page_tokens:
            return self.pick(self.page_tokens)[2]  # issued for another query, most likely
        if roll < 0.9:
            return base64.urlsafe_b64encode(self.rng.randbytes(self.rng.randint(1, 64))).decode()
        return str(self.pick(JUNK_PAGE_TOKENS))

    def get_account(self, head_position: int) -> queries_pb2.GetAccountRequest:
        return queries_pb2.GetAccountRequest(
            account_id=self.account_id(), min_position=self.min_position(head_position)
        )

    def list_transactions(self, head_position: int) -> Message:
        roll = self.rng.random()
        if roll < 0.1 and self.page_tokens:
            follow_up = self.next_page("ListTransactions")
            if follow_up is not None:
                return follow_up
        if roll < 0.25 and self._storm.accounts:
            account_id = self.pick(self._storm.accounts)
            params = {"account_id": account_id, "start": None, "end": None}
            after = [self.pick(FORGED_POSITIONS)]
            return queries_pb2.ListTransactionsRequest(
                account_id=account_id,
                page_size=self.pick((0, 1, 5)),
                page_token=encode_page_token("ListTransactions", params, after),
            )
        return queries_pb2.ListTransactionsRequest(
            account_id=self.account_id(),
            start_time=self.timestamp(required=False),
            end_time=self.timestamp(required=False),
            page_size=self.either((0, 10, 50), PAGE_SIZES, 0.3),
            page_token=self.page_token(),
            min_position=self.min_position(head_position),
        )

    def get_balance_at(self, head_position: int) -> queries_pb2.GetBalanceAtRequest:
        return queries_pb2.GetBalanceAtRequest(
            account_id=self.account_id(),
            at_time=self.timestamp(required=True),
            min_position=self.min_position(head_position),
        )

    def search_accounts(self, head_position: int) -> Message:
        del head_position  # SearchAccounts has no min_position
        text = self.text(SEARCH_QUERY_LENGTH_MAX, ("", "", *OWNER_NAMES))
        if self.chance(0.15):
            params = {"query": text.strip(), "status": None, "currency": None}
            after = list(self.pick(FORGED_ACCOUNT_SORTS))
            return queries_pb2.SearchAccountsRequest(
                query=text, page_token=encode_page_token("SearchAccounts", params, after)
            )
        return queries_pb2.SearchAccountsRequest(
            query=text,
            status=self.either((0, 1, 2, 3), STATUSES, 0.3),
            currency=self.either(("", "EUR", "USD"), SEARCH_CURRENCIES, 0.3),
            page_size=self.either((0, 10, 50), PAGE_SIZES, 0.3),
            page_token=self.page_token(),
        )

    def entry_id(self) -> str:
        roll = self.rng.random()
        if roll < 0.6 and self._storm.entries:
            return self.spelled(self.pick(self._storm.entries))
        if roll < 0.8:
            return self.new_uuid()
        return str(self.pick(MALFORMED_ACCOUNT_IDS))

    def position(self, head_position: int) -> int:
        return int(self.pick((0, 0, 1, head_position, -1, limits.INT64_MAX, limits.INT64_MIN)))

    def list_events(self, head_position: int) -> Message:
        roll = self.rng.random()
        if roll < 0.1 and self.page_tokens:
            follow_up = self.next_page("ListEvents")
            if follow_up is not None:
                return follow_up
        if roll < 0.2:
            # A forged token for a valid query: its sort value must be checked too.
            plain = queries_pb2.ListEventsRequest(order=self.pick((0, 2)))
            binding = _events_binding(events_query(plain))
            plain.page_token = encode_page_token(
                "ListEvents", binding, [self.pick(FORGED_POSITIONS)]
            )
            return plain
        return queries_pb2.ListEventsRequest(
            event_types=self.either(
                ([], ["FundsTransferred"], ["AccountOpened", "FundsDeposited"]),
                (["nope"], [""], ["FundsTransferred"] * 30, ["E\x00"]),
                0.2,
            ),
            account_id=self.account_id() if self.chance(0.4) else "",
            entry_id=self.entry_id() if self.chance(0.3) else "",
            pending_id=self.entry_id() if self.chance(0.1) else "",
            request_id=self.request_id() if self.chance(0.2) else "",
            principal=self.text(300, ("", "admin")) if self.chance(0.2) else "",
            start_time=self.timestamp(required=False),
            end_time=self.timestamp(required=False),
            from_position=self.position(head_position) if self.chance(0.3) else 0,
            to_position=self.position(head_position) if self.chance(0.3) else 0,
            text=self.text(300, ("", "rent", *OWNER_NAMES)) if self.chance(0.3) else "",
            order=self.either((0, 1, 2), (3, -1, 2**31 - 1), 0.2),
            page_size=self.either((0, 10, 50), PAGE_SIZES, 0.3),
            page_token=self.page_token(),
            min_position=self.min_position(head_position),
        )

    def get_entry(self, head_position: int) -> queries_pb2.GetEntryRequest:
        return queries_pb2.GetEntryRequest(
            entry_id=self.entry_id(), min_position=self.min_position(head_position)
        )


# --- the services and the storm ------------------------------------------------------


@dataclass(frozen=True)
class Services:
    pipeline: PipelineEnv
    commands: Any  # commands_pb2_grpc.CommandServiceStub
    queries: Any  # queries_pb2_grpc.QueryServiceStub
    log_paths: tuple[Path, ...]
    command_channel: grpc.Channel
    query_channel: grpc.Channel


@pytest.fixture(scope="module")
def services(
    pg_dsn: str, kafka_bootstrap: str, es_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Services]:
    logs = tmp_path_factory.mktemp("hostile-input")
    with (
        pipeline_env(pg_dsn, kafka_bootstrap, es_url, "hostile") as pipeline,
        ExitStack() as stack,
    ):
        env = {
            **pipeline.env,
            "CHRONOS_QUERY_MIN_POSITION_WAIT_SECONDS_MAX": str(MIN_POSITION_WAIT_SECONDS_MAX),
        }
        log_paths = []
        for module, address in (
            ("command_server", pipeline.command_addr),
            ("outbox_poller", None),
            ("projector", None),
            ("query_server", pipeline.query_addr),
        ):
            log_path = logs / f"{module}.log"
            log_paths.append(log_path)
            stack.enter_context(
                service_process(module, env, log_path=log_path, grpc_address=address)
            )
        command_channel = stack.enter_context(open_channel(pipeline.command_addr))
        query_channel = stack.enter_context(open_channel(pipeline.query_addr))
        yield Services(
            pipeline=pipeline,
            commands=commands_pb2_grpc.CommandServiceStub(command_channel),  # type: ignore[no-untyped-call]
            queries=queries_pb2_grpc.QueryServiceStub(query_channel),  # type: ignore[no-untyped-call]
            log_paths=tuple(log_paths),
            command_channel=command_channel,
            query_channel=query_channel,
        )


def send_command(
    services: Services,
    storm: Storm,
    rpc: str,
    request: Any,
    metadata: Sequence[tuple[str, str]] = (),
) -> Any | None:
    """One command call, judged; its answer, or None when refused."""
    summary = f"{rpc} {describe(request)}"
    if metadata:
        summary += f" metadata={[(key, _short(value)) for key, value in metadata]}"
    storm.calls += 1
    try:
        response = getattr(services.commands, rpc)(
            request, timeout=CALL_TIMEOUT_SECONDS, metadata=metadata
        )
    except grpc.RpcError as error:
        storm.refused_call(rpc, summary, error)
        return None
    storm.accept(rpc, summary, request, response)
    return response


def send_batch(services: Services, storm: Storm, request: pb.ExecuteBatchRequest) -> None:
    """An ExecuteBatch call: the call, and each item's outcome, judged."""
    summary = f"ExecuteBatch of {len(request.commands)}"
    storm.calls += 1
    try:
        response = services.commands.ExecuteBatch(request, timeout=CALL_TIMEOUT_SECONDS)
    except grpc.RpcError as error:
        storm.refused_call("ExecuteBatch", summary, error)
        return
    storm.outcomes[("ExecuteBatch", "OK", "")] += 1
    if len(response.results) != len(request.commands):
        storm.offend(summary, "OK", "", "", f"{len(response.results)} results")
        return
    for index, (item, result) in enumerate(zip(request.commands, response.results, strict=True)):
        storm.batch_items += 1
        kind = item.WhichOneof("command")
        command = getattr(item, kind) if kind is not None else None
        rpc = "ExecuteBatch." + (kind or "(none)")
        item_summary = (
            f"{summary} [{index}] {kind} {describe(command) if command is not None else '{}'}"
        )
        outcome = result.WhichOneof("outcome")
        if outcome == "response" and command is not None:
            storm.accept(rpc, item_summary, command, result.response)
        elif outcome == "error":
            storm.refused_item(rpc, item_summary, result.error)
        else:
            storm.offend(item_summary, "OK", "", "", f"outcome {outcome} for command {kind}")


def send_query(services: Services, storm: Storm, rpc: str, request: Any) -> Any | None:
    """One query call, judged; its answer, or None when refused."""
    storm.calls += 1
    try:
        response = getattr(services.queries, rpc)(request, timeout=CALL_TIMEOUT_SECONDS)
    except grpc.RpcError as error:
        storm.refused_call(rpc, f"{rpc} {describe(request)}", error)
        return None
    storm.outcomes[(rpc, "OK", "")] += 1
    return response


def baseline(services: Services, storm: Storm) -> None:
    """Accounts in every state, with money, so that the storm reaches the ledger's rules:
    funded, overdraft, other currency, frozen, closed, empty; and one successful call of
    every command RPC."""

    def must(rpc: str, request: Any) -> Any:
        response = send_command(services, storm, rpc, request)
        assert response is not None, f"baseline {rpc} refused: {storm.last_refusal}"
        return response

    def open_account(owner_name: str, currency: str = "EUR", limit_minor: int = 0) -> str:
        request = pb.OpenAccountRequest(
            request_id=f"baseline-open-{len(storm.accounts)}",
            owner_name=owner_name,
            currency=currency,
            overdraft_limit_minor=limit_minor,
        )
        return str(must("OpenAccount", request).account_id)

    def money(minor: int, currency: str = "EUR") -> ledger_pb2.Money:
        return ledger_pb2.Money(currency=currency, minor_units=minor)

    funded, overdrawn = open_account("Ada Lovelace"), open_account("Bob Byte", limit_minor=500)
    dollars, frozen = open_account("Chen Wei", currency="USD"), open_account("Frieda Frost")
    closed, thawed = open_account("Xavier Gone"), open_account("Gudrun Thaw")
    open_account("Zoë Empty")
    open_account("👩\u200d👩\u200d👧\u200d👦 مرحبا e\u0301 \u202eevil")
    for account_id, amount in ((funded, money(1_000_000)), (dollars, money(50_000, "USD"))):
        deposit = pb.DepositRequest(
            request_id=f"baseline-deposit-{account_id}", account_id=account_id, amount=amount
        )
        must("Deposit", deposit)
    transfer = pb.TransferFundsRequest(
        request_id="baseline-transfer",
        from_account_id=funded,
        to_account_id=frozen,
        amount=money(1_000),
    )
    must("TransferFunds", transfer)
    withdraw = pb.WithdrawRequest(
        request_id="baseline-withdraw", account_id=overdrawn, amount=money(200)
    )
    must("Withdraw", withdraw)
    entry = pb.PostJournalEntryRequest(
        request_id="baseline-entry",
        lines=[
            pb.JournalLine(account_id=funded, amount=money(50), side=ledger_pb2.SIDE_DEBIT),
            pb.JournalLine(account_id=overdrawn, amount=money(50), side=ledger_pb2.SIDE_CREDIT),
        ],
    )
    must("PostJournalEntry", entry)
    for rpc, kind, account_id in (
        ("FreezeAccount", pb.FreezeAccountRequest, frozen),
        ("FreezeAccount", pb.FreezeAccountRequest, thawed),
        ("UnfreezeAccount", pb.UnfreezeAccountRequest, thawed),
        ("CloseAccount", pb.CloseAccountRequest, closed),
    ):
        must(rpc, kind(request_id=f"baseline-{rpc}-{account_id}", account_id=account_id))
    one = pb.BatchCommand(
        deposit=pb.DepositRequest(request_id="baseline-batch", account_id=funded, amount=money(1))
    )
    send_batch(services, storm, pb.ExecuteBatchRequest(commands=[one]))


def largest_refusals() -> list[tuple[str, Message]]:
    """Requests that break every rule of every field at once, at the largest sizes the
    limits allow. The biggest refusal a client can provoke must still reach it whole: gRPC
    clients refuse trailers over 8 KiB (at random) and 16 KiB (always) by default."""
    nul = "\x00"
    money = ledger_pb2.Money(currency=nul * 16, minor_units=-1)
    journal = pb.PostJournalEntryRequest(
        request_id=nul * (limits.REQUEST_ID_LENGTH_MAX + 1),
        lines=[
            pb.JournalLine(account_id=nul * 64, amount=money, side=SIDE_OUT_OF_RANGE)
            for _ in range(limits.JOURNAL_LINES_MAX)
        ],
        description=nul * (limits.DESCRIPTION_LENGTH_MAX + 1),
    )
    key_filler = nul * (limits.METADATA_KEY_LENGTH_MAX - 1)
    open_account = pb.OpenAccountRequest(
        request_id=nul * (limits.REQUEST_ID_LENGTH_MAX + 1),
        account_id=nul * 64,
        owner_name=nul * (limits.OWNER_NAME_LENGTH_MAX + 1),
        currency=nul * 16,
        overdraft_limit_minor=-1,
        metadata={
            f"{index:02d}{key_filler}": nul * (limits.METADATA_VALUE_LENGTH_MAX + 1)
            for index in range(limits.METADATA_ENTRIES_MAX)
        },
    )
    transfer = pb.TransferFundsRequest(
        request_id=nul * (limits.REQUEST_ID_LENGTH_MAX + 1),
        from_account_id=nul * 64,
        to_account_id=nul * 64,
        amount=money,
        description=nul * (limits.DESCRIPTION_LENGTH_MAX + 1),
    )
    return [
        ("PostJournalEntry", journal),
        ("OpenAccount", open_account),
        ("TransferFunds", transfer),
    ]


def command_storm(services: Services, storm: Storm, hostile: HostileRequests) -> None:
    largest = largest_refusals()
    for rpc, request in largest:
        send_command(services, storm, rpc, request)
    batch = [pb.BatchCommand(**{BATCH_FIELD_BY_RPC[rpc]: request}) for rpc, request in largest]
    send_batch(services, storm, pb.ExecuteBatchRequest(commands=batch))
    sent: list[tuple[str, Message]] = []
    batch_every = COMMAND_CALLS // len(BATCH_SIZES)
    for step in range(COMMAND_CALLS):
        if step % batch_every == batch_every // 2:
            size = BATCH_SIZES[step // batch_every]
            if size > limits.BATCH_COMMANDS_MAX:
                # Valid commands, so that the check in PostgreSQL would see them had the
                # oversized batch been run anyway.
                send_batch(services, storm, oversized_batch(hostile, storm, size))
            else:
                send_batch(services, storm, hostile.batch(size))
        if step == COMMAND_CALLS // 2:
            concurrent_burst(services, storm, hostile)
        if sent and hostile.chance(0.1):
            rpc, request = hostile.pick(sent)  # the very same request again
        else:
            rpc = hostile.pick(COMMAND_RPCS)
            request = hostile.command(rpc)
        sent.append((rpc, request))
        send_command(services, storm, rpc, request, hostile.call_metadata())


def oversized_batch(hostile: HostileRequests, storm: Storm, size: int) -> pb.ExecuteBatchRequest:
    account_id = storm.accounts[0]
    return pb.ExecuteBatchRequest(
        commands=[
            pb.BatchCommand(
                deposit=pb.DepositRequest(
                    request_id=hostile.fresh_request_id(),
                    account_id=account_id,
                    amount=ledger_pb2.Money(currency="EUR", minor_units=1),
                )
            )
            for _ in range(size)
        ]
    )


# Bytes no protobuf message decodes from: a field with a truncated varint, and a string
# field that is not UTF-8 (what a client whose runtime does not check would send).
UNDECODABLE_PAYLOADS = (b"\x08" + b"\x80" * 11, b"\x0a\x03\xff\xfe\xfd")


def undecodable_requests(services: Services, storm: Storm) -> None:
    """Bytes that are not the method's request message, to every RPC of both services."""
    for service, channel, rpcs in (
        ("chronos.v1.CommandService", services.command_channel, (*COMMAND_RPCS, "ExecuteBatch")),
        ("chronos.v1.QueryService", services.query_channel, QUERY_RPCS),
    ):
        for rpc in rpcs:
            call = channel.unary_unary(f"/{service}/{rpc}")
            for payload in UNDECODABLE_PAYLOADS:
                storm.calls += 1
                try:
                    call(payload, timeout=CALL_TIMEOUT_SECONDS)
                except grpc.RpcError as error:
                    storm.refused_call(rpc, f"{rpc} raw bytes {payload!r}", error)
                    continue
                storm.offend(
                    f"{rpc} raw bytes {payload!r}", "OK", "", "", "undecodable bytes accepted"
                )


def concurrent_burst(services: Services, storm: Storm, hostile: HostileRequests) -> None:
    """Identical requests in flight together (one effect), and one request_id with
    different payloads in flight together (one wins, the others are refused)."""
    account_id = storm.accounts[0]
    same = pb.DepositRequest(
        request_id=hostile.fresh_request_id(),
        account_id=account_id,
        amount=ledger_pb2.Money(currency="EUR", minor_units=7),
    )
    shared_request_id = hostile.fresh_request_id()
    differing = [
        pb.DepositRequest(
            request_id=shared_request_id,
            account_id=account_id,
            amount=ledger_pb2.Money(currency="EUR", minor_units=1 + copy),
        )
        for copy in range(CONCURRENT_COPIES)
    ]
    requests = [same] * CONCURRENT_COPIES + differing
    futures = [
        services.commands.Deposit.future(request, timeout=CALL_TIMEOUT_SECONDS)
        for request in requests
    ]
    for request, future in zip(requests, futures, strict=True):
        summary = f"Deposit (concurrent) {describe(request)}"
        storm.calls += 1
        try:
            response = future.result()
        except grpc.RpcError as error:
            storm.refused_call("Deposit", summary, error)
            continue
        storm.accept("Deposit", summary, request, response)


def wait_for_projection(services: Services, storm: Storm) -> None:
    """Waits (bounded) until both the applied and the searchable watermark reach the
    storm's last position, so that queries meet every account and line it made."""
    account_id = storm.accounts[0]
    deadline = time.monotonic() + CATCH_UP_SECONDS_MAX
    for rpc, kind in (
        ("GetAccount", queries_pb2.GetAccountRequest),
        ("ListTransactions", queries_pb2.ListTransactionsRequest),
    ):
        while True:
            request = kind(account_id=account_id, min_position=storm.head_position)
            try:
                getattr(services.queries, rpc)(request, timeout=CALL_TIMEOUT_SECONDS)
                break
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                    raise AssertionError(
                        f"the projection did not reach position {storm.head_position} "
                        f"within {CATCH_UP_SECONDS_MAX} s: {error.code()} {error.details()}"
                    ) from error


def query_storm(services: Services, storm: Storm, hostile: HostileRequests) -> None:
    for _ in range(QUERY_CALLS):
        rpc = hostile.pick(QUERY_RPCS)
        request = hostile.query(rpc, storm.head_position)
        response = send_query(services, storm, rpc, request)
        token = getattr(response, "next_page_token", "")
        if token:
            hostile.page_tokens.append((rpc, request, token))


@pytest.fixture(scope="module")
def storm(services: Services) -> Storm:
    record = Storm()
    hostile = HostileRequests(random.Random(SEED), record)
    baseline(services, record)
    undecodable_requests(services, record)
    command_storm(services, record, hostile)
    wait_for_projection(services, record)
    query_storm(services, record, hostile)
    return record


# --- the tests -----------------------------------------------------------------------


def server_complaints(log_paths: Sequence[Path]) -> list[str]:
    """The servers' warning and error log lines (with tracebacks), for the report."""
    lines = []
    for path in log_paths:
        for line in path.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                if "Traceback" in line or "Error" in line:
                    lines.append(f"{path.stem}: {line}")
                continue
            if isinstance(entry, dict) and entry.get("level") in ("WARNING", "ERROR", "CRITICAL"):
                text = f"{path.stem}: {entry.get('message')}"
                if entry.get("request_id"):
                    text += f" [request_id {_short(entry['request_id'])}]"
                if entry.get("exception"):
                    text += "\n" + str(entry["exception"])
                lines.append(text)
    return lines[:LOG_LINES_SHOWN_MAX]


def test_no_request_gets_internal_unknown_or_a_bare_error(storm: Storm, services: Services) -> None:
    if storm.offenders:
        complaints = "\n".join(server_complaints(services.log_paths)) or "(none)"
        pytest.fail(
            f"{len(storm.offenders)} of {storm.calls} calls and {storm.batch_items} batch "
            f"items broke the error rule (seed {SEED}):\n\n"
            + "\n".join(storm.offenders)
            + f"\n\nServer warnings and errors:\n{complaints}",
            pytrace=False,
        )


def test_the_storm_reached_every_rpc_and_the_ledger_rules(storm: Storm) -> None:
    """Guards the generator: a storm refused wholesale by validation, or one that never
    got past it, would prove little."""
    answered = {rpc for rpc, code, _ in storm.outcomes if code == "OK"}
    refused = {rpc for rpc, code, _ in storm.outcomes if code != "OK"}
    every_rpc = {*COMMAND_RPCS, "ExecuteBatch", *QUERY_RPCS}
    reasons = {reason for _, _, reason in storm.outcomes if reason}
    expected_reasons = set(EXPECTED_CODE_BY_REASON) - {"CONCURRENCY_CONFLICT"}
    assert every_rpc - answered == set(), "never answered OK"
    assert every_rpc - refused == set(), "never refused"
    assert expected_reasons - reasons == set(), "reasons never reached"


def test_refused_commands_wrote_nothing(storm: Storm, services: Services) -> None:
    """Only accepted request_ids have an idempotency record and events, each exactly the
    events its answer announced; every event has its outbox row and every account row
    its stream."""
    with psycopg.connect(services.pipeline.pg_dsn, autocommit=True) as conn:
        recorded = {
            str(request_id): response_stored
            for request_id, response_stored in conn.execute(
                "SELECT request_id, response IS NOT NULL FROM idempotency"
            )
        }
        events_by_request_id = {
            str(request_id): frozenset(event_ids)
            for request_id, event_ids in conn.execute(
                "SELECT metadata->>'request_id', array_agg(event_id::text) FROM events GROUP BY 1"
            )
        }
        (events_without_outbox_row,) = conn.execute(
            "SELECT count(*) FROM events e WHERE NOT EXISTS "
            "(SELECT 1 FROM outbox o WHERE o.position = e.position)"
        ).fetchone() or (None,)
        (accounts_without_stream,) = conn.execute(
            "SELECT count(*) FROM accounts a WHERE NOT EXISTS "
            "(SELECT 1 FROM events e WHERE e.stream_id = a.account_id)"
        ).fetchone() or (None,)
    accepted = storm.accepted
    problems = [
        *(f"idempotency record of refused {_short(r)}" for r in sorted(recorded.keys() - accepted)),
        *(f"no idempotency record for accepted {_short(r)}" for r in accepted.keys() - recorded),
        *(f"placeholder without an answer: {_short(r)}" for r, s in recorded.items() if not s),
        *(
            f"events of refused {_short(r)}"
            for r in sorted(events_by_request_id.keys() - accepted.keys())
        ),
        *(
            f"{_short(r)}: events {sorted(events_by_request_id.get(r, ()))}, "
            f"answer announced {sorted(event_ids)}"
            for r, event_ids in accepted.items()
            if events_by_request_id.get(r, frozenset()) != event_ids
        ),
    ]
    if events_without_outbox_row:
        problems.append(f"{events_without_outbox_row} events without an outbox row")
    if accounts_without_stream:
        problems.append(f"{accounts_without_stream} account rows without events")
    assert len(accepted) > 0
    assert problems == [], f"{len(problems)} half-written or stray records"

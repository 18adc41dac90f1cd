"""What the authorization tests share (tests/integration and tests/e2e): tokens minted
with a local key, a valid request for every method, the scopes each needs, how a
refusal reads, and the rows a command writes."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import grpc
import psycopg
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2, status_pb2

from chronos.security import scopes
from chronos.security.authentication import Authenticator
from chronos.security.keys import JwksFileKeys
from chronos.security.tokens import issue_token, load_signing_key
from chronos.security.verify import TokenVerifier
from chronos.v1 import commands_pb2, ledger_pb2, queries_pb2
from chronos_dev.pki import LocalPki

COMMAND_SERVICE = commands_pb2.DESCRIPTOR.services_by_name["CommandService"]
QUERY_SERVICE = queries_pb2.DESCRIPTOR.services_by_name["QueryService"]
ALL_METHODS = tuple(
    method.full_name for service in (COMMAND_SERVICE, QUERY_SERVICE) for method in service.methods
)
WRITE_SCOPES = (scopes.ACCOUNTS_WRITE, scopes.FUNDS_WRITE, scopes.JOURNAL_WRITE)
EVERY_SCOPE_BUT_ADMIN = (scopes.LEDGER_READ, *WRITE_SCOPES)
WRITTEN_TABLES = ("events", "outbox", "idempotency", "accounts")
# A time after every line these tests write.
LATER = timestamp_pb2.Timestamp(seconds=4_000_000_000)
Metadata = tuple[tuple[str, str], ...]
ISSUER = "chronos-local"
AUDIENCE = "chronos-ledger"


@dataclass(frozen=True)
class Tokens:
    """Mints the tokens of the tests' callers, and verifies them as the servers do."""

    pki: LocalPki

    def caller(self, *granted: str, accounts: tuple[str, ...] | None = None) -> Metadata:
        """The call metadata of a caller with the ``granted`` scopes (and accounts)."""
        token = issue_token(
            load_signing_key(self.pki.signing_key),
            subject=f"tester-{uuid.uuid4().hex[:8]}",
            scopes=granted,
            issuer=ISSUER,
            audience=AUDIENCE,
            accounts=accounts,
        )
        return (("authorization", f"Bearer {token}"),)

    @property
    def admin(self) -> Metadata:
        return self.caller(scopes.ADMIN)

    def authenticator(self, server: str) -> Authenticator:
        verifier = TokenVerifier(
            JwksFileKeys(self.pki.jwks),
            issuer=ISSUER,
            audience=AUDIENCE,
            clock_skew_seconds=30,
            cache_max=100,
        )
        return Authenticator(server, verifier)


def written(dsn: str) -> dict[str, int]:
    """Rows of every table a command writes."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        return {
            table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # type: ignore[index]
            for table in WRITTEN_TABLES
        }


def request_ids_recorded(dsn: str, request_ids: list[str]) -> set[str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT request_id FROM idempotency WHERE request_id = ANY(%s)", (request_ids,)
        ).fetchall()
    return {row[0] for row in rows}


def new_id() -> str:
    return str(uuid.uuid4())


def eur(minor: int) -> ledger_pb2.Money:
    return ledger_pb2.Money(currency="EUR", minor_units=minor)


def error_info(status: status_pb2.Status) -> error_details_pb2.ErrorInfo:
    (detail,) = status.details
    info = error_details_pb2.ErrorInfo()
    assert detail.Unpack(info)
    assert info.domain == "chronos.ledger"
    return info


def refusal_of(error: grpc.RpcError) -> tuple[grpc.StatusCode, str, dict[str, str], str]:
    """The code, ErrorInfo reason and metadata, and message of a failed call."""
    details = dict(error.trailing_metadata() or ())["grpc-status-details-bin"]  # type: ignore[attr-defined]
    info = error_info(status_pb2.Status.FromString(details))
    return error.code(), info.reason, dict(info.metadata), error.details() or ""  # type: ignore[attr-defined]


def denied(metadata: dict[str, str]) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    return grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED", metadata


def valid_requests(account_id: str, other_id: str, pending_id: str = "") -> dict[str, Any]:
    """A request for every method that its scope would let through and succeed (the post
    and void given ``pending_id``, a hold of ``account_id``'s)."""
    c = commands_pb2
    q = queries_pb2
    prefix = "chronos.v1.CommandService."
    journal = c.PostJournalEntryRequest(
        request_id=new_id(),
        lines=[
            c.JournalLine(account_id=account_id, amount=eur(1), side=ledger_pb2.SIDE_DEBIT),
            c.JournalLine(account_id=other_id, amount=eur(1), side=ledger_pb2.SIDE_CREDIT),
        ],
    )
    deposit = c.DepositRequest(request_id=new_id(), account_id=account_id, amount=eur(5))
    return {
        prefix + "OpenAccount": c.OpenAccountRequest(
            request_id=new_id(), account_id=new_id(), owner_name="New", currency="EUR"
        ),
        prefix + "Deposit": deposit,
        prefix + "Withdraw": c.WithdrawRequest(
            request_id=new_id(), account_id=account_id, amount=eur(5)
        ),
        prefix + "TransferFunds": c.TransferFundsRequest(
            request_id=new_id(), from_account_id=account_id, to_account_id=other_id, amount=eur(5)
        ),
        prefix + "PostJournalEntry": journal,
        prefix + "FreezeAccount": c.FreezeAccountRequest(
            request_id=new_id(), account_id=account_id, reason="hold"
        ),
        prefix + "UnfreezeAccount": c.UnfreezeAccountRequest(
            request_id=new_id(), account_id=other_id, reason="release"
        ),
        prefix + "CloseAccount": c.CloseAccountRequest(
            request_id=new_id(), account_id=other_id, reason="done"
        ),
        prefix + "CreatePendingTransfer": c.CreatePendingTransferRequest(
            request_id=new_id(), from_account_id=account_id, to_account_id=other_id, amount=eur(5)
        ),
        prefix + "PostPendingTransfer": c.PostPendingTransferRequest(
            request_id=new_id(), pending_id=pending_id
        ),
        prefix + "VoidPendingTransfer": c.VoidPendingTransferRequest(
            request_id=new_id(), pending_id=pending_id
        ),
        prefix + "ExecuteBatch": c.ExecuteBatchRequest(commands=[c.BatchCommand(deposit=deposit)]),
        # Names no entry these tests posted: past authorization, it is ENTRY_NOT_FOUND.
        prefix + "ReverseEntry": c.ReverseEntryRequest(request_id=new_id(), entry_id=new_id()),
        "chronos.v1.QueryService.GetAccount": q.GetAccountRequest(account_id=account_id),
        "chronos.v1.QueryService.ListTransactions": q.ListTransactionsRequest(
            account_id=account_id
        ),
        "chronos.v1.QueryService.GetBalanceAt": q.GetBalanceAtRequest(
            account_id=account_id, at_time=LATER
        ),
        "chronos.v1.QueryService.SearchAccounts": q.SearchAccountsRequest(query="Owner"),
        "chronos.v1.QueryService.ListPendingTransfers": q.ListPendingTransfersRequest(
            account_id=account_id
        ),
        "chronos.v1.QueryService.ListEvents": q.ListEventsRequest(account_id=account_id),
        # Names no entry these tests posted: past authorization, it is ENTRY_NOT_FOUND.
        "chronos.v1.QueryService.GetEntry": q.GetEntryRequest(entry_id=new_id()),
    }


def required_scopes(method_full_name: str) -> tuple[str, ...]:
    if method_full_name.endswith(".ExecuteBatch"):
        return WRITE_SCOPES
    if method_full_name.startswith("chronos.v1.QueryService."):
        return (scopes.LEDGER_READ,)
    name = method_full_name.rpartition(".")[2]
    if name in ("OpenAccount", "FreezeAccount", "UnfreezeAccount", "CloseAccount"):
        return (scopes.ACCOUNTS_WRITE,)
    if name in ("PostJournalEntry", "ReverseEntry"):
        return (scopes.JOURNAL_WRITE,)
    return (scopes.FUNDS_WRITE,)

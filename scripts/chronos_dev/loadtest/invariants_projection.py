"""Invariant 4, the projection equals the recompute, checked through the read side.

After waiting (bounded) until the query service shows the event store's head,
``GetAccount`` of every account must return the fold's posted balance, pending debits,
pending credits, available balance, version and currency. When an Elasticsearch URL is
given, :func:`chronos.read_model.reconcile.reconcile` (the implementation behind
``chronos reconcile``) must find no drift either, and every hold's document in the
pending index must show the state, amount and posted amount of the write side's row.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
import psycopg

from chronos.errors import ChronosError
from chronos.v1 import queries_pb2, queries_pb2_grpc
from chronos_dev.client import ClientSecurity, aio_channel
from chronos_dev.loadtest.check_result import CheckResult, Problems

GET_ACCOUNT_CONCURRENCY = 32
PENDING_SCAN_PAGE_SIZE = 5000
NAME = "projection equals recompute"


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadSide:
    """Where the read side is and how long to wait for it."""

    query_addr: str
    # Secures the calls to the query service.
    security: ClientSecurity = field(repr=False)
    # Elasticsearch, for ``chronos reconcile`` and the pending index ("": skipped).
    es_url: str
    index_prefix: str
    wait_seconds_max: float
    rpc_timeout_seconds: float


class Expected(Protocol):
    """What the fold knows of one account (invariants.FoldedAccount)."""

    currency: str
    balance_minor: int
    pending_debits_minor: int
    pending_credits_minor: int
    version: int


def account_difference(
    account_id: str, want: Expected, got: queries_pb2.GetAccountResponse
) -> str | None:
    """How a ``GetAccount`` answer differs from the fold; None when it does not."""
    expected = (
        want.balance_minor,
        want.pending_debits_minor,
        want.pending_credits_minor,
        want.balance_minor - want.pending_debits_minor,
        want.version,
        want.currency,
    )
    actual = (
        got.balance.minor_units,
        got.pending_debits.minor_units,
        got.pending_credits.minor_units,
        got.available.minor_units,
        got.version,
        got.currency,
    )
    if actual == expected:
        return None
    return (
        f"{account_id}: (balance, pending debits, pending credits, available, version, "
        f"currency) {actual}, event store {expected}"
    )


async def _wait_for_head(
    stub: Any, account: str, head: int, deadline_monotonic: float, rpc_timeout_seconds: float
) -> str | None:
    """Waits until the query service answers at ``head``; an error text on timeout."""
    request = queries_pb2.GetAccountRequest(account_id=account, min_position=head)
    last_error = ""
    while True:
        remaining = deadline_monotonic - time.monotonic()
        if remaining <= 0:
            return f"the query service did not reach position {head} in time ({last_error})"
        try:
            await stub.GetAccount(request, timeout=min(rpc_timeout_seconds, remaining))
            return None
        except grpc.aio.AioRpcError as error:
            last_error = f"{error.code().name}: {error.details()}"
            # The server already waited up to its own bound; pause briefly before asking
            # again so an unreachable server is not hammered.
            await asyncio.sleep(min(0.2, max(0.0, deadline_monotonic - time.monotonic())))


async def _compare_accounts(
    query_addr: str,
    security: ClientSecurity,
    accounts: Mapping[str, Expected],
    head: int,
    deadline_monotonic: float,
    rpc_timeout_seconds: float,
) -> tuple[int, Problems, str | None]:
    """GetAccount for every folded account: (checked, differences, wait error)."""
    problems = Problems()
    checked = 0
    async with aio_channel(query_addr, security_=security) as channel:
        stub = queries_pb2_grpc.QueryServiceStub(channel)  # type: ignore[no-untyped-call]
        if not accounts:
            return 0, problems, None
        first = next(iter(accounts))
        waited = await _wait_for_head(stub, first, head, deadline_monotonic, rpc_timeout_seconds)
        if waited is not None:
            return 0, problems, waited
        semaphore = asyncio.Semaphore(GET_ACCOUNT_CONCURRENCY)

        async def compare(account_id: str, want: Expected) -> None:
            nonlocal checked
            request = queries_pb2.GetAccountRequest(account_id=account_id, min_position=head)
            async with semaphore:
                try:
                    got = await stub.GetAccount(request, timeout=rpc_timeout_seconds)
                except grpc.aio.AioRpcError as error:
                    problems.add(f"{account_id}: {error.code().name} {error.details()}")
                    return
            checked += 1
            difference = account_difference(account_id, want, got)
            if difference is not None:
                problems.add(difference)

        await asyncio.gather(*(compare(a, want) for a, want in accounts.items()))
    return checked, problems, None


def check_projection(
    conn: psycopg.Connection[Any],
    accounts: Mapping[str, Expected],
    head: int,
    read_side: ReadSide,
    write_side_holds: Mapping[str, tuple[str, int]] | None = None,
) -> CheckResult:
    """Invariant 4 (see the module docstring). ``write_side_holds`` (pending_id ->
    (state, posted_minor)): compare the pending index with it too."""
    deadline = time.monotonic() + read_side.wait_seconds_max
    checked, problems, wait_error = asyncio.run(
        _compare_accounts(
            read_side.query_addr,
            read_side.security,
            accounts,
            head,
            deadline,
            read_side.rpc_timeout_seconds,
        )
    )
    es_url, index_prefix = read_side.es_url, read_side.index_prefix
    if wait_error is not None:
        return CheckResult(name=NAME, passed=False, detail=wait_error)
    detail = (
        f"GetAccount at position {head}: {checked} accounts compared with the event store "
        "fold (balance, pending debits and credits, available, version)"
    )
    if not es_url:
        return problems.result(NAME, detail + "; chronos reconcile skipped (no --es-url)")
    reconciled, reconcile_detail = _reconcile(
        conn, es_url, index_prefix, max(1.0, deadline - time.monotonic())
    )
    if not reconciled:
        problems.add(f"chronos reconcile: {reconcile_detail}")
    detail += f"; chronos reconcile: {reconcile_detail}"
    if write_side_holds is not None:
        try:
            documents = _pending_documents(es_url, index_prefix)
        except ChronosError as error:
            problems.add(f"pending index: {error}")
        else:
            compare_pending_index(write_side_holds, documents, problems)
            detail += f"; pending index: {len(documents)} holds compared with the write side"
    return problems.result(NAME, detail)


def compare_pending_index(
    write_side: Mapping[str, tuple[str, int]],
    documents: Mapping[str, Mapping[str, Any]],
    problems: Problems,
) -> None:
    """Adds a problem for each hold whose pending-index document is missing, unexpected
    or disagrees with the write side's (state, posted_minor)."""
    for pending_id, row in sorted(write_side.items()):
        document = documents.get(pending_id)
        if document is None:
            problems.add(f"hold {pending_id}: no document in the pending index")
            continue
        shown = (str(document.get("state")), int(document.get("posted_minor", -1)))
        if shown != row:
            problems.add(
                f"hold {pending_id}: pending index (state, posted) {shown}, write side {row}"
            )
    for pending_id in sorted(documents.keys() - write_side.keys()):
        problems.add(f"hold {pending_id}: in the pending index, unknown to the write side")


def _pending_documents(es_url: str, index_prefix: str) -> dict[str, dict[str, Any]]:
    """Every hold document of the pending index, after a refresh, by pending id."""
    from elasticsearch import ApiError, TransportError
    from elasticsearch.helpers import scan

    from chronos.read_model.client import elasticsearch_client
    from chronos.read_model.indices import IndexNames, translate

    names = IndexNames(prefix=index_prefix)
    es = elasticsearch_client(es_url, request_timeout=30, max_retries=1)
    try:
        es.indices.refresh(index=names.pending)
        return {
            str(hit["_source"]["pending_id"]): hit["_source"]
            for hit in scan(es, index=names.pending, size=PENDING_SCAN_PAGE_SIZE)
        }
    except (ApiError, TransportError) as error:
        raise translate(error, "reading the pending index") from error
    finally:
        es.close()


def _reconcile(
    conn: psycopg.Connection[Any], es_url: str, index_prefix: str, wait_seconds: float
) -> tuple[bool, str]:
    # Imported here: only this check needs the Elasticsearch client.
    from chronos.read_model.client import elasticsearch_client
    from chronos.read_model.indices import IndexNames
    from chronos.read_model.reconcile import reconcile

    es = elasticsearch_client(es_url, request_timeout=30, max_retries=1)
    try:
        report = reconcile(conn, es, IndexNames(prefix=index_prefix), wait_seconds=wait_seconds)
    except ChronosError as error:
        return False, f"failed: {error}"
    finally:
        es.close()
    if report.ok:
        return True, f"no drift over {report.accounts_checked} accounts"
    drift = "; ".join(
        f"{d.account_id} {d.field} expected {d.expected} actual {d.actual}"
        for d in report.drifts[:3]
    )
    return False, (
        f"{len(report.drifts)} drifts, {len(report.unbalanced_currencies)} unbalanced "
        f"currencies, {len(report.store_errors)} store errors; {drift}"
    )

"""The bank invariants, checked after every run through the event store and the read side.

1. Conservation: for each currency, the balances of all accounts (system accounts
   included) sum to zero, folded from the event store.
2. Limits: every statement line's ``balance_after`` is at least ``-overdraft_limit`` for
   user accounts, and agrees with the running sum of its stream.
3. Exactly once: every request_id of this run answered OK appears in the event store
   with exactly the events its answer announced (2 per transfer) and ends at the answered
   position; no rejected request_id appears; a request_id whose outcome is unknown
   (deadline, unavailable) appears completely or not at all; no other request_id of this
   run appears; and repeated request_ids were answered identically (replayed = true,
   same position).
4. Projection: after waiting (bounded) until the query service shows the event store's
   head, ``GetAccount`` of every account returns the balance and version of the fold;
   and when an Elasticsearch URL is given, :func:`chronos.read_model.reconcile.reconcile`
   (the implementation behind ``chronos reconcile``) finds no drift either.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import grpc
import psycopg

from chronos.domain.events import AccountKind, AccountOpened, LinePosted
from chronos.errors import ChronosError
from chronos.event_store.mapper import decode
from chronos.event_store.reader import head_position, iter_events
from chronos.v1 import queries_pb2, queries_pb2_grpc
from chronos_dev.client import ClientSecurity, aio_channel
from chronos_dev.loadtest.outcomes import Outcomes

EXAMPLES_MAX = 10
# Events each accepted command writes, by RPC. A deposit writes 3 when it is the first
# in its currency (it also opens the currency's system account).
EVENT_COUNTS_BY_RPC = {"OpenAccount": {1}, "Deposit": {2, 3}, "TransferFunds": {2}}
GET_ACCOUNT_CONCURRENCY = 32
PG_CONNECT_TIMEOUT_SECONDS = 10
# A statement timeout for the checks' queries: bounded even on a huge store.
PG_STATEMENT_TIMEOUT_MILLISECONDS = 600_000


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckResult:
    name: str
    passed: bool
    detail: str


@dataclass(slots=True)
class FoldedAccount:
    kind: AccountKind
    currency: str
    overdraft_limit_minor: int
    balance_minor: int = 0
    version: int = 0


@dataclass(slots=True)
class StoreFold:
    """The event store folded up to ``head``."""

    head: int
    accounts: dict[str, FoldedAccount]
    totals_by_currency: dict[str, int]
    lines: int
    floor_violations: list[str]
    floor_violation_count: int
    running_sum_errors: list[str]
    running_sum_error_count: int


@contextmanager
def connect(pg_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """A read-only, autocommit connection with a bounded connect and statement time."""
    try:
        connection = psycopg.connect(
            pg_dsn,
            autocommit=True,
            connect_timeout=PG_CONNECT_TIMEOUT_SECONDS,
            options=f"-c statement_timeout={PG_STATEMENT_TIMEOUT_MILLISECONDS}",
        )
    except psycopg.Error as error:
        raise ChronosError(f"cannot connect to the event store: {error}") from error
    with connection:
        yield connection


def fold_store(conn: psycopg.Connection[Any], head: int) -> StoreFold:
    """Folds every event up to ``head``: balances, versions, totals, limit violations."""
    accounts: dict[str, FoldedAccount] = {}
    floor_violations: list[str] = []
    floor_violation_count = 0
    running_sum_errors: list[str] = []
    running_sum_error_count = 0
    lines = 0
    for stored in iter_events(conn, up_to_position=head):
        event = decode(stored.event_type, stored.schema_version, stored.payload)
        if isinstance(event, AccountOpened):
            accounts[stored.stream_id] = FoldedAccount(
                kind=event.kind,
                currency=event.currency,
                overdraft_limit_minor=event.overdraft_limit_minor,
                version=stored.stream_version,
            )
            continue
        account = accounts.get(stored.stream_id)
        if account is None:
            running_sum_error_count += 1
            if len(running_sum_errors) < EXAMPLES_MAX:
                running_sum_errors.append(
                    f"position {stored.position}: event for unopened account {stored.stream_id}"
                )
            continue
        account.version = stored.stream_version
        if not isinstance(event, LinePosted):
            continue
        lines += 1
        account.balance_minor += event.signed_amount_minor
        if account.balance_minor != event.balance_after_minor:
            running_sum_error_count += 1
            if len(running_sum_errors) < EXAMPLES_MAX:
                running_sum_errors.append(
                    f"position {stored.position}: {stored.stream_id} balance_after "
                    f"{event.balance_after_minor}, running sum {account.balance_minor}"
                )
        if (
            account.kind is AccountKind.USER
            and event.balance_after_minor < -account.overdraft_limit_minor
        ):
            floor_violation_count += 1
            if len(floor_violations) < EXAMPLES_MAX:
                floor_violations.append(
                    f"position {stored.position}: {stored.stream_id} balance_after "
                    f"{event.balance_after_minor} < -{account.overdraft_limit_minor}"
                )
    totals: dict[str, int] = {}
    for account in accounts.values():
        totals[account.currency] = totals.get(account.currency, 0) + account.balance_minor
    return StoreFold(
        head=head,
        accounts=accounts,
        totals_by_currency=dict(sorted(totals.items())),
        lines=lines,
        floor_violations=floor_violations,
        floor_violation_count=floor_violation_count,
        running_sum_errors=running_sum_errors,
        running_sum_error_count=running_sum_error_count,
    )


def check_conservation(fold: StoreFold) -> CheckResult:
    unbalanced = {c: total for c, total in fold.totals_by_currency.items() if total != 0}
    sums = ", ".join(f"{c} {t:+d}" for c, t in fold.totals_by_currency.items()) or "no money"
    return CheckResult(
        name="currency conserved",
        passed=not unbalanced,
        detail=(
            f"sums over {len(fold.accounts)} accounts (system included) up to position "
            f"{fold.head}: {sums}"
        ),
    )


def check_limits(fold: StoreFold) -> CheckResult:
    passed = fold.floor_violation_count == 0 and fold.running_sum_error_count == 0
    detail = (
        f"{fold.lines} statement lines: {fold.floor_violation_count} below their limit, "
        f"{fold.running_sum_error_count} disagreeing with their stream's running sum"
    )
    examples = fold.floor_violations + fold.running_sum_errors
    if examples:
        detail += "; e.g. " + "; ".join(examples[:3])
    return CheckResult(name="no balance below its limit", passed=passed, detail=detail)


def request_events(
    conn: psycopg.Connection[Any], request_id_prefix: str, after_position: int, head: int
) -> dict[str, tuple[int, int]]:
    """request_id -> (event count, last position) for the run's events.

    Only positions after the run started can hold the run's request_ids, so the scan is
    limited to them (the primary key keeps it a range scan).
    """
    rows = conn.execute(
        """SELECT metadata->>'request_id', count(*), max(position)
           FROM events
           WHERE position > %(after)s AND position <= %(head)s
             AND starts_with(metadata->>'request_id', %(prefix)s)
           GROUP BY 1""",
        {"after": after_position, "head": head, "prefix": request_id_prefix},
    ).fetchall()
    return {str(row[0]): (int(row[1]), int(row[2])) for row in rows}


def check_exactly_once(outcomes: Outcomes, stored: dict[str, tuple[int, int]]) -> CheckResult:
    problems: list[str] = []
    problem_count = 0

    def problem(text: str) -> None:
        nonlocal problem_count
        problem_count += 1
        if len(problems) < EXAMPLES_MAX:
            problems.append(text)

    for request_id, answer in outcomes.accepted.items():
        found = stored.get(request_id)
        if answer.event_count not in EVENT_COUNTS_BY_RPC.get(answer.rpc, {answer.event_count}):
            problem(f"{request_id}: {answer.rpc} answered with {answer.event_count} events")
        if found is None:
            problem(f"{request_id}: accepted at position {answer.position}, not in the store")
        elif found != (answer.event_count, answer.position):
            problem(
                f"{request_id}: answered {answer.event_count} events ending at "
                f"{answer.position}, store has {found[0]} ending at {found[1]}"
            )
    for request_id in outcomes.rejected:
        if request_id in stored:
            problem(f"{request_id}: rejected, yet {stored[request_id][0]} events in the store")
    unknown_present = 0
    for request_id in outcomes.unknown:
        if request_id in stored:
            unknown_present += 1
    known = outcomes.accepted.keys() | outcomes.rejected | outcomes.unknown
    for request_id in stored.keys() - known:
        problem(f"{request_id}: in the store, but never sent by this run")
    if outcomes.replay_mismatch_count:
        problem_count += outcomes.replay_mismatch_count
        problems.extend(outcomes.replay_mismatch_examples[: EXAMPLES_MAX - len(problems)])
    detail = (
        f"{len(outcomes.accepted)} accepted request_ids found with their events, "
        f"{len(outcomes.rejected)} rejected absent, {len(outcomes.unknown)} unknown "
        f"({unknown_present} of them applied), {outcomes.replayed_answers} replayed answers, "
        f"{outcomes.replay_mismatch_count} replay mismatches"
    )
    if problems:
        detail = f"{problem_count} problems: " + "; ".join(problems[:3]) + f" ({detail})"
    return CheckResult(
        name="every accepted request exactly once", passed=not problems, detail=detail
    )


# --- the read side -------------------------------------------------------------------


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
    fold: StoreFold,
    deadline_monotonic: float,
    rpc_timeout_seconds: float,
) -> tuple[int, list[str], int, str | None]:
    """GetAccount for every folded account: (checked, examples, mismatches, wait error)."""
    examples: list[str] = []
    mismatches = 0
    checked = 0
    async with aio_channel(query_addr, security_=security) as channel:
        stub = queries_pb2_grpc.QueryServiceStub(channel)  # type: ignore[no-untyped-call]
        if not fold.accounts:
            return 0, [], 0, None
        first = next(iter(fold.accounts))
        waited = await _wait_for_head(
            stub, first, fold.head, deadline_monotonic, rpc_timeout_seconds
        )
        if waited is not None:
            return 0, [], 0, waited
        semaphore = asyncio.Semaphore(GET_ACCOUNT_CONCURRENCY)

        async def compare(account_id: str, want: FoldedAccount) -> None:
            nonlocal mismatches, checked
            request = queries_pb2.GetAccountRequest(account_id=account_id, min_position=fold.head)
            async with semaphore:
                try:
                    got = await stub.GetAccount(request, timeout=rpc_timeout_seconds)
                except grpc.aio.AioRpcError as error:
                    mismatches += 1
                    if len(examples) < EXAMPLES_MAX:
                        examples.append(f"{account_id}: {error.code().name} {error.details()}")
                    return
            checked += 1
            actual = (got.balance.minor_units, got.version, got.currency)
            expected = (want.balance_minor, want.version, want.currency)
            if actual != expected:
                mismatches += 1
                if len(examples) < EXAMPLES_MAX:
                    examples.append(
                        f"{account_id}: (balance, version, currency) {actual}, "
                        f"event store {expected}"
                    )

        await asyncio.gather(*(compare(a, want) for a, want in fold.accounts.items()))
    return checked, examples, mismatches, None


def check_projection(
    conn: psycopg.Connection[Any],
    fold: StoreFold,
    *,
    query_addr: str,
    security: ClientSecurity,
    es_url: str,
    index_prefix: str,
    wait_seconds_max: float,
    rpc_timeout_seconds: float,
) -> CheckResult:
    deadline = time.monotonic() + wait_seconds_max
    checked, examples, mismatches, wait_error = asyncio.run(
        _compare_accounts(query_addr, security, fold, deadline, rpc_timeout_seconds)
    )
    if wait_error is not None:
        return CheckResult(name="projection equals recompute", passed=False, detail=wait_error)
    passed = mismatches == 0
    detail = (
        f"GetAccount at position {fold.head}: {checked} accounts, {mismatches} differ from "
        f"the event store fold (balance, version)"
    )
    if examples:
        detail += "; e.g. " + "; ".join(examples[:3])
    if es_url:
        reconciled, reconcile_detail = _reconcile(
            conn, es_url, index_prefix, max(1.0, deadline - time.monotonic())
        )
        passed = passed and reconciled
        detail += f"; chronos reconcile: {reconcile_detail}"
    else:
        detail += "; chronos reconcile skipped (no --es-url)"
    return CheckResult(name="projection equals recompute", passed=passed, detail=detail)


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


def check_all(
    *,
    pg_dsn: str,
    outcomes: Outcomes,
    request_id_prefix: str,
    start_position: int,
    query_addr: str,
    security: ClientSecurity,
    es_url: str,
    index_prefix: str,
    wait_seconds_max: float,
    rpc_timeout_seconds: float,
) -> list[CheckResult]:
    """Runs the four checks (see the module docstring); one result each, in order.
    ``security`` secures the calls to the query service at ``query_addr``."""
    with connect(pg_dsn) as conn:
        head = head_position(conn)
        fold = fold_store(conn, head)
        stored = request_events(conn, request_id_prefix, start_position, head)
        return [
            check_conservation(fold),
            check_limits(fold),
            check_exactly_once(outcomes, stored),
            check_projection(
                conn,
                fold,
                query_addr=query_addr,
                security=security,
                es_url=es_url,
                index_prefix=index_prefix,
                wait_seconds_max=wait_seconds_max,
                rpc_timeout_seconds=rpc_timeout_seconds,
            ),
        ]


def start_position(pg_dsn: str) -> int:
    """The event store's head before the run: the run's events all come after it."""
    with connect(pg_dsn) as conn:
        return head_position(conn)

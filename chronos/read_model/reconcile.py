"""``chronos reconcile``: recompute every balance from the event store and compare.

The event store is the truth. Reconcile folds it (``decode`` + signed amounts, checking
each line's ``balance_after``), checks that every currency sums to zero over all
accounts (system accounts included: double entry), waits (bounded) until the
projection's visible position reaches the store's head so that in-flight events are not
mistaken for drift, and then compares every account document in Elasticsearch with the
fold: balance, status, and documents missing on either side.

It runs against a live ledger: while it reads, commands keep committing and the
projector keeps applying them, so a document may already reflect events after the head
the fold stopped at (or belong to an account opened since). Such a document is not
drift: an account that differs is checked again against its own stream, folded up to
the stream version the document says it reflects. A document that is wrong as of its
own version, or behind the head, stays a drift.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from elasticsearch import ApiError, Elasticsearch, TransportError

from chronos.domain.events import (
    AccountClosed,
    AccountFrozen,
    AccountOpened,
    AccountUnfrozen,
    LinePosted,
)
from chronos.domain.ledger import AccountStatus
from chronos.errors import ChronosError
from chronos.event_store.mapper import StoredEvent, decode
from chronos.event_store.reader import head_position, iter_events, stream_events
from chronos.read_model.indices import IndexNames, translate
from chronos.read_model.watermark import WatermarkReader

_SCAN_PAGE_SIZE = 5000
# Accounts whose documents moved on during a run that are read back from their streams.
_RECHECKS_MAX = 100_000


class ProjectionBehind(ChronosError):
    """The projection did not reach the event store's head within the wait."""


@dataclass(slots=True)
class ExpectedAccount:
    currency: str
    balance_minor: int = 0
    status: str = AccountStatus.ACTIVE.value
    # The stream version of the last event folded.
    version: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Drift:
    """One difference between the event store and the read model."""

    account_id: str
    currency: str
    # "balance", "status", "missing" (no document) or "unexpected" (no stream).
    field: str
    expected: str
    actual: str
    difference_minor: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ReconcileReport:
    head_position: int
    visible_position: int
    accounts_checked: int
    drifts: tuple[Drift, ...]
    # Currencies whose balances over all accounts do not sum to zero.
    unbalanced_currencies: dict[str, int] = field(default_factory=dict)
    # Lines whose balance_after disagrees with the fold of their stream.
    store_errors: tuple[str, ...] = ()
    # Accounts whose documents had moved past the head during the run, compared again
    # against their own streams.
    rechecked_accounts: int = 0

    @property
    def ok(self) -> bool:
        return not self.drifts and not self.unbalanced_currencies and not self.store_errors


def fold_store(
    conn: psycopg.Connection[Any], up_to_position: int
) -> tuple[dict[str, ExpectedAccount], dict[str, int], list[str]]:
    """Folds the event store up to ``up_to_position``.

    Returns:
        Each account's expected state, each currency's sum over all accounts, and the
        lines whose ``balance_after_minor`` disagrees with the running sum.
    """
    accounts: dict[str, ExpectedAccount] = {}
    errors: list[str] = []
    for stored in iter_events(conn, up_to_position=up_to_position):
        _fold_event(accounts, stored, errors)
    totals: dict[str, int] = {}
    for account in accounts.values():
        totals[account.currency] = totals.get(account.currency, 0) + account.balance_minor
    return accounts, totals, errors


def _fold_event(
    accounts: dict[str, ExpectedAccount], stored: StoredEvent, errors: list[str]
) -> None:
    """Applies one stored event to ``accounts``; inconsistencies go to ``errors``."""
    event = decode(stored.event_type, stored.schema_version, stored.payload)
    if isinstance(event, AccountOpened):
        accounts[stored.stream_id] = ExpectedAccount(
            currency=event.currency, version=stored.stream_version
        )
        return
    account = accounts.get(stored.stream_id)
    if account is None:
        errors.append(f"position {stored.position}: event for unopened {stored.stream_id}")
        return
    account.version = stored.stream_version
    if isinstance(event, LinePosted):
        account.balance_minor += event.signed_amount_minor
        if account.balance_minor != event.balance_after_minor:
            errors.append(
                f"position {stored.position}: {stored.stream_id} balance_after "
                f"{event.balance_after_minor}, running sum {account.balance_minor}"
            )
    elif isinstance(event, AccountFrozen):
        account.status = AccountStatus.FROZEN.value
    elif isinstance(event, AccountUnfrozen):
        account.status = AccountStatus.ACTIVE.value
    elif isinstance(event, AccountClosed):
        account.status = AccountStatus.CLOSED.value


def read_account_documents(es: Elasticsearch, names: IndexNames) -> dict[str, dict[str, Any]]:
    """Every account document (after a refresh), keyed by account id."""
    documents: dict[str, dict[str, Any]] = {}
    try:
        es.indices.refresh(index=names.accounts)
        search_after: list[Any] | None = None
        while True:
            response = es.search(
                index=names.accounts,
                size=_SCAN_PAGE_SIZE,
                sort=[{"account_id": "asc"}],
                source_includes=["account_id", "currency", "balance_minor", "status", "version"],
                search_after=search_after,
                track_total_hits=False,
            )
            hits = response["hits"]["hits"]
            for hit in hits:
                documents[hit["_id"]] = hit["_source"]
            if len(hits) < _SCAN_PAGE_SIZE:
                return documents
            search_after = hits[-1]["sort"]
    except (ApiError, TransportError) as error:
        raise translate(error, "reading account documents") from error


def wait_for_projection(
    es: Elasticsearch,
    names: IndexNames,
    position: int,
    *,
    wait_seconds: float,
    poll_seconds: float = 0.1,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Waits until the visible position is >= ``position``; returns it.

    Raises:
        ProjectionBehind: not reached within ``wait_seconds``.
    """
    reader = WatermarkReader(es, names)
    deadline = time.monotonic() + wait_seconds
    while True:
        visible = reader.read().visible_position
        if visible >= position:
            return visible
        if time.monotonic() >= deadline:
            raise ProjectionBehind(
                f"the projection shows positions up to {visible}, the event store's head is "
                f"{position}; still behind after {wait_seconds:.1f} s (is the projector running?)"
            )
        sleep(poll_seconds)


def reconcile(
    conn: psycopg.Connection[Any],
    es: Elasticsearch,
    names: IndexNames,
    *,
    wait_seconds: float,
) -> ReconcileReport:
    """Compares the read model with the event store (see the module docstring).

    Raises:
        ProjectionBehind: the projection did not reach the head in ``wait_seconds``.
        ReadModelError, ReadModelUnavailable: Elasticsearch failed.
    """
    head = head_position(conn)
    expected, totals, store_errors = fold_store(conn, head)
    visible = wait_for_projection(es, names, head, wait_seconds=wait_seconds)
    actual = read_account_documents(es, names)
    drifts = compare(expected, actual, sorted(set(expected) | set(actual)))
    rechecked = 0
    if drifts:
        drifts, rechecked = _recheck_moved_on(conn, expected, actual, drifts)
    return ReconcileReport(
        head_position=head,
        visible_position=visible,
        accounts_checked=len(expected),
        drifts=tuple(drifts),
        unbalanced_currencies={c: total for c, total in sorted(totals.items()) if total != 0},
        store_errors=tuple(store_errors),
        rechecked_accounts=rechecked,
    )


def compare(
    expected: dict[str, ExpectedAccount],
    actual: dict[str, dict[str, Any]],
    account_ids: list[str],
) -> list[Drift]:
    """The differences between the fold and the documents, for ``account_ids`` in order."""
    drifts: list[Drift] = []
    for account_id in account_ids:
        want = expected.get(account_id)
        document = actual.get(account_id)
        if want is None:
            assert document is not None, account_id
            drifts.append(
                Drift(
                    account_id=account_id,
                    currency=str(document.get("currency", "")),
                    field="unexpected",
                    expected="-",
                    actual=str(document.get("balance_minor")),
                    difference_minor=int(document.get("balance_minor", 0)),
                )
            )
            continue
        if document is None:
            drifts.append(
                Drift(
                    account_id=account_id,
                    currency=want.currency,
                    field="missing",
                    expected=str(want.balance_minor),
                    actual="-",
                    difference_minor=-want.balance_minor,
                )
            )
            continue
        balance = int(document["balance_minor"])
        if balance != want.balance_minor:
            drifts.append(
                Drift(
                    account_id=account_id,
                    currency=want.currency,
                    field="balance",
                    expected=str(want.balance_minor),
                    actual=str(balance),
                    difference_minor=balance - want.balance_minor,
                )
            )
        if document["status"] != want.status:
            drifts.append(
                Drift(
                    account_id=account_id,
                    currency=want.currency,
                    field="status",
                    expected=want.status,
                    actual=str(document["status"]),
                )
            )
    return drifts


def _recheck_moved_on(
    conn: psycopg.Connection[Any],
    expected: dict[str, ExpectedAccount],
    actual: dict[str, dict[str, Any]],
    drifts: list[Drift],
) -> tuple[list[Drift], int]:
    """Compares again, against its own stream, each drifted account whose document
    reflects events committed after the fold's head (see the module docstring).

    At most ``_RECHECKS_MAX`` accounts are read back (one query each); beyond that the
    drifts stand as found.

    Returns:
        The drifts that remain, and how many accounts were compared again.
    """
    rechecked: dict[str, ExpectedAccount] = {}
    for account_id in dict.fromkeys(drift.account_id for drift in drifts):
        if len(rechecked) == _RECHECKS_MAX:
            break
        document = actual.get(account_id)
        want = expected.get(account_id)
        if document is None or "version" not in document:
            continue
        document_version = int(document["version"])
        if want is not None and document_version <= want.version:
            # The document is not ahead of the fold: the difference is real.
            continue
        refold: dict[str, ExpectedAccount] = {}
        errors: list[str] = []
        for stored in stream_events(conn, account_id, up_to_version=document_version):
            _fold_event(refold, stored, errors)
        if account_id in refold and refold[account_id].version == document_version:
            rechecked[account_id] = refold[account_id]
    if not rechecked:
        return drifts, 0
    kept = [drift for drift in drifts if drift.account_id not in rechecked]
    return kept + compare(rechecked, actual, sorted(rechecked)), len(rechecked)


def format_report(report: ReconcileReport) -> str:
    """The human-readable report ``chronos reconcile`` prints."""
    lines = [
        f"event store head: {report.head_position}; projection visible up to: "
        f"{report.visible_position}; accounts checked: {report.accounts_checked}"
    ]
    if report.rechecked_accounts:
        lines.append(
            f"documents that moved past the head while reading, compared with their own "
            f"streams: {report.rechecked_accounts}"
        )
    if report.drifts:
        lines.append(
            f"{'ACCOUNT':36}  {'CURRENCY':8}  {'FIELD':10}  {'EXPECTED':>20}  "
            f"{'ACTUAL':>20}  {'DIFFERENCE':>20}"
        )
        for drift in report.drifts:
            difference = "-" if drift.difference_minor is None else f"{drift.difference_minor:+d}"
            lines.append(
                f"{drift.account_id:36}  {drift.currency:8}  {drift.field:10}  "
                f"{drift.expected:>20}  {drift.actual:>20}  {difference:>20}"
            )
    for currency, total in report.unbalanced_currencies.items():
        lines.append(f"currency {currency} does not sum to zero over the event store: {total:+d}")
    lines.extend(f"event store inconsistency: {error}" for error in report.store_errors)
    if report.ok:
        lines.append("no drift")
    else:
        lines.append(
            f"DRIFT: {len(report.drifts)} differences, "
            f"{len(report.unbalanced_currencies)} unbalanced currencies, "
            f"{len(report.store_errors)} store inconsistencies"
        )
    return "\n".join(lines)

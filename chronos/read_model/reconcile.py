"""``chronos reconcile``: recompute every balance from the event store and compare.

The event store is the truth. Reconcile folds it (``decode`` + signed amounts, checking
each line's ``balance_after``), checks that every currency sums to zero over all
accounts (system accounts included: double entry), waits (bounded) until the
projection's visible position reaches the store's head so that in-flight events are not
mistaken for drift, and then compares every account document in Elasticsearch with the
fold, field by field (the fold is the projector's own, ``chronos.read_model.documents``),
and documents missing on either side. It also reports user accounts opened on a system
account's id (possible before ids were compared in canonical form).

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

from chronos.domain.events import AccountKind, LinePosted
from chronos.domain.ledger import SYSTEM_ACCOUNT_IDS
from chronos.errors import ChronosError
from chronos.event_store.mapper import StoredEvent
from chronos.event_store.reader import head_position, iter_events, stream_events
from chronos.read_model.documents import AccountDocument, apply_event, record_from_stored
from chronos.read_model.event_reconcile import EventLogReport, check_event_log, format_event_log
from chronos.read_model.indices import IndexNames, translate
from chronos.read_model.pending_check import check_pending
from chronos.read_model.watermark import WatermarkReader

_SCAN_PAGE_SIZE = 5000
# Accounts whose documents moved on during a run that are read back from their streams.
_RECHECKS_MAX = 100_000


class ProjectionBehind(ChronosError):
    """The projection did not reach the event store's head within the wait."""


# The fields compared, in the order drifts are listed; the first two keep their short
# names in the report.
_FIELD_LABELS = {"balance_minor": "balance", "status": "status"}


@dataclass(frozen=True, slots=True, kw_only=True)
class Drift:
    """One difference between the event store and the read model."""

    account_id: str
    currency: str
    # "balance", "status", any other document field, "missing" (no document) or
    # "unexpected" (no stream).
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
    # (account id, currency) of user accounts whose id is a system account's.
    system_id_takeovers: tuple[tuple[str, str], ...] = ()
    # The events index compared with the event store (None: not checked).
    event_log: EventLogReport | None = None

    @property
    def ok(self) -> bool:
        return not (
            (self.event_log is not None and not self.event_log.ok)
            or self.drifts
            or self.unbalanced_currencies
            or self.store_errors
            or self.system_id_takeovers
        )


def fold_store(
    conn: psycopg.Connection[Any], up_to_position: int
) -> tuple[dict[str, AccountDocument], dict[str, int], list[str]]:
    """Folds the event store up to ``up_to_position``.

    Returns:
        Each account's expected document, each currency's sum over all accounts, and
        the inconsistencies of the store itself (a line whose ``balance_after_minor``
        disagrees with the running sum, an event of an account never opened).
    """
    accounts: dict[str, AccountDocument] = {}
    sums: dict[str, int] = {}
    pending: dict[str, tuple[int, int]] = {}
    errors: list[str] = []
    for stored in iter_events(conn, up_to_position=up_to_position):
        _fold_event(accounts, sums, stored, errors, pending)
    totals: dict[str, int] = {}
    for account in accounts.values():
        totals[account.currency] = totals.get(account.currency, 0) + sums[account.account_id]
    return accounts, totals, errors


def _fold_event(
    accounts: dict[str, AccountDocument],
    sums: dict[str, int],
    stored: StoredEvent,
    errors: list[str],
    pending: dict[str, tuple[int, int]],
) -> None:
    """Applies one stored event; inconsistencies go to ``errors``."""
    record = record_from_stored(stored)
    document, _ = apply_event(accounts.get(stored.stream_id), record)
    if document is None:
        errors.append(f"position {stored.position}: event for unopened {stored.stream_id}")
        return
    accounts[stored.stream_id] = document
    event = record.event
    if isinstance(event, LinePosted):
        running = sums.get(stored.stream_id, 0) + event.signed_amount_minor
        sums[stored.stream_id] = running
        if running != event.balance_after_minor:
            errors.append(
                f"position {stored.position}: {stored.stream_id} balance_after "
                f"{event.balance_after_minor}, running sum {running}"
            )
    else:
        sums.setdefault(stored.stream_id, 0)
    pending_error = check_pending(pending, stored.stream_id, event)
    if pending_error:
        errors.append(f"position {stored.position}: {pending_error}")


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
    takeovers = tuple(
        (account.account_id, account.currency)
        for account in expected.values()
        if account.kind == AccountKind.USER.value and account.account_id in SYSTEM_ACCOUNT_IDS
    )
    rechecked = 0
    if drifts:
        drifts, rechecked = _recheck_moved_on(conn, expected, actual, drifts)
    event_log = check_event_log(conn, es, names, head)
    return ReconcileReport(
        head_position=head,
        visible_position=visible,
        accounts_checked=len(expected),
        drifts=tuple(drifts),
        unbalanced_currencies={c: total for c, total in sorted(totals.items()) if total != 0},
        store_errors=tuple(store_errors),
        rechecked_accounts=rechecked,
        system_id_takeovers=takeovers,
        event_log=event_log,
    )


def compare(
    expected: dict[str, AccountDocument],
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
        wanted = want.to_source()
        for name in sorted(wanted, key=lambda n: (n not in _FIELD_LABELS, n)):
            value = document.get(name)
            if value == wanted[name]:
                continue
            difference = None
            if name == "balance_minor" and isinstance(value, int):
                difference = value - want.balance_minor
            drifts.append(
                Drift(
                    account_id=account_id,
                    currency=want.currency,
                    field=_FIELD_LABELS.get(name, name),
                    expected=_shown(wanted[name]),
                    actual=_shown(value),
                    difference_minor=difference,
                )
            )
    return drifts


def _shown(value: Any) -> str:
    """A field's value in one token of the report (no spaces: rows split on them)."""
    if isinstance(value, dict):
        value = ",".join(f"{k}={v}" for k, v in sorted(value.items())) or "{}"
    return str(value).replace(" ", "_") or "-"


def _recheck_moved_on(
    conn: psycopg.Connection[Any],
    expected: dict[str, AccountDocument],
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
    rechecked: dict[str, AccountDocument] = {}
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
        refold: dict[str, AccountDocument] = {}
        sums: dict[str, int] = {}
        errors: list[str] = []
        for stored in stream_events(conn, account_id, up_to_version=document_version):
            _fold_event(refold, sums, stored, errors, {})
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
    lines.extend(
        f"user account on a system account id: {account_id} ({currency})"
        for account_id, currency in report.system_id_takeovers
    )
    if report.event_log is not None:
        lines.extend(format_event_log(report.event_log))
    if report.ok:
        lines.append("no drift")
    else:
        lines.append(
            f"DRIFT: {len(report.drifts)} differences, "
            f"{len(report.unbalanced_currencies)} unbalanced currencies, "
            f"{len(report.store_errors)} store inconsistencies, "
            f"{len(report.system_id_takeovers)} user accounts on system ids, "
            f"{0 if report.event_log is None else report.event_log.differences_total} "
            f"event log differences"
        )
    return "\n".join(lines)

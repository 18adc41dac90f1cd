"""Rebuild and reconcile against real PostgreSQL, Kafka and Elasticsearch.

The event store is written by the real ``LedgerWriter`` in a fresh database; a stand-in
poller publishes its events; the real projector builds the live read model.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from elasticsearch import Elasticsearch

from chronos import cli
from chronos.domain import ledger as ledger_module
from chronos.domain.commands import (
    Deposit,
    FreezeAccount,
    JournalLine,
    Money,
    OpenAccount,
    PostJournalEntry,
    Side,
    TransferFunds,
    UnfreezeAccount,
    Withdraw,
)
from chronos.domain.ledger import system_account_id
from chronos.read_model import rebuild as rebuild_module
from chronos.read_model import reconcile as reconcile_module
from chronos.read_model.indices import IndexNames, alias_targets
from chronos.read_model.rebuild import rebuild
from chronos.read_model.watermark import APPLIED, WatermarkReader
from tests.integration.readside_support import (
    BackgroundProjector,
    FakePoller,
    all_sources,
    build_projector,
    execute,
    fresh_database,
    project_until_visible,
    projector_config,
    stored_events,
    unique,
)
from tests.integration.test_projector import consume_events

ACCOUNTS = [str(uuid.UUID(int=0xACC0_0000_0000_4000_8000_0000_0000_0000 + i)) for i in range(1, 5)]


def rid() -> str:
    return uuid.uuid4().hex


def history() -> list[Any]:
    a, b, c, d = ACCOUNTS
    return [
        OpenAccount(request_id=rid(), account_id=a, owner_name="Ada Lovelace", currency="EUR"),
        OpenAccount(
            request_id=rid(),
            account_id=b,
            owner_name="Bob Marley",
            currency="EUR",
            overdraft_limit_minor=1000,
            metadata=(("segment", "retail"),),
        ),
        OpenAccount(request_id=rid(), account_id=c, owner_name="Chen Wei", currency="USD"),
        OpenAccount(request_id=rid(), account_id=d, owner_name="Dora Explorer", currency="EUR"),
        Deposit(request_id=rid(), account_id=a, amount=Money(currency="EUR", minor_units=10_000)),
        Deposit(request_id=rid(), account_id=c, amount=Money(currency="USD", minor_units=500)),
        TransferFunds(
            request_id=rid(),
            from_account_id=a,
            to_account_id=b,
            amount=Money(currency="EUR", minor_units=2_500),
            description="rent",
            metadata=(("order_id", "A-17"),),
        ),
        TransferFunds(
            request_id=rid(),
            from_account_id=b,
            to_account_id=d,
            amount=Money(currency="EUR", minor_units=3_000),
        ),
        FreezeAccount(request_id=rid(), account_id=d, reason="kyc"),
        Withdraw(request_id=rid(), account_id=c, amount=Money(currency="USD", minor_units=200)),
        PostJournalEntry(
            request_id=rid(),
            lines=(
                JournalLine(
                    account_id=a, amount=Money(currency="EUR", minor_units=100), side=Side.DEBIT
                ),
                JournalLine(
                    account_id=d, amount=Money(currency="EUR", minor_units=100), side=Side.CREDIT
                ),
            ),
            description="fee refund",
        ),
        UnfreezeAccount(request_id=rid(), account_id=d, reason="ok"),
    ]


def more_history(count: int) -> list[Any]:
    a, b, _, d = ACCOUNTS
    return [
        TransferFunds(
            request_id=rid(),
            from_account_id=a if i % 2 else d,
            to_account_id=b,
            amount=Money(currency="EUR", minor_units=1 + i),
        )
        for i in range(count)
    ]


@pytest.fixture
def dsn(pg_dsn: str) -> Iterator[str]:
    with fresh_database(pg_dsn) as value:
        yield value


def read_model(es: Elasticsearch, names: IndexNames) -> tuple[dict[str, Any], dict[str, Any]]:
    return all_sources(es, names.accounts), all_sources(es, names.transactions)


def head(dsn: str) -> int:
    events = stored_events(dsn)
    return events[-1].position if events else 0


def test_rebuild_equals_the_live_projection_and_the_projector_follows_the_swap(
    es_client: Elasticsearch,
    kafka_bootstrap: str,
    es_url: str,
    dsn: str,
    names: IndexNames,
    topic: str,
) -> None:
    execute(dsn, history())
    poller = FakePoller(kafka_bootstrap, topic)
    poller.publish(stored_events(dsn))
    projector = build_projector(
        es_client,
        projector_config(kafka_bootstrap, es_url, topic, names, unique("g")),
        pg_dsn=dsn,
    )
    try:
        project_until_visible(projector, es_client, names, head(dsn))
        live_accounts, live_lines = read_model(es_client, names)
        assert alias_targets(es_client, names.accounts) == [names.accounts_version(1)]

        with psycopg.connect(dsn, autocommit=True) as conn:
            report = rebuild(conn, es_client, names, batch_size=7)

        assert report.new_version == 2
        assert report.events == head(dsn)
        # Every data index of the old version, the holds' and the event log's included.
        assert report.deleted == (
            names.accounts_version(1),
            names.transactions_version(1),
            names.pending_version(1),
            names.events_version(1),
        )
        assert alias_targets(es_client, names.accounts) == [names.accounts_version(2)]
        assert alias_targets(es_client, names.transactions) == [names.transactions_version(2)]
        assert not es_client.indices.exists(index=names.accounts_version(1))
        rebuilt_accounts, rebuilt_lines = read_model(es_client, names)
        # Four user accounts and the EUR and USD system accounts; 6 two-line entries.
        assert len(live_accounts) == 6 and len(live_lines) == 12
        assert rebuilt_accounts == live_accounts
        assert rebuilt_lines == live_lines
        tagged = [line for line in live_lines.values() if "metadata" in line]
        assert [line["metadata"] for line in tagged] == [{"order_id": "A-17"}] * 2

        # The live projector writes through the aliases, so it continues in v2.
        position_before = head(dsn)
        execute(dsn, more_history(3))
        poller.publish(stored_events(dsn, after_position=position_before))
        project_until_visible(projector, es_client, names, head(dsn))
    finally:
        projector.close()
    accounts = all_sources(es_client, names.accounts_version(2))
    b = ACCOUNTS[1]
    assert accounts[b]["balance_minor"] == live_accounts[b]["balance_minor"] + 1 + 2 + 3
    assert len(all_sources(es_client, names.transactions_version(2))) == 12 + 6


def test_rebuild_keeps_old_versions_on_request(
    es_client: Elasticsearch, dsn: str, names: IndexNames
) -> None:
    execute(dsn, history()[:5])
    with psycopg.connect(dsn, autocommit=True) as conn:
        first = rebuild(conn, es_client, names)
        second = rebuild(conn, es_client, names, keep_old=True)
    assert (first.new_version, second.new_version) == (2, 3)
    assert second.deleted == ()
    assert es_client.indices.exists(index=names.accounts_version(2))
    assert alias_targets(es_client, names.accounts) == [names.accounts_version(3)]
    accounts = all_sources(es_client, names.accounts)
    assert accounts[ACCOUNTS[0]]["balance_minor"] == 10_000


def test_rebuild_while_the_ledger_and_the_projector_are_busy(
    es_client: Elasticsearch,
    kafka_bootstrap: str,
    es_url: str,
    dsn: str,
    names: IndexNames,
    topic: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with busy_ledger(es_client, kafka_bootstrap, es_url, dsn, names, topic) as published:
        with psycopg.connect(dsn, autocommit=True) as conn:
            for _ in range(3):
                rebuild(conn, es_client, names, batch_size=10)
        assert len(published) > 1, "no event was committed during the rebuilds"
        # Every event, including those committed mid-rebuild, reaches the final version.
        code = run_reconcile(monkeypatch, dsn, es_url, names)
    assert code == 0, capsys.readouterr().out
    assert "no drift" in capsys.readouterr().out


@contextlib.contextmanager
def busy_ledger(
    es: Elasticsearch,
    kafka_bootstrap: str,
    es_url: str,
    dsn: str,
    names: IndexNames,
    topic: str,
) -> Iterator[list[int]]:
    """The history, then transfers committed and published in a loop while a projector
    applies them, until the block ends; yields the heads published so far."""
    execute(dsn, history())
    poller = FakePoller(kafka_bootstrap, topic)
    poller.publish(stored_events(dsn))
    published = [head(dsn)]
    stop_writing = threading.Event()

    def keep_writing() -> None:
        while not stop_writing.is_set():
            execute(dsn, more_history(3))
            poller.publish(stored_events(dsn, after_position=published[-1]))
            published.append(head(dsn))

    config = projector_config(kafka_bootstrap, es_url, topic, names, unique("g"))
    with BackgroundProjector(es, config, pg_dsn=dsn):
        writer = threading.Thread(target=keep_writing)
        writer.start()
        try:
            yield published
        finally:
            stop_writing.set()
            writer.join(timeout=120)


def project_everything(
    es: Elasticsearch, kafka_bootstrap: str, es_url: str, dsn: str, names: IndexNames, topic: str
) -> None:
    """Publishes the whole store and projects it until all of it is visible."""
    FakePoller(kafka_bootstrap, topic).publish(stored_events(dsn))
    projector = build_projector(
        es, projector_config(kafka_bootstrap, es_url, topic, names, unique("g")), pg_dsn=dsn
    )
    try:
        project_until_visible(projector, es, names, head(dsn))
    finally:
        projector.close()


def run_reconcile(
    monkeypatch: pytest.MonkeyPatch,
    dsn: str,
    es_url: str,
    names: IndexNames,
    *,
    wait_seconds: float = 30,
) -> int:
    monkeypatch.setenv("CHRONOS_PG_DSN", dsn)
    monkeypatch.setenv("CHRONOS_ES_URL", es_url)
    return cli.main(
        ["reconcile", "--index-prefix", names.prefix, "--wait-seconds", f"{wait_seconds:g}"]
    )


def test_reconcile_finds_no_drift_then_reports_a_tampered_balance(
    es_client: Elasticsearch,
    kafka_bootstrap: str,
    es_url: str,
    dsn: str,
    names: IndexNames,
    topic: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    execute(dsn, history())
    project_everything(es_client, kafka_bootstrap, es_url, dsn, names, topic)

    assert run_reconcile(monkeypatch, dsn, es_url, names) == 0
    output = capsys.readouterr().out
    assert "no drift" in output and "accounts checked: 6" in output

    victim = ACCOUNTS[1]
    document = es_client.get(index=names.accounts, id=victim)
    source = dict(document["_source"])
    expected = source["balance_minor"]
    es_client.index(
        index=names.accounts,
        id=victim,
        document={**source, "balance_minor": expected + 4_242, "version": source["version"] + 1},
        version=source["version"] + 1,
        version_type="external",
        refresh=True,
    )

    assert run_reconcile(monkeypatch, dsn, es_url, names) == 1
    output = capsys.readouterr().out
    rows = [row.split() for row in output.splitlines() if row.startswith(victim)]
    version = source["version"]
    assert rows == [
        [victim, "EUR", "balance", str(expected), str(expected + 4_242), "+4242"],
        [victim, "EUR", "version", str(version), str(version + 1), "-"],
    ]
    assert "no drift" not in output
    # Only the tampered account differs; the store itself is consistent.
    assert "DRIFT: 2 differences, 0 unbalanced currencies, 0 store inconsistencies" in output


def test_reconcile_refuses_to_compare_while_the_projection_is_behind(
    es_client: Elasticsearch,
    es_url: str,
    dsn: str,
    names: IndexNames,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    execute(dsn, history()[:5])
    with psycopg.connect(dsn, autocommit=True) as conn:
        rebuild(conn, es_client, names)  # documents, but no projector: no watermark
    assert run_reconcile(monkeypatch, dsn, es_url, names, wait_seconds=0.5) == 2
    assert "behind" in capsys.readouterr().err


def test_reconcile_checks_documents_that_moved_past_the_head_against_their_streams(
    es_client: Elasticsearch,
    kafka_bootstrap: str,
    es_url: str,
    dsn: str,
    names: IndexNames,
    topic: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The race of a live ledger, made deterministic: reconcile folds the store up to a
    # head read before transfers that the projector has applied since.
    execute(dsn, history())
    old_head = head(dsn)
    late = str(uuid.UUID(int=0xACC0_0000_0000_4000_8000_0000_0000_0099))
    execute(
        dsn,
        [
            *more_history(6),
            OpenAccount(request_id=rid(), account_id=late, owner_name="Late", currency="EUR"),
            Deposit(request_id=rid(), account_id=late, amount=Money(currency="EUR", minor_units=7)),
        ],
    )
    project_everything(es_client, kafka_bootstrap, es_url, dsn, names, topic)
    monkeypatch.setattr(reconcile_module, "head_position", lambda conn: old_head)

    assert run_reconcile(monkeypatch, dsn, es_url, names) == 0
    output = capsys.readouterr().out
    assert f"event store head: {old_head};" in output
    # a, b and d took part in the later transfers, `late` was opened after the head and
    # its deposit debited the EUR system account: five documents are ahead of the fold.
    assert "compared with their own streams: 5" in output
    assert "no drift" in output

    # Still caught when ahead of the fold: a document wrong as of its own version (a), and
    # one claiming a version its stream never reached (d).
    a, _, _, d = ACCOUNTS
    source_a = dict(es_client.get(index=names.accounts, id=a)["_source"])
    tamper(es_client, names, a, {**source_a, "balance_minor": source_a["balance_minor"] + 7})
    source_d = dict(es_client.get(index=names.accounts, id=d)["_source"])
    tamper(es_client, names, d, {**source_d, "version": source_d["version"] + 1})

    assert run_reconcile(monkeypatch, dsn, es_url, names) == 1
    output = capsys.readouterr().out
    rows = [row.split() for row in output.splitlines() if row[:36] in (a, d)]
    assert [row for row in rows if row[0] == a] == [
        [
            a,
            "EUR",
            "balance",
            str(source_a["balance_minor"]),
            str(source_a["balance_minor"] + 7),
            "+7",
        ]
    ]
    # d's document is compared with the fold at the old head, where d had less.
    fields_d = [row[2] for row in rows if row[0] == d]
    assert fields_d[0] == "balance" and "version" in fields_d
    assert f"DRIFT: {1 + len(fields_d)} differences" in output


def tamper(es: Elasticsearch, names: IndexNames, account_id: str, source: dict[str, Any]) -> None:
    current = es.get(index=names.accounts, id=account_id)
    es.index(
        index=names.accounts,
        id=account_id,
        document=source,
        version=int(current["_version"]) + 1,
        version_type="external",
        refresh=True,
    )


def test_reconcile_finds_no_drift_while_the_ledger_and_the_projector_are_busy(
    es_client: Elasticsearch,
    kafka_bootstrap: str,
    es_url: str,
    dsn: str,
    names: IndexNames,
    topic: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with busy_ledger(es_client, kafka_bootstrap, es_url, dsn, names, topic) as published:
        codes = [run_reconcile(monkeypatch, dsn, es_url, names) for _ in range(5)]
    output = capsys.readouterr().out
    assert len(published) > 5, "too few commits while reconcile ran"
    assert codes == [0] * 5, output
    assert output.count("no drift") == 5


def test_reconcile_compares_every_field_of_a_document(
    es_client: Elasticsearch,
    kafka_bootstrap: str,
    es_url: str,
    dsn: str,
    names: IndexNames,
    topic: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A document that lost a status change or any other field, at the right version and
    # balance, is drift too.
    execute(dsn, history())
    project_everything(es_client, kafka_bootstrap, es_url, dsn, names, topic)
    _, b, _, d = ACCOUNTS
    source_b = dict(es_client.get(index=names.accounts, id=b)["_source"])
    tamper(es_client, names, b, {**source_b, "overdraft_limit_minor": 0, "metadata": {}})
    source_d = dict(es_client.get(index=names.accounts, id=d)["_source"])
    tamper(es_client, names, d, {**source_d, "owner_name": "Someone Else"})

    assert run_reconcile(monkeypatch, dsn, es_url, names) == 1
    output = capsys.readouterr().out
    fields = sorted(
        (row.split()[0], row.split()[2]) for row in output.splitlines() if row[:36] in (b, d)
    )
    assert fields == [(b, "metadata"), (b, "overdraft_limit_minor"), (d, "owner_name")]


def test_reconcile_reports_a_user_account_on_a_system_id(
    es_client: Elasticsearch,
    kafka_bootstrap: str,
    es_url: str,
    dsn: str,
    names: IndexNames,
    topic: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A ledger written before validation compared ids in canonical form: a user account
    # opened on the ISK system account's id, straight through the writer.
    takeover = OpenAccount(
        request_id=rid(), account_id=system_account_id("ISK"), owner_name="Mallory", currency="ISK"
    )
    execute(dsn, history()[:2])
    with monkeypatch.context() as old_code:
        # The ledger now also refuses a system id in decide(); that ledger did not.
        old_code.setattr(ledger_module, "SYSTEM_ACCOUNT_IDS", frozenset())
        execute(dsn, [takeover], validate=False)
    project_everything(es_client, kafka_bootstrap, es_url, dsn, names, topic)

    assert run_reconcile(monkeypatch, dsn, es_url, names) == 1
    output = capsys.readouterr().out
    assert f"user account on a system account id: {system_account_id('ISK')} (ISK)" in output


def test_the_swap_never_serves_a_version_behind_the_watermarks(
    es_client: Elasticsearch,
    kafka_bootstrap: str,
    es_url: str,
    dsn: str,
    names: IndexNames,
    topic: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    execute(dsn, history())
    poller = FakePoller(kafka_bootstrap, topic)
    poller.publish(stored_events(dsn))
    config = projector_config(kafka_bootstrap, es_url, topic, names, unique("g"))
    projector = build_projector(es_client, config, pg_dsn=dsn)
    a = ACCOUNTS[0]
    seen: list[tuple[int, int, int]] = []
    swap = rebuild_module.swap_aliases

    def deposit_applied_live_then_swap(es: Elasticsearch, names_: IndexNames, version: int) -> Any:
        # Just before the swap a deposit commits and the live projector applies it to
        # the old version; a reader arrives right after the swap.
        before = head(dsn)
        execute(
            dsn,
            [Deposit(request_id=rid(), account_id=a, amount=Money(currency="EUR", minor_units=77))],
        )
        late = stored_events(dsn, after_position=before)
        poller.publish(late)
        consume_events(projector, len(late), markers=3)
        previous = swap(es, names_, version)
        visible = WatermarkReader(es_client, names, APPLIED).read().visible_position
        document = es_client.get(index=names.accounts, id=a)["_source"]
        seen.append((visible, int(document["last_position"]), late[-1].position))
        return previous

    monkeypatch.setattr(rebuild_module, "swap_aliases", deposit_applied_live_then_swap)
    try:
        project_until_visible(projector, es_client, names, head(dsn))
        with psycopg.connect(dsn, autocommit=True) as conn:
            rebuild(conn, es_client, names)
        ((visible, document_position, deposit_position),) = seen
        assert visible < deposit_position or document_position >= deposit_position, (
            f"after the swap the watermarks claim {visible} but the account document is "
            f"at position {document_position}, before the deposit at {deposit_position}"
        )
        # The fence lifted, the held-back watermarks are written and the deposit is there.
        project_until_visible(projector, es_client, names, deposit_position)
    finally:
        projector.close()
    document = es_client.get(index=names.accounts, id=a)["_source"]
    assert int(document["last_position"]) >= deposit_position

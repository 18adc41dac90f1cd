"""The principal from the command to the statement line, through the real pipeline:
command servicer and writer (PostgreSQL), outbox relay (Kafka), projector
(Elasticsearch) and the query servicer.
"""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
from elasticsearch import Elasticsearch

from chronos.outbox import contract
from chronos.read_model.client import async_elasticsearch_client
from chronos.read_model.indices import (
    ACCOUNTS_MAPPING,
    TRANSACTIONS_MAPPING,
    IndexNames,
    ensure_indices,
    index_settings,
)
from chronos.read_model.queries import ReadModelQueries
from chronos.read_model.watermark import SEARCHABLE, AsyncWatermarkReader
from chronos.read_model.watermark_cache import WatermarkCache
from chronos.security.caller import UNAUTHENTICATED
from chronos.v1 import ledger_pb2, queries_pb2
from command_server.servicer import CommandServicer
from outbox_poller.relay import OutboxRelay
from query_server.servicer import QueryServicer
from tests.integration.principal_support import CallContext, deposit, open_account, transfer
from tests.integration.readside_support import (
    build_projector,
    fresh_database,
    kafka_topic,
    project_until_visible,
    projector_config,
    unique,
)
from tests.integration.test_outbox_poller import consume_all, drain, events_of, poller_config
from tests.integration.test_principal import ALICE, BOB
from tests.integration.writer_helpers import new_id, with_writers


def write_history(dsn: str) -> tuple[str, str]:
    """Alice opens two accounts and funds one, Bob moves money, an unauthenticated
    (development) call deposits; returns the two accounts."""

    async def body(writers: Any) -> tuple[str, str]:
        servicer = CommandServicer(writers[0])
        source = await open_account(servicer, ALICE, new_id())
        target = await open_account(servicer, ALICE, new_id())
        await deposit(servicer, ALICE, new_id(), source, 1000)
        await transfer(servicer, BOB, new_id(), source, target, 300)
        await deposit(servicer, UNAUTHENTICATED, new_id(), target, 5)
        return source, target

    result: tuple[str, str] = asyncio.run(with_writers(dsn, body))
    return result


def head(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT position FROM ledger_head").fetchone()
        assert row is not None
        return int(row[0])


async def statement(es_url: str, names: IndexNames, account_id: str) -> list[Any]:
    """``ListTransactions`` through the query servicer, as the query server serves it."""
    es = async_elasticsearch_client(es_url, request_timeout=30)
    watermark = WatermarkCache(AsyncWatermarkReader(es, names, SEARCHABLE), refresh_seconds=0.1)
    read_model = ReadModelQueries(es, names)
    servicer = QueryServicer(read_model, watermark, min_position_wait_seconds_max=5.0)
    try:
        response = await servicer.ListTransactions(
            queries_pb2.ListTransactionsRequest(account_id=account_id), CallContext()
        )
        return list(response.lines)
    finally:
        await read_model.close()
        await es.close()


def test_kafka_headers_and_statement_lines_carry_the_principal(
    pg_dsn: str,
    kafka_bootstrap: str,
    es_url: str,
    es_client: Elasticsearch,
    names: IndexNames,
) -> None:
    with fresh_database(pg_dsn) as dsn, kafka_topic(kafka_bootstrap) as topic:
        source, target = write_history(dsn)
        relay = OutboxRelay(poller_config(dsn, kafka_bootstrap, topic))
        relay.ensure_topic()
        with psycopg.connect(dsn, autocommit=True) as conn:
            drain(relay, conn)
        last = head(dsn)
        received = events_of(
            consume_all(kafka_bootstrap, topic, until=lambda got: len(events_of(got)) >= last)
        )
        assert len(received) == last
        by_type: dict[str, list[dict[str, str]]] = {}
        for message in received:
            by_type.setdefault(message.headers[contract.HEADER_EVENT_TYPE], []).append(
                message.headers
            )
        for headers in by_type["AccountOpened"]:
            assert headers[contract.HEADER_PRINCIPAL] == "alice"
            assert headers[contract.HEADER_PRINCIPAL_TOKEN_ID] == "jti-alice-1"
        assert {h[contract.HEADER_PRINCIPAL] for h in by_type["FundsTransferred"]} == {"bob"}
        assert {h[contract.HEADER_PRINCIPAL_TOKEN_ID] for h in by_type["FundsTransferred"]} == {
            "jti-bob-1"
        }
        principals = {h.get(contract.HEADER_PRINCIPAL) for h in by_type["FundsDeposited"]}
        assert principals == {"alice", None}

        projector = build_projector(
            es_client,
            projector_config(kafka_bootstrap, es_url, topic, names, unique("g")),
            pg_dsn=dsn,
        )
        try:
            project_until_visible(projector, es_client, names, last)
        finally:
            projector.close()
        source_lines = asyncio.run(statement(es_url, names, source))
        target_lines = asyncio.run(statement(es_url, names, target))
    # Newest first.
    assert [(line.kind, line.principal) for line in source_lines] == [
        (ledger_pb2.ENTRY_KIND_TRANSFER, "bob"),
        (ledger_pb2.ENTRY_KIND_DEPOSIT, "alice"),
    ]
    assert [(line.kind, line.principal) for line in target_lines] == [
        (ledger_pb2.ENTRY_KIND_DEPOSIT, ""),
        (ledger_pb2.ENTRY_KIND_TRANSFER, "bob"),
    ]


def test_indices_created_before_principals_gain_the_field_in_place(
    es_client: Elasticsearch, names: IndexNames
) -> None:
    # The indices as an older version created them: strict, without ``principal``.
    old_lines = {
        **TRANSACTIONS_MAPPING,
        "properties": {
            k: v for k, v in TRANSACTIONS_MAPPING["properties"].items() if k != "principal"
        },
    }
    for alias, index, mapping in (
        (names.accounts, names.accounts_version(1), ACCOUNTS_MAPPING),
        (names.transactions, names.transactions_version(1), old_lines),
    ):
        es_client.indices.create(
            index=index,
            mappings=mapping,
            settings=index_settings(),
            aliases={alias: {"is_write_index": True}},
        )
    assert ensure_indices(es_client, names) == 1
    found = es_client.indices.get_mapping(index=names.transactions_version(1))
    properties = found[names.transactions_version(1)]["mappings"]["properties"]
    assert properties["principal"] == TRANSACTIONS_MAPPING["properties"]["principal"]
    # Again: putting the fields that exist, unchanged, changes nothing.
    assert ensure_indices(es_client, names) == 1
    es_client.index(
        index=names.transactions,
        id="line-1",
        document={"event_id": "line-1", "account_id": "a", "principal": "alice"},
        refresh=True,
    )
    assert es_client.get(index=names.transactions, id="line-1")["_source"]["principal"] == "alice"

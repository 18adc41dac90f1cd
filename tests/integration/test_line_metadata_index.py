"""Statement lines' metadata in a real Elasticsearch: indices an older version created
gain the field in place, and a line is found by exact match on any of its pairs."""

from __future__ import annotations

from typing import Any

from elasticsearch import Elasticsearch

from chronos.read_model.indices import (
    ACCOUNTS_MAPPING,
    TRANSACTIONS_MAPPING,
    IndexNames,
    ensure_indices,
    index_settings,
)


def old_mapping(mapping: dict[str, Any]) -> dict[str, Any]:
    """The statement line mapping as it was before lines had metadata."""
    properties = {k: v for k, v in mapping["properties"].items() if k != "metadata"}
    return {**mapping, "properties": properties}


def line(event_id: str, metadata: dict[str, str] | None) -> dict[str, Any]:
    source: dict[str, Any] = {
        "event_id": event_id,
        "entry_id": event_id,
        "account_id": "a",
        "counterparty_account_id": "",
        "direction": "CREDIT",
        "amount_minor": 1,
        "currency": "EUR",
        "balance_after_minor": 1,
        "kind": "DEPOSIT",
        "description": "",
        "recorded_at": "2026-03-01T12:00:00.000000Z",
        "position": 1,
        "stream_version": 2,
        "line_index": 0,
    }
    if metadata is not None:
        source["metadata"] = metadata
    return source


def matching(es: Elasticsearch, names: IndexNames, pairs: dict[str, str]) -> set[str]:
    filters = [{"term": {f"metadata.{key}": value}} for key, value in pairs.items()]
    response = es.search(index=names.transactions, query={"bool": {"filter": filters}})
    return {hit["_id"] for hit in response["hits"]["hits"]}


def test_old_indices_gain_the_field_and_lines_filter_by_exact_match(
    es_client: Elasticsearch, names: IndexNames
) -> None:
    es_client.indices.create(
        index=names.accounts_version(1),
        mappings=ACCOUNTS_MAPPING,
        settings=index_settings(),
        aliases={names.accounts: {"is_write_index": True}},
    )
    es_client.indices.create(
        index=names.transactions_version(1),
        mappings=old_mapping(TRANSACTIONS_MAPPING),
        settings=index_settings(),
        aliases={names.transactions: {"is_write_index": True}},
    )
    es_client.index(index=names.transactions, id="old", document=line("old", None))

    assert ensure_indices(es_client, names) == 1

    mapping = es_client.indices.get_mapping(index=names.transactions_version(1))
    properties = mapping[names.transactions_version(1)]["mappings"]["properties"]
    assert properties["metadata"] == {"type": "flattened"}
    documents = {
        "a17": {"order_id": "A-17", "channel": "web"},
        "a17-shop": {"order_id": "A-17", "channel": "shop"},
        "a170": {"order_id": "A-170"},
        "dotted": {"dotted.key": "x y"},
    }
    for event_id, metadata in documents.items():
        es_client.index(index=names.transactions, id=event_id, document=line(event_id, metadata))
    es_client.indices.refresh(index=names.transactions)

    assert matching(es_client, names, {"order_id": "A-17"}) == {"a17", "a17-shop"}
    assert matching(es_client, names, {"order_id": "A-17", "channel": "web"}) == {"a17"}
    assert matching(es_client, names, {"order_id": "a-17"}) == set()
    assert matching(es_client, names, {"dotted.key": "x y"}) == {"dotted"}
    assert matching(es_client, names, {"channel": "web", "order_id": "A-170"}) == set()

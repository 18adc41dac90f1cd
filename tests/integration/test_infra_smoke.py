"""Smoke tests against the real servers: each does a round trip and checks the server is
the one the stack promises (PostgreSQL 18, a KRaft Kafka broker, Elasticsearch 8.19).

Every test creates uniquely named objects and removes them again.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import psycopg
from confluent_kafka import Consumer, KafkaError, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from elasticsearch import Elasticsearch

from chronos.kafka_client import kafka_client_config

KAFKA_TIMEOUT_SECONDS = 60.0


def test_postgres_round_trip(pg_conn: psycopg.Connection[Any]) -> None:
    (version,) = pg_conn.execute("SHOW server_version").fetchone() or ("",)
    assert version.startswith("18"), version

    table = f"chronos_smoke_{uuid.uuid4().hex}"
    pg_conn.execute(f"CREATE TABLE {table} (id bigint PRIMARY KEY, amount numeric NOT NULL)")
    try:
        pg_conn.execute(f"INSERT INTO {table} (id, amount) VALUES (%s, %s)", (1, "12.34"))
        row = pg_conn.execute(f"SELECT id, amount::text FROM {table}").fetchone()
        assert row == (1, "12.34")
    finally:
        pg_conn.execute(f"DROP TABLE {table}")


def test_kafka_round_trip(kafka_bootstrap: str) -> None:
    admin = AdminClient(kafka_client_config(kafka_bootstrap))
    cluster = admin.describe_cluster(request_timeout=KAFKA_TIMEOUT_SECONDS).result()
    assert cluster.cluster_id, "a real broker reports its cluster id"
    # The local stack runs one combined broker/controller with node.id=1.
    assert [node.id for node in cluster.nodes] == [1]
    metadata = admin.list_topics(timeout=KAFKA_TIMEOUT_SECONDS)
    assert metadata.cluster_id == cluster.cluster_id
    assert set(metadata.brokers) == {1}

    suffix = uuid.uuid4().hex
    topic = f"chronos-smoke-{suffix}"
    group = f"chronos-smoke-{suffix}"
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(
        timeout=KAFKA_TIMEOUT_SECONDS
    )
    try:
        deliveries: list[tuple[KafkaError | None, Message]] = []
        producer = Producer(kafka_client_config(kafka_bootstrap, **{"enable.idempotence": True}))
        producer.produce(
            topic,
            key=b"account-42",
            value=b'{"amount": "12.34"}',
            headers=[("event-type", b"MoneyDeposited"), ("schema", b"1")],
            on_delivery=lambda error, message: deliveries.append((error, message)),
        )
        assert producer.flush(KAFKA_TIMEOUT_SECONDS) == 0
        assert len(deliveries) == 1 and deliveries[0][0] is None, deliveries

        consumer = Consumer(
            kafka_client_config(
                kafka_bootstrap,
                **{
                    "group.id": group,
                    "auto.offset.reset": "earliest",
                    "enable.auto.commit": False,
                },
            )
        )
        try:
            consumer.subscribe([topic])
            received = _poll_one(consumer)
        finally:
            consumer.close()
        assert received.key() == b"account-42"
        assert received.value() == b'{"amount": "12.34"}'
        assert received.headers() == [("event-type", b"MoneyDeposited"), ("schema", b"1")]
    finally:
        admin.delete_topics([topic])[topic].result(timeout=KAFKA_TIMEOUT_SECONDS)
        for future in admin.delete_consumer_groups([group]).values():
            # The group exists only if the consumer joined; nothing to clean up otherwise.
            try:
                future.result(timeout=KAFKA_TIMEOUT_SECONDS)
            except Exception as error:
                if "GROUP_ID_NOT_FOUND" not in str(error):
                    raise


def test_elasticsearch_round_trip(es_client: Elasticsearch) -> None:
    # The local stack's integ-test distribution has no rest-root module, so `GET /`
    # (es.info()) is not served; the node's own description carries the version.
    nodes = es_client.nodes.info(node_id="_local")
    assert nodes.meta.headers.get("x-elastic-product") == "Elasticsearch"
    versions = [node["version"] for node in nodes["nodes"].values()]
    assert len(versions) == 1 and versions[0].startswith("8.19"), versions

    index = f"chronos-smoke-{uuid.uuid4().hex}"
    document = {"account_id": "account-42", "owner": "Ada Lovelace", "balance": "12.34"}
    es_client.index(index=index, id="account-42", document=document, refresh="wait_for")
    try:
        result = es_client.search(index=index, query={"match": {"owner": "lovelace"}})
        hits = result["hits"]["hits"]
        assert [hit["_id"] for hit in hits] == ["account-42"]
        assert hits[0]["_source"] == document
    finally:
        es_client.indices.delete(index=index)
    assert not es_client.indices.exists(index=index)


def _poll_one(consumer: Consumer) -> Message:
    deadline = time.monotonic() + KAFKA_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        message = consumer.poll(1.0)
        if message is None:
            continue
        error = message.error()
        if error is not None:
            raise AssertionError(f"consumer error: {error}")
        return message
    raise AssertionError(f"no message within {KAFKA_TIMEOUT_SECONDS:.0f} s")

"""What an interrupted bench run leaves on the servers, found and removed again."""

from __future__ import annotations

import time
import uuid

import psycopg
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from elasticsearch import Elasticsearch

from chronos.kafka_client import kafka_client_config
from chronos_dev.bench.resources import Infrastructure, leftover_resources, remove_resources
from tests.conftest import Infrastructure as SessionServers

TIMEOUT_SECONDS = 30


def test_leftovers_of_a_killed_run_are_found_by_their_names_and_removed(
    infrastructure: SessionServers, es_client: Elasticsearch
) -> None:
    servers = Infrastructure(
        pg_server_dsn=infrastructure.pg_dsn,
        kafka_bootstrap=infrastructure.kafka_bootstrap,
        es_url=infrastructure.es_url,
    )
    tag = uuid.uuid4().hex[:6]
    # What a run started at 2000-01-01 00:00:00 creates (see create_resources), and a
    # database that only starts like one.
    database, other = f"bench_20000101_000000_{tag}", f"bench_not_a_run_{tag}"
    index = f"bench-20000101-000000-{tag}-accounts-v1"
    topic = f"chronos-bench-20000101-000000-{tag}"
    with psycopg.connect(infrastructure.pg_dsn, autocommit=True) as conn:
        for name in (database, other):
            conn.execute(f'CREATE DATABASE "{name}"')
    es_client.indices.create(index=index)
    admin = AdminClient(kafka_client_config(infrastructure.kafka_bootstrap))
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(
        timeout=TIMEOUT_SECONDS
    )
    try:
        found = {leftover.database: leftover for leftover in leftover_resources(servers)}
        assert other not in found
        leftover = found[database]
        assert leftover.index_prefix == f"bench-20000101-000000-{tag}"
        assert leftover.topic == topic

        remove_resources(servers, leftover)

        assert database not in {r.database for r in leftover_resources(servers)}
        assert not es_client.indices.exists(index=index)
        # The broker deletes a topic asynchronously after accepting the request.
        deadline = time.monotonic() + TIMEOUT_SECONDS
        while topic in admin.list_topics(timeout=TIMEOUT_SECONDS).topics:
            assert time.monotonic() < deadline, f"{topic} still exists"
            time.sleep(0.2)
    finally:
        with psycopg.connect(infrastructure.pg_dsn, autocommit=True) as conn:
            for name in (database, other):
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        es_client.options(ignore_status=404).indices.delete(index=index)

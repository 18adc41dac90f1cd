"""The projector copies the signed checkpoints into the read side (real Kafka and
Elasticsearch): every message kept, a forged one next to the genuine one, never over it."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from elasticsearch import Elasticsearch

from chronos.audit.checkpoint import Checkpoint, decode_and_check, encode_signed, key_id
from chronos.audit.settings import checkpoints_topic
from chronos.kafka_client import kafka_client_config
from chronos.read_model.indices import IndexNames
from chronos.security.tokens import new_signing_key
from outbox_poller.checkpoints import ensure_checkpoints_topic
from projector.checkpoints import checkpoints_index, start_checkpoint_archiver
from projector.config import ProjectorConfig


@pytest.fixture
def events_topic(kafka_bootstrap: str) -> Iterator[str]:
    """A name for the events topic; only its checkpoints topic is created (and deleted)."""
    name = f"chronos-test-archive-{uuid.uuid4().hex[:12]}"
    ensure_checkpoints_topic(kafka_bootstrap, checkpoints_topic(name), 1, None)
    yield name
    admin = AdminClient(kafka_client_config(kafka_bootstrap))
    admin.delete_topics([checkpoints_topic(name)])[checkpoints_topic(name)].result(timeout=30)


def _config(
    kafka_bootstrap: str, es_url: str, events_topic: str, names: IndexNames
) -> ProjectorConfig:
    return ProjectorConfig(
        kafka_bootstrap=kafka_bootstrap,
        es_url=es_url,
        topic=events_topic,
        group_id=f"chronos-test-archive-{uuid.uuid4().hex[:8]}",
        index_prefix=names.prefix,
    )


def test_the_projector_archives_every_checkpoint_message(
    kafka_bootstrap: str,
    es_url: str,
    es_client: Elasticsearch,
    names: IndexNames,
    events_topic: str,
) -> None:
    key, forger = new_signing_key(), new_signing_key()

    def signed(position: int, signer: Ed25519PrivateKey, hash_byte: int) -> bytes:
        return encode_signed(
            Checkpoint(
                position=position,
                chain_hash=bytes([hash_byte]) * 32,
                recorded_at="2026-12-05T13:00:00.000001+00:00",
                key_id=key_id(signer.public_key()),
            ),
            signer,
        )

    messages = [signed(10, key, 1), signed(20, key, 2), signed(20, forger, 9), b"not json"]
    producer = Producer(kafka_client_config(kafka_bootstrap))
    for value in messages:
        producer.produce(checkpoints_topic(events_topic), value=value)
    assert producer.flush(30) == 0

    stop = threading.Event()
    thread = start_checkpoint_archiver(
        _config(kafka_bootstrap, es_url, events_topic, names), es_client, stop
    )
    index = checkpoints_index(names)
    try:
        deadline = time.monotonic() + 60
        while es_client.count(index=index)["count"] < 3:
            assert time.monotonic() < deadline, "checkpoints not archived"
            time.sleep(0.3)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive()
    hits = es_client.search(index=index, sort=[{"offset": "asc"}], size=10)["hits"]["hits"]
    documents = [hit["_source"] for hit in hits]
    assert [(d["position"], d["chain_hash"][:2]) for d in documents] == [
        (10, "01"),
        (20, "02"),
        (20, "09"),
    ], "the forged checkpoint is kept beside the genuine one, the malformed one skipped"
    trusted_keys = {key_id(key.public_key()): key.public_key()}
    checked = [decode_and_check(d["message"].encode(), trusted_keys) for d in documents]
    assert [c.trusted for c in checked] == [True, True, False]


def test_a_checkpoints_topic_created_after_the_projector_started_is_archived(
    kafka_bootstrap: str, es_url: str, es_client: Elasticsearch, names: IndexNames
) -> None:
    events_topic = f"chronos-test-archive-{uuid.uuid4().hex[:12]}"
    stop = threading.Event()
    thread = start_checkpoint_archiver(
        _config(kafka_bootstrap, es_url, events_topic, names), es_client, stop
    )
    topic = checkpoints_topic(events_topic)
    try:
        time.sleep(2)
        ensure_checkpoints_topic(kafka_bootstrap, topic, 1, None)
        key = new_signing_key()
        checkpoint = Checkpoint(
            position=3,
            chain_hash=bytes(32),
            recorded_at="2026-12-05T13:00:00+00:00",
            key_id=key_id(key.public_key()),
        )
        producer = Producer(kafka_client_config(kafka_bootstrap))
        producer.produce(topic, value=encode_signed(checkpoint, key))
        assert producer.flush(30) == 0
        deadline = time.monotonic() + 60
        while es_client.count(index=checkpoints_index(names))["count"] < 1:
            assert time.monotonic() < deadline, "the new topic was never consumed"
            time.sleep(0.5)
    finally:
        stop.set()
        thread.join(timeout=30)
        admin = AdminClient(kafka_client_config(kafka_bootstrap))
        admin.delete_topics([topic])[topic].result(timeout=30)

"""Copies the signed chain checkpoints from their Kafka topic into the read side.

The checkpoints index keeps every checkpoint message as it was published (its signature
included), for browsing and for an auditor who reads the read side. The projector does
not judge them: ``chronos verify`` checks the signatures (against the JWKS it trusts) on
the messages it reads from Kafka itself. A document's id is the SHA-256 of the message,
so a forged message for some position is kept next to the genuine one, never over it.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message
from elasticsearch import ApiError, Elasticsearch, TransportError, helpers

from chronos.audit.checkpoint import decode_and_check
from chronos.audit.settings import checkpoints_topic
from chronos.kafka_client import kafka_client_config
from chronos.read_model.indices import IndexNames, index_settings
from projector.config import ProjectorConfig

_logger = logging.getLogger(__name__)

# Checkpoints are rare: a small batch per poll is plenty.
_BATCH_MESSAGES_MAX = 500
_POLL_SECONDS = 1.0
# The wait after a failed write to Elasticsearch before the batch is tried again.
_RETRY_WAIT_SECONDS = 2.0

CHECKPOINTS_MAPPING: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "position": {"type": "long"},
        "chain_hash": {"type": "keyword"},
        "recorded_at": {"type": "date"},
        "key_id": {"type": "keyword"},
        # The message as published (signature included), to check it again anywhere.
        "message": {"type": "keyword", "index": False, "doc_values": False},
        "offset": {"type": "long"},
    },
}


def checkpoints_index(names: IndexNames) -> str:
    """The checkpoints index under the read side's prefix."""
    return f"{names.prefix}-checkpoints"


def ensure_checkpoints_index(es: Elasticsearch, names: IndexNames) -> None:
    """Creates the checkpoints index when missing (safe to repeat, and to race)."""
    index = checkpoints_index(names)
    es.options(ignore_status=400).indices.create(
        index=index, mappings=CHECKPOINTS_MAPPING, settings=index_settings()
    )


def checkpoint_document(message_value: bytes, offset: int) -> tuple[str, dict[str, Any]] | None:
    """The document id and body of one checkpoint message; None when it is malformed."""
    checked = decode_and_check(message_value, {})
    if checked.checkpoint is None:
        return None
    checkpoint = checked.checkpoint
    return hashlib.sha256(message_value).hexdigest(), {
        "position": checkpoint.position,
        "chain_hash": checkpoint.chain_hash.hex(),
        "recorded_at": checkpoint.recorded_at,
        "key_id": checkpoint.key_id,
        "message": message_value.decode(),
        "offset": offset,
    }


class CheckpointArchiver:
    """Consumes the checkpoints topic into the checkpoints index, at least once (the
    offsets are committed after Elasticsearch acknowledged; a replay rewrites the same
    documents), until ``stop`` is set.

    Args:
        consumer: Subscribed to the checkpoints topic, auto commit off.
        es: The read side.
        names: The read side's index names.
        stop: Ends ``run``.
    """

    def __init__(
        self, consumer: Consumer, es: Elasticsearch, names: IndexNames, stop: threading.Event
    ) -> None:
        self._consumer = consumer
        self._es = es
        self._index = checkpoints_index(names)
        self._stop = stop

    def run(self) -> None:
        """Copies checkpoints until stopped; closes the consumer."""
        pending: list[Message] = []
        try:
            while not self._stop.is_set():
                try:
                    if not pending:
                        messages = self._consumer.consume(
                            _BATCH_MESSAGES_MAX, timeout=_POLL_SECONDS
                        )
                        pending = [m for m in messages if m.error() is None]
                    if pending:
                        self._store(pending)
                        self._consumer.commit(asynchronous=False)
                        pending = []
                except (ApiError, TransportError, KafkaException) as error:
                    # The batch stays pending and is written again: nothing is skipped.
                    _logger.warning("checkpoints not archived yet, retrying: %s", error)
                    self._stop.wait(_RETRY_WAIT_SECONDS)
        finally:
            self._consumer.close()

    def _store(self, batch: list[Message]) -> None:
        actions = []
        for message in batch:
            document = checkpoint_document(message.value() or b"", message.offset() or 0)
            if document is None:
                _logger.warning("malformed checkpoint message at offset %s", message.offset())
                continue
            doc_id, body = document
            actions.append({"_index": self._index, "_id": doc_id, "_source": body})
        if actions:
            helpers.bulk(self._es, actions, refresh="wait_for")


def start_checkpoint_archiver(
    config: ProjectorConfig, es: Elasticsearch, stop: threading.Event
) -> threading.Thread:
    """Creates the checkpoints index and starts copying the checkpoints topic into it, on
    a thread of its own, as consumer group ``<projector group>-checkpoints``."""
    names = config.index_names
    ensure_checkpoints_index(es, names)
    consumer = Consumer(
        kafka_client_config(
            config.kafka_bootstrap,
            config.kafka_security,
            **{
                "group.id": f"{config.group_id}-checkpoints",
                "enable.auto.commit": False,
                # Every checkpoint ever published: the topic keeps them all.
                "auto.offset.reset": "earliest",
                # The poller's leader creates the topic with its retention; a topic
                # created after the subscription is found at the next metadata refresh.
                "allow.auto.create.topics": False,
                "topic.metadata.refresh.interval.ms": 10_000,
                "isolation.level": "read_committed",
            },
        )
    )
    consumer.subscribe([checkpoints_topic(config.topic, config.checkpoints_topic)])
    archiver = CheckpointArchiver(consumer, es, names, stop)
    thread = threading.Thread(target=archiver.run, name="checkpoint-archiver", daemon=True)
    thread.start()
    return thread

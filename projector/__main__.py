"""Composition root of the projector: ``python -m projector``."""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from types import FrameType

from confluent_kafka import Consumer
from elasticsearch import Elasticsearch

from chronos.backend_access import BackendRefused
from chronos.errors import ChronosError
from chronos.event_store.login_check import check_postgres_login
from chronos.kafka_client import KafkaSecurity, check_kafka_login
from chronos.process import run_service
from chronos.read_model.client import (
    ElasticsearchSecurity,
    check_elasticsearch_login,
    elasticsearch_client,
)
from chronos.read_model.es_writer import EsWriter
from chronos.read_model.history import EventStoreHistory
from chronos.read_model.indices import ensure_indices
from projector.checkpoints import start_checkpoint_archiver
from projector.config import ProjectorConfig
from projector.consumer import Projector
from projector.errors import ProjectorStopped
from projector.report import describe

_logger = logging.getLogger("projector")

# How often the loop logs a summary (batches are far more frequent).
_SUMMARY_INTERVAL_SECONDS = 10.0
# The checkpoint archiver ends within one poll of its stop.
_ARCHIVER_JOIN_SECONDS = 10.0


def build(config: ProjectorConfig, stop: threading.Event) -> tuple[Projector, Elasticsearch]:
    """Builds the clients and the projector; creates the indices if missing.

    Raises:
        BackendRefused: Kafka, Elasticsearch or PostgreSQL refused the credentials.
    """
    es_security = config.es_security or ElasticsearchSecurity.from_env()
    check_elasticsearch_login(config.es_url, es_security)
    es = elasticsearch_client(
        config.es_url, es_security, request_timeout=config.es_request_timeout_seconds
    )
    # The indices first, as before the other checks existed: the query server reads
    # them as soon as it serves.
    ensure_indices(es, config.index_names)
    check_kafka_login(config.kafka_bootstrap, config.kafka_security or KafkaSecurity.from_env())
    if config.pg_dsn:
        check_postgres_login(config.pg_dsn)
    consumer = Consumer(config.consumer_settings())
    projector = Projector(
        consumer,
        EsWriter(es, config.index_names),
        config,
        history=EventStoreHistory(config.pg_dsn),
        stop=stop,
    )
    return projector, es


def run(config: ProjectorConfig, stop: threading.Event) -> int:
    projector, es = build(config, stop)
    archiver_stop = threading.Event()
    archiver = start_checkpoint_archiver(config, es, archiver_stop)
    try:
        projector.start()
        _logger.info(
            "projecting %s (%d partitions) into %s-* as group %s",
            config.topic,
            projector.partition_count,
            config.index_prefix,
            config.group_id,
        )
        last_summary = time.monotonic()
        events = 0
        while not stop.is_set():
            report = projector.step()
            events += report.events
            if time.monotonic() - last_summary >= _SUMMARY_INTERVAL_SECONDS and events:
                _logger.info("projected %d events; last batch %s", events, describe(report))
                last_summary, events = time.monotonic(), 0
    except ProjectorStopped:
        _logger.info("stopped before the batch reached Elasticsearch; it was not committed")
    finally:
        archiver_stop.set()
        archiver.join(timeout=_ARCHIVER_JOIN_SECONDS)
        projector.close()
        es.close()
    _logger.info("projector stopped")
    return 0


def main() -> int:
    return run_service("projector", ProjectorConfig.from_env, _run_until_stopped)


def _run_until_stopped(config: ProjectorConfig) -> int:
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        # Finish (and commit) the current batch, then leave the group.
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        return run(config, stop)
    except BackendRefused:
        # run_service reports it in one line.
        raise
    except ChronosError as error:
        _logger.error("projector failed: %s", error)
        return 1


if __name__ == "__main__":
    sys.exit(main())

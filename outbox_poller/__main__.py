"""Composition root of the outbox poller: ``python -m outbox_poller``."""

from __future__ import annotations

import logging
import signal
import sys
import threading

from chronos.event_store.login_check import check_postgres_login
from chronos.kafka_client import KafkaSecurity, check_kafka_login
from chronos.process import run_service
from outbox_poller.config import PollerConfig
from outbox_poller.producer import KafkaUnavailable
from outbox_poller.relay import OutboxRelay

_logger = logging.getLogger("outbox_poller")


def run(config: PollerConfig) -> int:
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    # Refused credentials stop the start; unreachable servers are waited for below.
    check_postgres_login(config.pg_dsn)
    check_kafka_login(config.kafka_bootstrap, config.kafka_security or KafkaSecurity.from_env())
    relay = OutboxRelay(config)
    try:
        relay.ensure_topic()
    except KafkaUnavailable as error:
        # Not fatal: the leader creates the topic once Kafka answers.
        _logger.warning("%s", error)
    _logger.info("outbox poller started (topic %s)", config.topic)
    relay.run(stop)
    _logger.info("outbox poller stopped")
    return 0


def main() -> int:
    return run_service("outbox-poller", PollerConfig.from_env, run)


if __name__ == "__main__":
    sys.exit(main())

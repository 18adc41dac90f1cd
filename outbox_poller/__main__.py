"""Composition root of the outbox poller: ``python -m outbox_poller``."""

from __future__ import annotations

import logging
import signal
import sys
import threading

from chronos import telemetry
from chronos.config import ConfigError
from chronos.metrics import serve_metrics
from outbox_poller.config import PollerConfig
from outbox_poller.relay import KafkaUnavailable, OutboxRelay

_logger = logging.getLogger("outbox_poller")


def main() -> int:
    try:
        config = PollerConfig.from_env()
    except ConfigError as error:
        print(f"outbox poller: {error}", file=sys.stderr)
        return 2
    telemetry.configure("outbox-poller")
    serve_metrics(config.metrics_port)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    relay = OutboxRelay(config)
    try:
        relay.ensure_topic()
    except KafkaUnavailable as error:
        # Not fatal: the leader creates the topic once Kafka answers.
        _logger.warning("%s", error)
    _logger.info("outbox poller started (topic %s)", config.topic)
    try:
        relay.run(stop)
    finally:
        telemetry.shutdown()
    _logger.info("outbox poller stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())

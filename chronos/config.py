"""The settings more than one process reads, declared once (see ``chronos.settings``).

Each process's own settings live in its ``config.py``; this module holds the servers'
addresses, the topic and the two settings both gRPC servers share (the index prefix is
in ``chronos.read_model.config``, so that the write side does not load Elasticsearch).
"""

from __future__ import annotations

from chronos.outbox.contract import DEFAULT_TOPIC
from chronos.settings import ConfigError, flag, number, required, text

__all__ = [
    "ES_URL",
    "EVENTS_TOPIC",
    "KAFKA_BOOTSTRAP",
    "PG_DSN",
    "REUSE_PORT",
    "SHUTDOWN_GRACE_SECONDS",
    "ConfigError",
]

_LOCAL_STACK = 'start the local stack and load its settings with `eval "$(chronos-dev infra env)"`'

PG_DSN = required(
    "CHRONOS_PG_DSN",
    type_name="DSN",
    doc="PostgreSQL connection string of the event store.",
    hint=f"{_LOCAL_STACK}, or point it at your PostgreSQL",
)
KAFKA_BOOTSTRAP = required(
    "CHRONOS_KAFKA_BOOTSTRAP",
    type_name="host:port list",
    doc="Kafka bootstrap servers.",
    hint=f"{_LOCAL_STACK}, or point it at your Kafka",
)
ES_URL = required(
    "CHRONOS_ES_URL",
    type_name="URL",
    doc="Elasticsearch URL of the read model.",
    hint=f"{_LOCAL_STACK}, or point it at your Elasticsearch",
)
# Kafka refuses topic names longer than 249 characters.
EVENTS_TOPIC = text(
    "CHRONOS_EVENTS_TOPIC", DEFAULT_TOPIC, length_max=249, doc="The Kafka topic of the events."
)
# Set to 1 by the supervisor for each worker when a server runs several processes.
REUSE_PORT = flag(
    "CHRONOS_REUSE_PORT", doc="Bind the gRPC port with SO_REUSEPORT (set for the workers)."
)
SHUTDOWN_GRACE_SECONDS = number(
    "CHRONOS_SHUTDOWN_GRACE_SECONDS",
    10.0,
    minimum=0.0,
    maximum=300,
    doc="How long in-flight calls may finish after SIGTERM.",
)

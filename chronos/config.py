"""The settings more than one process reads, declared once (see ``chronos.settings``).

Each process's own settings live in its ``config.py``; this module holds the servers'
addresses, the topic and the two settings both gRPC servers share (the index prefix is
in ``chronos.read_model.config``, so that the write side does not load Elasticsearch).
"""

from __future__ import annotations

from chronos.outbox.contract import DEFAULT_TOPIC
from chronos.settings import ConfigError, Setting, choice, flag, number, required, text

__all__ = [
    "ES_API_KEY",
    "ES_API_KEY_FILE",
    "ES_CA_FILE",
    "ES_PASSWORD",
    "ES_PASSWORD_FILE",
    "ES_SECURITY_SETTINGS",
    "ES_URL",
    "ES_USERNAME",
    "EVENTS_TOPIC",
    "KAFKA_BOOTSTRAP",
    "KAFKA_CA_FILE",
    "KAFKA_SASL_MECHANISM",
    "KAFKA_SASL_PASSWORD",
    "KAFKA_SASL_PASSWORD_FILE",
    "KAFKA_SASL_USERNAME",
    "KAFKA_SECURITY_PROTOCOL",
    "KAFKA_SECURITY_SETTINGS",
    "PG_DSN",
    "REUSE_PORT",
    "SHUTDOWN_GRACE_SECONDS",
    "ConfigError",
]

_LOCAL_STACK = 'start the local stack and load its settings with `eval "$(chronos-dev infra env)"`'

PG_DSN = required(
    "CHRONOS_PG_DSN",
    type_name="DSN",
    doc=(
        "PostgreSQL connection string of the event store; keep the password out of it "
        "(libpq `passfile=`, or `PGPASSFILE`) and use `sslmode=verify-full&sslrootcert=…`."
    ),
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


def _secret(file_name: str, value_name: str, what: str) -> tuple[Setting[str], Setting[str]]:
    # A secret's two settings: a file holding it (preferred), or the value itself.
    return (
        text(file_name, "", type_name="path", doc=f"File holding {what} (or `{value_name}`)."),
        text(
            value_name,
            "",
            type_name="secret",
            bounds="never logged",
            doc=f"{what[0].upper()}{what[1:]} itself, when not in a file.",
        ),
    )


KAFKA_SECURITY_PROTOCOL = choice(
    "CHRONOS_KAFKA_SECURITY_PROTOCOL",
    "auto",
    {name: name for name in ("auto", "PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")},
    doc=(
        "How clients talk to Kafka; `auto`: SASL_SSL when a SASL user is set, SSL when only "
        "a CA file is, else PLAINTEXT."
    ),
)
KAFKA_SASL_MECHANISM = choice(
    "CHRONOS_KAFKA_SASL_MECHANISM",
    "SCRAM-SHA-512",
    {name: name for name in ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")},
    doc="SASL mechanism of the Kafka credentials.",
)
KAFKA_SASL_USERNAME = text(
    "CHRONOS_KAFKA_SASL_USERNAME", "", length_max=255, doc="Kafka SASL user (empty: no SASL)."
)
KAFKA_SASL_PASSWORD_FILE, KAFKA_SASL_PASSWORD = _secret(
    "CHRONOS_KAFKA_SASL_PASSWORD_FILE", "CHRONOS_KAFKA_SASL_PASSWORD", "the Kafka SASL password"
)
KAFKA_CA_FILE = text(
    "CHRONOS_KAFKA_CA_FILE",
    "",
    type_name="path",
    doc="PEM CA file that verifies Kafka's certificate (empty: the system's CAs).",
)
ES_CA_FILE = text(
    "CHRONOS_ES_CA_FILE",
    "",
    type_name="path",
    doc="PEM CA file that verifies Elasticsearch's certificate (empty: the system's CAs).",
)
ES_USERNAME = text(
    "CHRONOS_ES_USERNAME", "", length_max=255, doc="Elasticsearch user for basic auth."
)
ES_PASSWORD_FILE, ES_PASSWORD = _secret(
    "CHRONOS_ES_PASSWORD_FILE", "CHRONOS_ES_PASSWORD", "that user's Elasticsearch password"
)
ES_API_KEY_FILE, ES_API_KEY = _secret(
    "CHRONOS_ES_API_KEY_FILE", "CHRONOS_ES_API_KEY", "an Elasticsearch API key (encoded)"
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

# What a process that talks to Kafka or Elasticsearch reads besides the address.
KAFKA_SECURITY_SETTINGS = (
    KAFKA_SECURITY_PROTOCOL,
    KAFKA_SASL_MECHANISM,
    KAFKA_SASL_USERNAME,
    KAFKA_SASL_PASSWORD_FILE,
    KAFKA_SASL_PASSWORD,
    KAFKA_CA_FILE,
)
ES_SECURITY_SETTINGS = (
    ES_CA_FILE,
    ES_USERNAME,
    ES_PASSWORD_FILE,
    ES_PASSWORD,
    ES_API_KEY_FILE,
    ES_API_KEY,
)

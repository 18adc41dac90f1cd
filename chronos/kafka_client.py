"""The Kafka client settings of every process, built in one place, and the start-up
check of the credentials.

Every producer, consumer and admin client (the services, the tooling, the tests) gets
its librdkafka settings from :func:`kafka_client_config`, so TLS and SASL are configured
the same way everywhere.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from chronos.backend_access import BackendRefused, read_secret
from chronos.config import (
    KAFKA_CA_FILE,
    KAFKA_SASL_MECHANISM,
    KAFKA_SASL_PASSWORD,
    KAFKA_SASL_PASSWORD_FILE,
    KAFKA_SASL_USERNAME,
    KAFKA_SECURITY_PROTOCOL,
    ConfigError,
)

_logger = logging.getLogger(__name__)

# librdkafka logs every failed attempt of the start-up check itself; the check reports
# the outcome once, so those lines go nowhere.
_QUIET_LOGGER = logging.getLogger("chronos.kafka_client.check")
_QUIET_LOGGER.addHandler(logging.NullHandler())
_QUIET_LOGGER.propagate = False

LOGIN_CHECK_SECONDS = 10.0
_LOGIN_CHECK_STEP_SECONDS = 0.5

_CREDENTIAL_SETTINGS = (
    f"check {KAFKA_SASL_USERNAME.name} and {KAFKA_SASL_PASSWORD_FILE.name} "
    f"(or {KAFKA_SASL_PASSWORD.name})"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class KafkaSecurity:
    """How a client authenticates to Kafka and verifies it (``CHRONOS_KAFKA_*``)."""

    protocol: str = "PLAINTEXT"
    mechanism: str = KAFKA_SASL_MECHANISM.default
    username: str = ""
    password: str = field(default="", repr=False)
    ca_file: str = ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> KafkaSecurity:
        """Reads the ``CHRONOS_KAFKA_*`` security settings (default: the process's).

        Raises:
            ConfigError: a value is malformed, the password file unreadable, or a SASL
                protocol has no user or password.
        """
        environ = os.environ if environ is None else environ
        username = KAFKA_SASL_USERNAME.read(environ)
        ca_file = KAFKA_CA_FILE.read(environ)
        protocol = KAFKA_SECURITY_PROTOCOL.read(environ)
        if protocol == "auto":
            protocol = "SASL_SSL" if username else "SSL" if ca_file else "PLAINTEXT"
        password = read_secret(KAFKA_SASL_PASSWORD_FILE, KAFKA_SASL_PASSWORD, environ)
        if protocol.startswith("SASL_") and not (username and password):
            raise ConfigError(
                f"{KAFKA_SECURITY_PROTOCOL.name}={protocol} needs a user and a password: "
                f"set {KAFKA_SASL_USERNAME.name} and {KAFKA_SASL_PASSWORD_FILE.name}"
            )
        return cls(
            protocol=protocol,
            mechanism=KAFKA_SASL_MECHANISM.read(environ),
            username=username,
            password=password,
            ca_file=ca_file,
        )

    def settings(self) -> dict[str, Any]:
        """The librdkafka settings for this security (none for PLAINTEXT)."""
        settings: dict[str, Any] = {"security.protocol": self.protocol.lower()}
        if self.protocol.startswith("SASL_"):
            settings["sasl.mechanism"] = self.mechanism
            settings["sasl.username"] = self.username
            settings["sasl.password"] = self.password
        if self.protocol.endswith("SSL"):
            # librdkafka checks the broker's name against its certificate by default;
            # said explicitly because that check is the point of verify-full.
            settings["ssl.endpoint.identification.algorithm"] = "https"
            if self.ca_file:
                settings["ssl.ca.location"] = self.ca_file
        return settings


def kafka_client_config(
    bootstrap: str, security: KafkaSecurity | None = None, **extra: Any
) -> dict[str, Any]:
    """librdkafka settings for ``bootstrap``: ``security`` (default: read from the
    environment), then ``extra`` (e.g. ``{"group.id": ...}``, passed as ``**{...}``)."""
    if security is None:
        security = KafkaSecurity.from_env()
    return {"bootstrap.servers": bootstrap, **security.settings(), **extra}


def check_kafka_login(bootstrap: str, security: KafkaSecurity) -> None:
    """Checks at start that Kafka accepts the credentials and the TLS settings.

    An unreachable Kafka is not an error here (the services wait for it as before);
    only an answer that retrying cannot change is.

    Raises:
        BackendRefused: Kafka refused the SASL credentials, or TLS failed (certificate).
    """
    errors: list[KafkaError] = []
    admin = AdminClient(
        kafka_client_config(
            bootstrap, security, **{"error_cb": errors.append, "logger": _QUIET_LOGGER}
        )
    )
    deadline = time.monotonic() + LOGIN_CHECK_SECONDS
    while time.monotonic() < deadline:
        try:
            admin.list_topics(timeout=_LOGIN_CHECK_STEP_SECONDS)
            return
        except KafkaException as error:
            errors.append(error.args[0])
        admin.poll(0)
        _raise_if_refused(errors, bootstrap, security)
    _logger.warning("Kafka at %s did not answer at start; carrying on", bootstrap)


def _raise_if_refused(errors: list[KafkaError], bootstrap: str, security: KafkaSecurity) -> None:
    for error in errors:
        if error.code() == KafkaError._AUTHENTICATION:
            raise BackendRefused(
                f"Kafka refused the SASL credentials for user {security.username!r} "
                f"at {bootstrap}: {_CREDENTIAL_SETTINGS}"
            )
        if error.code() == KafkaError._SSL:
            raise BackendRefused(
                f"TLS with Kafka at {bootstrap} failed ({error.str()}): check "
                f"{KAFKA_CA_FILE.name} and {KAFKA_SECURITY_PROTOCOL.name}"
            )

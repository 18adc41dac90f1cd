"""One-shot key material for docker/compose.yaml: ``python docker/secrets_init.py /secrets``.

Creates, once, in the shared ``secrets`` volume: a CA, a server certificate for the
containers' names, the token signing key and JWKS, a generated password per account,
and what each server needs to use them (PostgreSQL's pg_hba.conf, Kafka's PEM keystore,
server.properties and start script). Each file is owned by the account of the container
that reads it: the images run as different users (PostgreSQL 999, Elasticsearch and
Kafka 1000, the Chronos image's ``chronos`` user). Reruns keep what exists, so the
passwords stay those the servers were initialized with.

Untested here: the development machine and CI have no Docker engine (the local stack,
``chronos-dev infra up``, runs the same security and is what the tests use).
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from pathlib import Path

from chronos.security.tokens import jwks_document, new_signing_key, private_key_pem
from chronos_dev.pki import LocalPki, create_ca, issue_certificate

HOSTS = (
    "postgres",
    "kafka",
    "elasticsearch",
    "command-server",
    "query-server",
    "localhost",
    "127.0.0.1",
)
POSTGRES_UID = 999
ELASTICSEARCH_UID = 1000
KAFKA_UID = 1000
ACCOUNTS = ("postgres", "kafka-chronos", "kafka-broker", "elasticsearch-elastic")


def _write(path: Path, content: str, uid: int, mode: int = 0o400) -> None:
    path.write_text(content)
    os.chown(path, uid, 0)
    path.chmod(mode)


def _password(directory: Path, account: str) -> str:
    path = directory / f"{account}.password"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(32) + "\n")
    return path.read_text().strip()


def main(directory: Path, chronos_uid: int) -> int:
    pki = LocalPki(directory)
    if not pki.ca_cert.exists():
        create_ca(pki.ca_cert, pki.ca_key)
        issue_certificate(
            pki.ca_cert,
            pki.ca_key,
            pki.server_cert,
            pki.server_key,
            common_name="chronos",
            hosts=HOSTS,
        )
        key = new_signing_key()
        pki.signing_key.write_bytes(private_key_pem(key))
        pki.jwks.write_text(json.dumps(jwks_document([key.public_key()])) + "\n")
    passwords = {account: _password(directory, account) for account in ACCOUNTS}
    server_key = pki.server_key.read_text()
    # Copies per reader: a private key file must belong to the server that reads it.
    _write(directory / "postgres-server-key.pem", server_key, POSTGRES_UID, 0o600)
    _write(
        directory / "pg_hba.conf",
        "local all all scram-sha-256\nhostssl all all all scram-sha-256\n",
        POSTGRES_UID,
    )
    _write(directory / "elasticsearch-server-key.pem", server_key, ELASTICSEARCH_UID)
    _write(directory / "kafka-keystore.pem", server_key + pki.server_cert.read_text(), KAFKA_UID)
    _write(directory / "kafka-server.properties", _kafka_properties(passwords), KAFKA_UID)
    _write(directory / "kafka-start.sh", _KAFKA_START, KAFKA_UID, 0o500)
    for account in ("kafka-chronos", "kafka-broker"):
        os.chown(directory / f"{account}.password", KAFKA_UID, 0)
    for name in ("kafka-chronos.password", "elasticsearch-elastic.password"):
        # The Chronos services read these two; Kafka's start script reads its own copy.
        _write(
            directory / f"chronos-{name}", passwords[name.removesuffix(".password")], chronos_uid
        )
    _write(
        directory / "chronos-pgpass",
        f"*:*:*:postgres:{passwords['postgres']}\n",
        chronos_uid,
        0o600,
    )
    os.chown(directory / "elasticsearch-elastic.password", ELASTICSEARCH_UID, 0)
    os.chown(directory / "postgres.password", POSTGRES_UID, 0)
    for path in directory.glob("*.password"):
        path.chmod(0o400)
    for path in (pki.ca_cert, pki.server_cert, pki.jwks):
        path.chmod(0o444)
    for path in (pki.server_key, pki.signing_key):
        os.chown(path, chronos_uid, 0)
        path.chmod(0o400)
    return 0


def _kafka_properties(passwords: dict[str, str]) -> str:
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": "1@kafka:9093",
        "listeners": "SASL_SSL://:9092,CONTROLLER://:9093",
        "advertised.listeners": "SASL_SSL://kafka:9092",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "SASL_SSL",
        "listener.security.protocol.map": "SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT",
        "sasl.enabled.mechanisms": "SCRAM-SHA-512",
        "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512",
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="chronos-broker" password="{passwords["kafka-broker"]}";'
        ),
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": "/secrets/kafka-keystore.pem",
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": "/secrets/ca.pem",
        "log.dirs": "/var/lib/kafka/data",
        "num.partitions": "3",
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


# Formats the storage with the SCRAM users on the first start (KRaft keeps credentials
# in the metadata log), then runs the broker.
_KAFKA_START = """#!/bin/bash
set -euo pipefail
config=/secrets/kafka-server.properties
if [ ! -f /var/lib/kafka/data/meta.properties ]; then
  /opt/kafka/bin/kafka-storage.sh format --config "$config" \\
    --cluster-id "$(/opt/kafka/bin/kafka-storage.sh random-uuid)" \\
    --add-scram "SCRAM-SHA-512=[name=chronos,password=$(cat /secrets/kafka-chronos.password)]" \\
    --add-scram "SCRAM-SHA-512=[name=chronos-broker,password=$(cat /secrets/kafka-broker.password)]"
fi
exec /opt/kafka/bin/kafka-server-start.sh "$config"
"""


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), int(sys.argv[2])))

"""Kafka 4.4 in KRaft combined mode (one node is broker and controller), on 127.0.0.1.

The broker's jars come from Maven (``kafka-pom.xml``) into ``dist/kafka-4.4.0/libs``;
it runs on the JDK found by :mod:`chronos_dev.stack.java` with ``kafka.Kafka`` as the main
class, exactly what Kafka's own start script does.

Clients reach it only through a SASL_SSL listener: TLS with the stack's server
certificate (a PEM keystore) and SCRAM-SHA-512 credentials, created when the storage is
formatted (``--add-scram``): ``chronos`` for the clients and ``chronos-broker`` for the
broker's own connections to itself. The controller listener stays PLAINTEXT on loopback:
only the node itself uses it.
"""

from __future__ import annotations

import base64
import logging
import subprocess
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from chronos.kafka_client import KafkaSecurity, kafka_client_config
from chronos_dev.stack import credentials, maven
from chronos_dev.stack.base import LOOPBACK_HOST, ServerContext, tcp_connects
from chronos_dev.stack.java import find_jdk

KAFKA_VERSION = "4.4.0"
NODE_ID = 1
HEAP_INITIAL_MB = 256
HEAP_MAX_MB = 512
SASL_MECHANISM = "SCRAM-SHA-512"
CLIENT_USER = "chronos"
BROKER_USER = "chronos-broker"
# Names of the password files under <stack>/secrets/.
CLIENT_ACCOUNT = "kafka-chronos"
BROKER_ACCOUNT = "kafka-broker"

# librdkafka reports every refused connection while the broker boots; readiness
# polling expects those, so they go to a logger that discards them.
_QUIET_LOGGER = logging.getLogger("chronos_dev.stack.kafka.probe")
_QUIET_LOGGER.addHandler(logging.NullHandler())
_QUIET_LOGGER.propagate = False

_LOG4J2_TEMPLATE = """\
# Written by chronos-dev infra (chronos_dev.stack.kafka).
status = warn
name = chronos-kafka

appender.file.type = RollingFile
appender.file.name = file
appender.file.fileName = {log_path}
appender.file.filePattern = {log_path}.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 50MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3

rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file

# Per-request and state-change chatter is not useful for a development broker.
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
"""


class KafkaServer:
    """The stack's Kafka broker (see :class:`chronos_dev.stack.base.Server`)."""

    name = "kafka"
    title = "Kafka"
    external_env = "CHRONOS_KAFKA_BOOTSTRAP"
    port_envs: Mapping[str, str] = {
        "port": "CHRONOS_KAFKA_PORT",
        "controller_port": "CHRONOS_KAFKA_CONTROLLER_PORT",
    }
    ready_timeout_seconds = 90.0
    stop_timeout_seconds = 30.0
    detaches = False

    def log_paths(self, stack_dir: Path) -> list[Path]:
        # kafka.log is log4j's; the console file catches JVM output from before log4j.
        return [stack_dir / "logs" / "kafka.log", stack_dir / "logs" / "kafka-console.log"]

    def address(self, stack_dir: Path, ports: Mapping[str, int]) -> str:
        return f"{LOOPBACK_HOST}:{ports['port']}"

    def client_environment(self, stack_dir: Path) -> dict[str, str]:
        credentials.password(stack_dir, CLIENT_ACCOUNT)
        return {
            "CHRONOS_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "CHRONOS_KAFKA_SASL_MECHANISM": SASL_MECHANISM,
            "CHRONOS_KAFKA_SASL_USERNAME": CLIENT_USER,
            "CHRONOS_KAFKA_SASL_PASSWORD_FILE": str(
                credentials.password_path(stack_dir, CLIENT_ACCOUNT)
            ),
            "CHRONOS_KAFKA_CA_FILE": str(credentials.stack_pki(stack_dir).ca_cert),
        }

    def provision(self, context: ServerContext) -> None:
        libs_dir = self._libs_dir(context)
        if not maven.is_fetched(maven.pom_path("kafka-pom.xml"), libs_dir):
            context.progress(f"{self.name}: downloading Kafka {KAFKA_VERSION} with Maven")
        maven.fetch_dependencies(
            maven.pom_path("kafka-pom.xml"),
            libs_dir,
            what=f"Kafka {KAFKA_VERSION}",
            log_path=context.stack_dir / "logs" / "maven-kafka.log",
        )
        config_dir = context.directory("config", "kafka")
        data_dir = context.directory("data", "kafka")
        context.directory("logs")
        pki = credentials.stack_pki(context.stack_dir)
        # The PEM keystore: the private key and the certificate in one owner-only file.
        credentials.write_private(
            config_dir / "keystore.pem", pki.server_key.read_text() + pki.server_cert.read_text()
        )
        # Owner-only: it holds the broker's own SCRAM password (JAAS).
        credentials.write_private(
            config_dir / "server.properties", self._server_properties(context, data_dir)
        )
        (config_dir / "log4j2.properties").write_text(
            _LOG4J2_TEMPLATE.format(log_path=self.log_paths(context.stack_dir)[0])
        )
        if not (data_dir / "meta.properties").is_file():
            self._format_storage(context, config_dir, data_dir)

    def _format_storage(self, context: ServerContext, config_dir: Path, data_dir: Path) -> None:
        # SCRAM credentials live in the metadata log; KRaft creates them at format time,
        # before any listener needs them (the broker authenticates to itself).
        context.progress(f"{self.name}: formatting storage {data_dir}")
        passwords = [
            credentials.password(context.stack_dir, account)
            for account in (CLIENT_ACCOUNT, BROKER_ACCOUNT)
        ]
        scram = [
            f"{SASL_MECHANISM}=[name={user},password={password}]"
            for user, password in zip((CLIENT_USER, BROKER_USER), passwords, strict=True)
        ]
        context.run(
            [
                *self._java_command(context, "kafka.tools.StorageTool"),
                "format",
                "--cluster-id",
                _new_cluster_id(),
                "--config",
                config_dir / "server.properties",
                *(part for entry in scram for part in ("--add-scram", entry)),
            ],
            what="Kafka storage format",
            log_path=self.log_paths(context.stack_dir)[1],
            as_account=False,
            timeout_seconds=120,
            redact=passwords,
        )

    def launch(self, context: ServerContext) -> subprocess.Popen[bytes]:
        config_dir = context.stack_dir / "config" / "kafka"
        return context.spawn(
            [
                *self._java_command(
                    context,
                    "kafka.Kafka",
                    jvm_options=(
                        f"-Xms{HEAP_INITIAL_MB}m",
                        f"-Xmx{HEAP_MAX_MB}m",
                        "-XX:+UseG1GC",
                        "-XX:MaxGCPauseMillis=20",
                        "-XX:InitiatingHeapOccupancyPercent=35",
                        "-XX:+ExplicitGCInvokesConcurrent",
                        f"-Dkafka.logs.dir={context.stack_dir / 'logs'}",
                    ),
                ),
                config_dir / "server.properties",
            ],
            log_path=self.log_paths(context.stack_dir)[1],
            # Kafka does not mind root; running it as the caller keeps its files theirs.
            as_account=False,
        )

    def server_pid(self, context: ServerContext, process: subprocess.Popen[bytes]) -> int | None:
        return process.pid

    def probe(self, context: ServerContext) -> bool:
        if not tcp_connects(context.ports["port"]):
            return False
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        config: dict[str, Any] = kafka_client_config(
            self.address(context.stack_dir, context.ports),
            KafkaSecurity.from_env(self.client_environment(context.stack_dir)),
            **{"socket.timeout.ms": 3000, "logger": _QUIET_LOGGER},
        )
        admin = AdminClient(config)
        try:
            metadata = admin.list_topics(timeout=3)
        except KafkaException:
            return False
        return NODE_ID in metadata.brokers

    def after_ready(self, context: ServerContext) -> None:
        pass

    def before_stop(self, context: ServerContext) -> None:
        # SIGTERM already triggers Kafka's controlled shutdown.
        pass

    def _libs_dir(self, context: ServerContext) -> Path:
        return context.stack_dir / "dist" / f"kafka-{KAFKA_VERSION}" / "libs"

    def _java_command(
        self, context: ServerContext, main_class: str, *, jvm_options: tuple[str, ...] = ()
    ) -> list[str | Path]:
        jdk = find_jdk(for_server=self.title)
        log4j_config = context.stack_dir / "config" / "kafka" / "log4j2.properties"
        return [
            jdk.java,
            "-server",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j_config}",
            *jvm_options,
            "-cp",
            f"{self._libs_dir(context)}/*",
            main_class,
        ]

    def _server_properties(self, context: ServerContext, data_dir: Path) -> str:
        port = context.ports["port"]
        controller_port = context.ports["controller_port"]
        broker_password = credentials.password(context.stack_dir, BROKER_ACCOUNT)
        config_dir = context.stack_dir / "config" / "kafka"
        settings = {
            "process.roles": "broker,controller",
            "node.id": str(NODE_ID),
            # A static quorum of this one node: nothing about the ports is stored in the
            # metadata log, so a changed port only needs a new config file.
            "controller.quorum.voters": f"{NODE_ID}@{LOOPBACK_HOST}:{controller_port}",
            "listeners": (
                f"SASL_SSL://{LOOPBACK_HOST}:{port},CONTROLLER://{LOOPBACK_HOST}:{controller_port}"
            ),
            "advertised.listeners": f"SASL_SSL://{LOOPBACK_HOST}:{port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "SASL_SSL",
            "listener.security.protocol.map": "SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT",
            "sasl.enabled.mechanisms": SASL_MECHANISM,
            "sasl.mechanism.inter.broker.protocol": SASL_MECHANISM,
            f"listener.name.sasl_ssl.{SASL_MECHANISM.lower()}.sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required "
                f'username="{BROKER_USER}" password="{broker_password}";'
            ),
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(config_dir / "keystore.pem"),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(credentials.stack_pki(context.stack_dir).ca_cert),
            "ssl.endpoint.identification.algorithm": "https",
            "log.dirs": str(data_dir),
            "num.partitions": "3",
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            # Consumers in tests join right away instead of after the default 3 s.
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "true",
        }
        lines = ["# Written by chronos-dev infra (chronos_dev.stack.kafka) on every start."]
        lines += [f"{key}={value}" for key, value in settings.items()]
        return "\n".join(lines) + "\n"


def _new_cluster_id() -> str:
    # Kafka's Uuid.toString(): URL-safe base64 of 16 random bytes without padding.
    # Kafka rejects ids starting with "-" (they look like options), so draw again.
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id

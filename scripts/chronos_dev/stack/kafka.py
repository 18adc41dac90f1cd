"""Kafka 4.4 in KRaft combined mode (one node is broker and controller), on 127.0.0.1.

The broker's jars come from Maven (``kafka-pom.xml``) into ``dist/kafka-4.4.0/libs``;
it runs on the JDK found by :mod:`chronos_dev.stack.java` with ``kafka.Kafka`` as the main
class, exactly what Kafka's own start script does.
"""

from __future__ import annotations

import base64
import logging
import subprocess
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from chronos_dev.stack import maven
from chronos_dev.stack.base import LOOPBACK_HOST, ServerContext, tcp_connects
from chronos_dev.stack.java import find_jdk

KAFKA_VERSION = "4.4.0"
NODE_ID = 1
HEAP_INITIAL_MB = 256
HEAP_MAX_MB = 512

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

    def address(self, ports: Mapping[str, int]) -> str:
        return f"{LOOPBACK_HOST}:{ports['port']}"

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
        (config_dir / "server.properties").write_text(self._server_properties(context, data_dir))
        (config_dir / "log4j2.properties").write_text(
            _LOG4J2_TEMPLATE.format(log_path=self.log_paths(context.stack_dir)[0])
        )
        if not (data_dir / "meta.properties").is_file():
            context.progress(f"{self.name}: formatting storage {data_dir}")
            context.run(
                [
                    *self._java_command(context, "kafka.tools.StorageTool"),
                    "format",
                    "--cluster-id",
                    _new_cluster_id(),
                    "--config",
                    config_dir / "server.properties",
                ],
                what="Kafka storage format",
                log_path=self.log_paths(context.stack_dir)[1],
                as_account=False,
                timeout_seconds=120,
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

        config: dict[str, Any] = {
            "bootstrap.servers": self.address(context.ports),
            "socket.timeout.ms": 3000,
            "logger": _QUIET_LOGGER,
        }
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
        settings = {
            "process.roles": "broker,controller",
            "node.id": str(NODE_ID),
            # A static quorum of this one node: nothing about the ports is stored in the
            # metadata log, so a changed port only needs a new config file.
            "controller.quorum.voters": f"{NODE_ID}@{LOOPBACK_HOST}:{controller_port}",
            "listeners": (
                f"PLAINTEXT://{LOOPBACK_HOST}:{port},CONTROLLER://{LOOPBACK_HOST}:{controller_port}"
            ),
            "advertised.listeners": f"PLAINTEXT://{LOOPBACK_HOST}:{port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
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

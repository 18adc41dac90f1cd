"""The local stack in one directory: ``up``, ``down``, ``status`` and ``environment``.

Layout of the stack directory (``<repo>/.stack`` unless ``CHRONOS_STACK_DIR`` is set)::

    state.json          layout version, and per server: ports, pid, start time, log path
    dist/               server distributions (Kafka jars, the Elasticsearch tree)
    pki/                the local CA, the servers' certificate, the token signing key
    secrets/            generated passwords and the PostgreSQL passfile (owner-only)
    config/<server>/    configuration written by chronos-dev
    data/<server>/      the servers' data
    logs/               one log per server (Elasticsearch: logs/elasticsearch/)
    run/                sockets and pid files

Servers run detached from the command that started them (their own session, output
to their log), so they outlive ``chronos-dev infra up``. ``down`` stops exactly the
recorded processes (see :mod:`chronos_dev.stack.processes`).

PostgreSQL and Elasticsearch refuse to run as root: when chronos-dev runs as root they
run as the unprivileged system user ``chronos`` (created when missing).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

from chronos_dev.stack import InfraError, credentials, lifecycle
from chronos_dev.stack.base import Progress, Server, ServerContext, free_port, no_progress
from chronos_dev.stack.elasticsearch import ElasticsearchServer
from chronos_dev.stack.kafka import KafkaServer
from chronos_dev.stack.postgres import PostgresServer
from chronos_dev.stack.processes import (
    command_line,
    is_root,
    process_start_ticks,
    service_account,
    terminate_process,
)
from chronos_dev.stack.state import ServerRecord, ServerStatus, StackState, StateFile

STACK_DIR_ENV = "CHRONOS_STACK_DIR"


def default_stack_dir() -> Path:
    """``CHRONOS_STACK_DIR``, else ``.stack`` in the repository (or the current directory)."""
    configured = os.environ.get(STACK_DIR_ENV)
    if configured:
        return Path(configured).expanduser().resolve()
    # This file is <repository>/scripts/chronos_dev/stack/stack.py.
    repository = Path(__file__).resolve().parents[3]
    if (repository / "pyproject.toml").is_file():
        return repository / ".stack"
    return Path.cwd().resolve() / ".stack"


def default_servers() -> list[Server]:
    """PostgreSQL, Kafka and Elasticsearch, in start order."""
    return [PostgresServer(), KafkaServer(), ElasticsearchServer()]


def grpc_environment(stack_dir: Path) -> dict[str, str]:
    """The key material for the gRPC servers (certificate, key, JWKS) and their clients
    (CA, token signing key), created where missing."""
    pki = credentials.stack_pki(stack_dir)
    return {
        "CHRONOS_TLS_CERT_FILE": str(pki.server_cert),
        "CHRONOS_TLS_KEY_FILE": str(pki.server_key),
        "CHRONOS_TLS_CA_FILE": str(pki.ca_cert),
        "CHRONOS_AUTH_JWKS_FILE": str(pki.jwks),
        "CHRONOS_AUTH_SIGNING_KEY_FILE": str(pki.signing_key),
        # The outbox poller signs the chain's checkpoints; `chronos verify` trusts them.
        "CHRONOS_CHECKPOINT_SIGNING_KEY_FILE": str(pki.checkpoint_signing_key),
        "CHRONOS_CHECKPOINT_JWKS_FILE": str(pki.checkpoint_jwks),
    }


class Stack:
    """The local stack in one directory: ``up``, ``down``, ``status`` and ``environment``."""

    def __init__(
        self,
        stack_dir: Path | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        servers: Sequence[Server] | None = None,
    ) -> None:
        self.stack_dir = stack_dir if stack_dir is not None else default_stack_dir()
        self.environ = environ if environ is not None else os.environ
        self.servers = list(servers) if servers is not None else default_servers()
        self._state_file = StateFile(self.stack_dir)

    @property
    def state_path(self) -> Path:
        return self._state_file.path

    def is_external(self, server: Server, record: ServerRecord | None) -> bool:
        """True when the environment names a server other than this stack's own.

        After ``eval "$(chronos-dev infra env)"`` the variables hold this stack's own
        addresses; those still count as local, so ``status``/``up`` keep managing them.
        """
        value = self.environ.get(server.external_env)
        if not value:
            return False
        return record is None or value != server.address(self.stack_dir, record.ports)

    def up(self, progress: Progress = no_progress) -> list[str]:
        """Provisions and starts every local server that is not already running.

        Already running servers are left alone. If anything fails, every process this
        call started is stopped again before the error is raised.

        Returns:
            The names of the servers this call started.

        Raises:
            InfraError: a server could not be provisioned or started, or did not become
                ready in time; the message names it, says why and shows its log's end.
        """
        self.stack_dir.mkdir(parents=True, exist_ok=True)
        with self._state_file.lock():
            state = self._state_file.load()
            credentials.stack_pki(self.stack_dir)
            contexts, pending = self._plan_up(state, progress)
            self._state_file.save(state)
            if not pending:
                return []
            self._start(pending, contexts, state, progress)
            return [server.name for server in pending]

    def _plan_up(
        self, state: StackState, progress: Progress
    ) -> tuple[dict[str, ServerContext], list[Server]]:
        # Chooses each local server's ports and context and records the ones to start.
        local_servers = [
            server
            for server in self.servers
            if not self.is_external(server, state.servers.get(server.name))
        ]
        account = service_account(progress) if local_servers and is_root() else None
        contexts: dict[str, ServerContext] = {}
        pending: list[Server] = []
        taken_ports = {port for record in state.servers.values() for port in record.ports.values()}
        for server in self.servers:
            if server not in local_servers:
                progress(f"{server.name}: external ({self.environ[server.external_env]})")
                continue
            record = state.servers.get(server.name)
            ports = self._resolve_ports(server, record, taken_ports)
            context = ServerContext(
                stack_dir=self.stack_dir, ports=ports, account=account, progress=progress
            )
            contexts[server.name] = context
            if record is not None and record.is_running():
                lifecycle.check_running(server, context, record)
                progress(f"{server.name}: already running (pid {record.pid})")
                continue
            lifecycle.check_ports_free(server, ports)
            state.servers[server.name] = ServerRecord(
                ports=ports, log_path=str(server.log_paths(self.stack_dir)[0])
            )
            pending.append(server)
        return contexts, pending

    def _start(
        self,
        pending: list[Server],
        contexts: dict[str, ServerContext],
        state: StackState,
        progress: Progress,
    ) -> None:
        launched: list[tuple[Server, subprocess.Popen[bytes]]] = []
        try:
            for server in pending:
                progress(f"{server.name}: provisioning")
                started_seconds = time.monotonic()
                server.provision(contexts[server.name])
                elapsed_seconds = time.monotonic() - started_seconds
                progress(f"{server.name}: provisioned in {elapsed_seconds:.1f} s")
            # All servers boot in parallel; the waits below then overlap.
            for server in pending:
                context = contexts[server.name]
                progress(
                    f"{server.name}: starting on {server.address(self.stack_dir, context.ports)}"
                )
                launched.append((server, server.launch(context)))
            for server, process in launched:
                lifecycle.wait_ready(
                    server,
                    contexts[server.name],
                    process,
                    state.servers[server.name],
                    on_identified=lambda: self._state_file.save(state),
                )
                server.after_ready(contexts[server.name])
                progress(f"{server.name}: ready")
        except BaseException:
            # Stop whatever this call started, so a failed `up` leaves no strays.
            for server, process in launched:
                lifecycle.abort(server, contexts[server.name], process, state.servers[server.name])
            self._state_file.save(state)
            raise

    def down(
        self,
        *,
        purge: bool = False,
        only: Collection[str] | None = None,
        progress: Progress = no_progress,
    ) -> None:
        """Stops the recorded server processes; with ``purge`` also deletes the stack dir.

        Args:
            purge: delete the stack directory afterwards (data, downloads, logs).
            only: stop just these servers (names as returned by :meth:`up`).

        Raises:
            InfraError: the stack directory has an unknown layout (and ``purge`` is off),
                or a process could not be stopped.
        """
        assert not (purge and only is not None), "purging deletes every server's data"
        if not self.stack_dir.exists():
            progress(f"nothing to do: {self.stack_dir} does not exist")
            return
        with self._state_file.lock():
            try:
                state = self._state_file.load()
            except InfraError:
                if not purge:
                    raise
                self._stop_unknown_layout(progress)
            else:
                self._stop_recorded(state, only, progress)
        if purge:
            shutil.rmtree(self.stack_dir)
            progress(f"removed {self.stack_dir}")

    def _stop_recorded(
        self, state: StackState, only: Collection[str] | None, progress: Progress
    ) -> None:
        # Regardless of CHRONOS_* variables: down stops what state.json records.
        account = service_account(progress) if is_root() else None
        for server in reversed(self.servers):
            record = state.servers.get(server.name)
            if only is not None and server.name not in only:
                continue
            if record is None or record.pid is None:
                continue
            if record.is_running():
                context = ServerContext(
                    stack_dir=self.stack_dir, ports=record.ports, account=account, progress=progress
                )
                progress(f"{server.name}: stopping pid {record.pid}")
                lifecycle.stop(server, context, record)
                progress(f"{server.name}: stopped")
            record.pid = record.process_start_ticks = record.started_at = None
            self._state_file.save(state)

    def status(self) -> list[ServerStatus]:
        """The state of every server, probing the running ones over their protocol."""
        state = self._state_file.load()
        return [self._status_of(server, state.servers.get(server.name)) for server in self.servers]

    def _status_of(self, server: Server, record: ServerRecord | None) -> ServerStatus:
        if self.is_external(server, record):
            address = self.environ[server.external_env]
            return ServerStatus(server.name, server.title, "external", None, address, "-")
        log_path = str(server.log_paths(self.stack_dir)[0])
        if record is None:
            return ServerStatus(server.name, server.title, "stopped", None, "-", log_path)
        address = server.address(self.stack_dir, record.ports)
        if not record.is_running():
            return ServerStatus(server.name, server.title, "stopped", None, address, log_path)
        context = ServerContext(
            stack_dir=self.stack_dir, ports=record.ports, account=None, progress=no_progress
        )
        state = "running" if server.probe(context) else "not answering"
        return ServerStatus(server.name, server.title, state, record.pid, address, log_path)

    def environment(self) -> dict[str, str]:
        """What clients need, variable -> value: ``CHRONOS_PG_DSN``,
        ``CHRONOS_KAFKA_BOOTSTRAP`` and ``CHRONOS_ES_URL`` with the security settings of
        each local server (paths of the CA and password files, never a secret), and the
        key material of the gRPC servers and their clients (``CHRONOS_TLS_*``,
        ``CHRONOS_AUTH_*``).

        Raises:
            InfraError: a local server has no known port yet (run ``chronos-dev infra up``).
        """
        state = self._state_file.load()
        values: dict[str, str] = {}
        for server in self.servers:
            record = state.servers.get(server.name)
            if self.is_external(server, record):
                values[server.external_env] = self.environ[server.external_env]
                continue
            ports = self._ports_from_env(server)
            if record is not None:
                ports = {**record.ports, **ports}
            if set(ports) != set(server.port_envs):
                raise InfraError(
                    f"{server.title}: no port is known yet; run `chronos-dev infra up` first "
                    f"(or set {server.external_env} to use an external server)."
                )
            values[server.external_env] = server.address(self.stack_dir, ports)
            values.update(server.client_environment(self.stack_dir))
        return values | grpc_environment(self.stack_dir)

    def _ports_from_env(self, server: Server) -> dict[str, int]:
        ports: dict[str, int] = {}
        for port_name, variable in server.port_envs.items():
            value = self.environ.get(variable)
            if value:
                try:
                    ports[port_name] = int(value)
                except ValueError:
                    raise InfraError(
                        f"{server.title}: {variable}={value!r} is not a port number"
                    ) from None
        return ports

    def _resolve_ports(
        self, server: Server, record: ServerRecord | None, taken: set[int]
    ) -> dict[str, int]:
        # Environment first, then the remembered port, then a free one not given to
        # another server of this stack.
        ports = self._ports_from_env(server)
        for port_name in server.port_envs:
            if port_name not in ports:
                if record is not None and port_name in record.ports:
                    ports[port_name] = record.ports[port_name]
                else:
                    ports[port_name] = free_port(avoid=taken)
            taken.add(ports[port_name])
        return ports

    def _stop_unknown_layout(self, progress: Progress) -> None:
        # Best effort for a directory we cannot interpret: signal only recorded pids whose
        # command line names this stack directory, so no unrelated process is touched.
        for pid in self._state_file.recorded_pids():
            ticks = process_start_ticks(pid)
            if ticks is not None and str(self.stack_dir) in command_line(pid):
                progress(f"stopping pid {pid} (recorded in the unknown-layout state file)")
                terminate_process(pid, ticks, timeout_seconds=30.0)

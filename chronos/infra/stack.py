"""Orchestration of the local stack: the state file, ports, starting, bounded waits, stopping.

Layout of the stack directory (``<repo>/.stack`` unless ``CHRONOS_STACK_DIR`` is set)::

    state.json          layout version, and per server: ports, pid, start time, log path
    dist/               server distributions (Kafka jars, the Elasticsearch tree)
    config/<server>/    configuration written by chronos
    data/<server>/      the servers' data
    logs/               one log per server (Elasticsearch: logs/elasticsearch/)
    run/                sockets and pid files

Servers run detached from the command that started them (their own session, output
to their log), so they outlive ``chronos infra up``. ``down`` stops exactly the
recorded processes; a recorded pid only counts while the process with that pid has
the recorded start time, so a recycled pid is never signalled.

PostgreSQL and Elasticsearch refuse to run as root: when chronos runs as root they
run as the unprivileged system user ``chronos`` (created when missing).
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from chronos.infra import InfraError, tail_lines

# Bump when the directory layout or state.json changes incompatibly; an older stack
# directory is then refused with a hint to purge it rather than misread.
LAYOUT_VERSION = 1
STATE_FILE_NAME = "state.json"
SERVICE_ACCOUNT_NAME = "chronos"
LOOPBACK_HOST = "127.0.0.1"

# Environment variables.
STACK_DIR_ENV = "CHRONOS_STACK_DIR"

_POLL_INTERVAL_SECONDS = 0.5
_KILL_WAIT_SECONDS = 10.0

Progress = Callable[[str], None]


def _no_progress(message: str) -> None:
    del message


@dataclass(frozen=True)
class ServiceAccount:
    """The unprivileged user the servers run as when chronos runs as root."""

    name: str
    uid: int
    gid: int


class ServerContext:
    """What a server module needs to provision, launch and probe its server."""

    def __init__(
        self,
        *,
        stack_dir: Path,
        ports: Mapping[str, int],
        account: ServiceAccount | None,
        progress: Progress,
    ) -> None:
        self.stack_dir = stack_dir
        self.ports = dict(ports)
        self.account = account
        self.progress = progress

    def directory(self, *parts: str, owned_by_account: bool = False) -> Path:
        """``<stack>/<parts...>``, created; handed to the service account if asked."""
        path = self.stack_dir.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        if owned_by_account:
            self.hand_over(path)
        return path

    def hand_over(self, path: Path) -> None:
        """Makes the service account own ``path`` and everything under it (no-op unless root)."""
        if self.account is None:
            return
        uid, gid = self.account.uid, self.account.gid
        for item in [path, *path.rglob("*")] if path.is_dir() else [path]:
            info = item.lstat()
            if info.st_uid != uid or info.st_gid != gid:
                os.lchown(item, uid, gid)

    def make_reachable(self, path: Path, *, whole_tree: bool) -> None:
        """Lets the service account reach ``path`` (and read/execute the tree below it).

        Adds only the missing "others" permission bits: search (x) on the parent
        directories, and read plus search/execute on the tree when asked. Each change is
        reported, since it widens access to files outside the stack directory.
        """
        if self.account is None:
            return
        changed: list[Path] = []
        for parent in reversed(path.resolve().parents):
            if _add_mode(parent, stat.S_IXOTH):
                changed.append(parent)
        if whole_tree:
            items = [path, *path.rglob("*")] if path.is_dir() else [path]
            for item in items:
                if item.is_symlink():
                    continue
                mode = item.stat().st_mode
                wanted = stat.S_IROTH
                if stat.S_ISDIR(mode) or mode & stat.S_IXUSR:
                    wanted |= stat.S_IXOTH
                if _add_mode(item, wanted):
                    changed.append(item)
        if changed:
            shown = ", ".join(str(item) for item in changed[:5])
            more = f" and {len(changed) - 5} more" if len(changed) > 5 else ""
            self.progress(
                f"note: added 'others' read/search permission to {shown}{more} so that user "
                f"{self.account.name} can use {path}"
            )

    def spawn(
        self,
        argv: Sequence[str | Path],
        *,
        log_path: Path,
        as_account: bool,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """Starts a detached server process with stdout/stderr appended to ``log_path``.

        The process gets its own session, so it survives the command that started it
        and a Ctrl-C in that terminal does not reach it.
        """
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            return subprocess.Popen(
                [str(part) for part in argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd or self.stack_dir,
                env=self._environment(env, as_account),
                start_new_session=True,
                close_fds=True,
                **self._user_arguments(as_account),
            )

    def run(
        self,
        argv: Sequence[str | Path],
        *,
        what: str,
        log_path: Path,
        as_account: bool,
        timeout_seconds: float,
        env: Mapping[str, str] | None = None,
    ) -> None:
        """Runs a provisioning command to completion, its output appended to ``log_path``.

        Raises:
            InfraError: the command failed or timed out; the message shows its output.
        """
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            log.write(("$ " + " ".join(str(part) for part in argv) + "\n").encode())
            log.flush()
            try:
                completed = subprocess.run(
                    [str(part) for part in argv],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.stack_dir,
                    env=self._environment(env, as_account),
                    timeout=timeout_seconds,
                    check=False,
                    **self._user_arguments(as_account),
                )
            except subprocess.TimeoutExpired:
                raise InfraError(
                    f"{what} did not finish within {timeout_seconds:.0f} s; output: {log_path}"
                ) from None
        if completed.returncode != 0:
            raise InfraError(
                f"{what} failed (exit code {completed.returncode}); {log_path} ends with:\n"
                + tail_lines(log_path)
            )

    def _user_arguments(self, as_account: bool) -> dict[str, Any]:
        if not as_account or self.account is None:
            return {}
        # extra_groups=[] drops root's supplementary groups too.
        return {"user": self.account.uid, "group": self.account.gid, "extra_groups": []}

    def _environment(self, extra: Mapping[str, str] | None, as_account: bool) -> dict[str, str]:
        environment = dict(os.environ)
        if as_account and self.account is not None:
            # root's HOME is not readable by the service account; point it at the stack.
            environment["HOME"] = str(self.stack_dir)
            environment["USER"] = environment["LOGNAME"] = self.account.name
        if extra:
            environment.update(extra)
        return environment


class Server(Protocol):
    """One server of the stack; implemented by the postgres, kafka and elasticsearch modules."""

    name: str
    """Key in state.json and in status output, e.g. ``"postgres"``."""
    title: str
    """For messages, e.g. ``"PostgreSQL"``."""
    external_env: str
    """When this variable is set, the server is external and not provisioned."""
    port_envs: Mapping[str, str]
    """Port name -> environment variable that pins it; the first is the client port."""
    ready_timeout_seconds: float
    stop_timeout_seconds: float
    detaches: bool
    """True when the launched process exits after handing over to the server process."""

    def log_paths(self, stack_dir: Path) -> list[Path]:
        """The server's logs, the main one first (shown by status, tailed on errors)."""
        ...

    def address(self, ports: Mapping[str, int]) -> str:
        """What clients use: the value of ``external_env`` for this local server."""
        ...

    def provision(self, context: ServerContext) -> None:
        """Downloads, unpacks, initializes and configures; idempotent."""
        ...

    def launch(self, context: ServerContext) -> subprocess.Popen[bytes]:
        """Starts the server process (does not wait for it)."""
        ...

    def server_pid(self, context: ServerContext, process: subprocess.Popen[bytes]) -> int | None:
        """The pid of the server itself, once known."""
        ...

    def probe(self, context: ServerContext) -> bool:
        """One bounded attempt to talk to the server over its protocol; True if it answers."""
        ...

    def after_ready(self, context: ServerContext) -> None:
        """Post-start setup that needs the server up (e.g. creating a database); idempotent."""
        ...

    def before_stop(self, context: ServerContext) -> None:
        """A graceful stop through the server's own tool, before the signals; may do nothing."""
        ...


@dataclass
class ServerRecord:
    """What state.json remembers about one local server."""

    ports: dict[str, int]
    pid: int | None = None
    process_start_ticks: int | None = None
    started_at: str | None = None
    log_path: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "ports": self.ports,
            "pid": self.pid,
            "process_start_ticks": self.process_start_ticks,
            "started_at": self.started_at,
            "log_path": self.log_path,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ServerRecord:
        return cls(
            ports={str(key): int(value) for key, value in data.get("ports", {}).items()},
            pid=data.get("pid"),
            process_start_ticks=data.get("process_start_ticks"),
            started_at=data.get("started_at"),
            log_path=data.get("log_path"),
        )

    def is_running(self) -> bool:
        return (
            self.pid is not None
            and self.process_start_ticks is not None
            and process_start_ticks(self.pid) == self.process_start_ticks
        )


@dataclass
class StackState:
    """The content of state.json."""

    servers: dict[str, ServerRecord] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "layout_version": LAYOUT_VERSION,
            "servers": {name: record.to_json() for name, record in self.servers.items()},
        }


@dataclass(frozen=True)
class ServerStatus:
    """One row of ``chronos infra status``."""

    name: str
    title: str
    state: str
    """``running``, ``not answering``, ``stopped`` or ``external``."""
    pid: int | None
    address: str
    log_path: str

    @property
    def is_usable(self) -> bool:
        return self.state in ("running", "external")


def default_stack_dir() -> Path:
    """``CHRONOS_STACK_DIR``, else ``.stack`` in the repository (or the current directory)."""
    configured = os.environ.get(STACK_DIR_ENV)
    if configured:
        return Path(configured).expanduser().resolve()
    repository = Path(__file__).resolve().parents[2]
    if (repository / "pyproject.toml").is_file():
        return repository / ".stack"
    return Path.cwd().resolve() / ".stack"


def default_servers() -> list[Server]:
    """PostgreSQL, Kafka and Elasticsearch, in start order."""
    # Imported here: the server modules import this one for their type hints.
    from chronos.infra.elasticsearch import ElasticsearchServer
    from chronos.infra.kafka import KafkaServer
    from chronos.infra.postgres import PostgresServer

    return [PostgresServer(), KafkaServer(), ElasticsearchServer()]


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

    @property
    def state_path(self) -> Path:
        return self.stack_dir / STATE_FILE_NAME

    def is_external(self, server: Server, record: ServerRecord | None) -> bool:
        """True when the environment names a server other than this stack's own.

        After ``eval "$(chronos infra env)"`` the variables hold this stack's own
        addresses; those still count as local, so ``status``/``up`` keep managing them.
        """
        value = self.environ.get(server.external_env)
        if not value:
            return False
        return record is None or value != server.address(record.ports)

    def up(self, progress: Progress = _no_progress) -> list[str]:
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
        with self._lock():
            state = self._load_state()
            local_servers = [
                server
                for server in self.servers
                if not self.is_external(server, state.servers.get(server.name))
            ]
            account = service_account(progress) if local_servers and _is_root() else None
            contexts: dict[str, ServerContext] = {}
            pending: list[Server] = []
            taken_ports = {
                port for record in state.servers.values() for port in record.ports.values()
            }
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
                    self._check_running(server, context, record)
                    progress(f"{server.name}: already running (pid {record.pid})")
                    continue
                self._check_ports_free(server, ports)
                state.servers[server.name] = ServerRecord(
                    ports=ports, log_path=str(server.log_paths(self.stack_dir)[0])
                )
                pending.append(server)
            self._save_state(state)
            if not pending:
                return []

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
                    address = server.address(context.ports)
                    progress(f"{server.name}: starting on {address}")
                    launched.append((server, server.launch(context)))
                for server, process in launched:
                    self._wait_ready(server, contexts[server.name], process, state)
                    server.after_ready(contexts[server.name])
                    progress(f"{server.name}: ready")
            except BaseException:
                # Stop whatever this call started, so a failed `up` leaves no strays.
                for server, process in launched:
                    self._abort(server, contexts[server.name], process, state.servers[server.name])
                self._save_state(state)
                raise
            return [server.name for server in pending]

    def down(
        self,
        *,
        purge: bool = False,
        only: Collection[str] | None = None,
        progress: Progress = _no_progress,
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
        with self._lock():
            try:
                state = self._load_state()
            except InfraError:
                if not purge:
                    raise
                self._stop_unknown_layout(progress)
            else:
                # Regardless of CHRONOS_* variables: down stops what state.json records.
                account = service_account(progress) if _is_root() else None
                for server in reversed(self.servers):
                    record = state.servers.get(server.name)
                    if only is not None and server.name not in only:
                        continue
                    if record is None or record.pid is None:
                        continue
                    if record.is_running():
                        context = ServerContext(
                            stack_dir=self.stack_dir,
                            ports=record.ports,
                            account=account,
                            progress=progress,
                        )
                        progress(f"{server.name}: stopping pid {record.pid}")
                        self._stop(server, context, record)
                        progress(f"{server.name}: stopped")
                    record.pid = record.process_start_ticks = record.started_at = None
                    self._save_state(state)
        if purge:
            shutil.rmtree(self.stack_dir)
            progress(f"removed {self.stack_dir}")

    def status(self) -> list[ServerStatus]:
        """The state of every server, probing the running ones over their protocol."""
        state = self._load_state()
        rows: list[ServerStatus] = []
        for server in self.servers:
            record = state.servers.get(server.name)
            if self.is_external(server, record):
                address = self.environ[server.external_env]
                rows.append(ServerStatus(server.name, server.title, "external", None, address, "-"))
                continue
            log_path = str(server.log_paths(self.stack_dir)[0])
            if record is None:
                rows.append(ServerStatus(server.name, server.title, "stopped", None, "-", log_path))
                continue
            address = server.address(record.ports)
            if not record.is_running():
                rows.append(
                    ServerStatus(server.name, server.title, "stopped", None, address, log_path)
                )
                continue
            context = ServerContext(
                stack_dir=self.stack_dir, ports=record.ports, account=None, progress=_no_progress
            )
            answering = server.probe(context)
            rows.append(
                ServerStatus(
                    server.name,
                    server.title,
                    "running" if answering else "not answering",
                    record.pid,
                    address,
                    log_path,
                )
            )
        return rows

    def environment(self) -> dict[str, str]:
        """``CHRONOS_PG_DSN``/``CHRONOS_KAFKA_BOOTSTRAP``/``CHRONOS_ES_URL`` -> value.

        Raises:
            InfraError: a local server has no known port yet (run ``chronos infra up``).
        """
        state = self._load_state()
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
                    f"{server.title}: no port is known yet; run `chronos infra up` first "
                    f"(or set {server.external_env} to use an external server)."
                )
            values[server.external_env] = server.address(ports)
        return values

    # -- internals -------------------------------------------------------------------

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        # Two concurrent `up`s (e.g. two test sessions) must not both start servers.
        lock_path = self.stack_dir / ".lock"
        with lock_path.open("a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)

    def _load_state(self) -> StackState:
        if not self.state_path.exists():
            return StackState()
        purge_hint = (
            f"Run `chronos infra down --purge` (or remove {self.stack_dir}) and then "
            "`chronos infra up` to provision a fresh stack."
        )
        try:
            data = json.loads(self.state_path.read_text())
        except (OSError, ValueError) as error:
            raise InfraError(f"cannot read {self.state_path}: {error}. {purge_hint}") from None
        version = data.get("layout_version") if isinstance(data, dict) else None
        if version != LAYOUT_VERSION:
            raise InfraError(
                f"the stack directory {self.stack_dir} has layout version {version!r}, but "
                f"this chronos understands only version {LAYOUT_VERSION}. {purge_hint}"
            )
        servers = {
            str(name): ServerRecord.from_json(record)
            for name, record in data.get("servers", {}).items()
        }
        return StackState(servers=servers)

    def _save_state(self, state: StackState) -> None:
        # Write-then-rename, so a crash never leaves a half-written state file.
        temporary = self.state_path.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(state.to_json(), indent=2, sort_keys=True) + "\n")
        temporary.replace(self.state_path)

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

    def _check_running(self, server: Server, context: ServerContext, record: ServerRecord) -> None:
        if context.ports != record.ports:
            wanted = ", ".join(
                f"{server.port_envs[name]}={port}" for name, port in context.ports.items()
            )
            raise InfraError(
                f"{server.title} is already running (pid {record.pid}) on ports {record.ports}, "
                f"but the environment asks for {wanted}; run `chronos infra down` first."
            )
        deadline = time.monotonic() + server.ready_timeout_seconds
        while not server.probe(context):
            # It may still be booting from an `up` that was interrupted.
            if time.monotonic() > deadline or not record.is_running():
                raise InfraError(
                    f"{server.title} is running (pid {record.pid}) but does not answer on "
                    f"{server.address(record.ports)}; run `chronos infra down` and "
                    "`chronos infra up`.\n" + self._log_excerpt(server)
                )
            time.sleep(_POLL_INTERVAL_SECONDS)

    def _check_ports_free(self, server: Server, ports: Mapping[str, int]) -> None:
        for port_name, port in ports.items():
            if not port_is_free(port):
                variable = server.port_envs[port_name]
                raise InfraError(
                    f"{server.title}: port {port} on {LOOPBACK_HOST} is already in use by "
                    f"another process. Set {variable} to another port, or stop what listens "
                    f"there (see `ss -ltnp 'sport = :{port}'`)."
                )

    def _wait_ready(
        self,
        server: Server,
        context: ServerContext,
        process: subprocess.Popen[bytes],
        state: StackState,
    ) -> None:
        record = state.servers[server.name]
        deadline = time.monotonic() + server.ready_timeout_seconds
        while True:
            if record.pid is None:
                pid = server.server_pid(context, process)
                if pid is not None:
                    ticks = process_start_ticks(pid)
                    if ticks is not None:
                        record.pid, record.process_start_ticks = pid, ticks
                        record.started_at = datetime.datetime.now(datetime.UTC).isoformat(
                            timespec="seconds"
                        )
                        self._save_state(state)
            exit_code = process.poll()
            launcher_failed = exit_code is not None and (not server.detaches or exit_code != 0)
            server_gone = record.pid is not None and not record.is_running()
            if launcher_failed or server_gone:
                reason = (
                    f"exited with code {exit_code}"
                    if launcher_failed
                    else f"process {record.pid} exited"
                )
                raise InfraError(
                    f"{server.title} failed to start: {reason}.\n" + self._log_excerpt(server)
                )
            if record.pid is not None and server.probe(context):
                return
            if time.monotonic() > deadline:
                raise InfraError(
                    f"{server.title} did not become ready within "
                    f"{server.ready_timeout_seconds:.0f} s on {server.address(context.ports)}.\n"
                    + self._log_excerpt(server)
                )
            time.sleep(_POLL_INTERVAL_SECONDS)

    def _log_excerpt(self, server: Server) -> str:
        parts: list[str] = []
        for index, path in enumerate(server.log_paths(self.stack_dir)):
            if index > 0 and (not path.exists() or path.stat().st_size == 0):
                continue
            parts.append(f"Log {path}, last lines:\n{tail_lines(path)}")
        return "\n".join(parts)

    def _abort(
        self,
        server: Server,
        context: ServerContext,
        process: subprocess.Popen[bytes],
        record: ServerRecord,
    ) -> None:
        if record.is_running():
            self._stop(server, context, record, graceful=False)
        if process.poll() is None:
            # A launcher that has not handed over yet: its session is ours alone
            # (start_new_session), so signal that whole process group.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=_KILL_WAIT_SECONDS)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=_KILL_WAIT_SECONDS)
        record.pid = record.process_start_ticks = record.started_at = None

    def _stop(
        self,
        server: Server,
        context: ServerContext,
        record: ServerRecord,
        *,
        graceful: bool = True,
    ) -> None:
        assert record.pid is not None and record.process_start_ticks is not None
        if graceful:
            try:
                server.before_stop(context)
            except InfraError as error:
                context.progress(f"{server.name}: graceful stop failed ({error}); signalling")
        terminate_process(
            record.pid, record.process_start_ticks, timeout_seconds=server.stop_timeout_seconds
        )

    def _stop_unknown_layout(self, progress: Progress) -> None:
        # Best effort for a directory we cannot interpret: signal only recorded pids whose
        # command line names this stack directory, so no unrelated process is touched.
        try:
            data = json.loads(self.state_path.read_text())
            servers = data.get("servers", {}) if isinstance(data, dict) else {}
            pids = [int(record["pid"]) for record in servers.values() if record.get("pid")]
        except (OSError, ValueError, TypeError, AttributeError, KeyError):
            pids = []
        for pid in pids:
            ticks = process_start_ticks(pid)
            if ticks is not None and str(self.stack_dir) in _command_line(pid):
                progress(f"stopping pid {pid} (recorded in the unknown-layout state file)")
                terminate_process(pid, ticks, timeout_seconds=30.0)


def service_account(progress: Progress = _no_progress) -> ServiceAccount:
    """The unprivileged ``chronos`` system user, created with ``useradd`` when missing."""
    try:
        entry = pwd.getpwnam(SERVICE_ACCOUNT_NAME)
    except KeyError:
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        command = [
            useradd,
            "--system",
            "--no-create-home",
            "--user-group",
            "--shell",
            "/usr/sbin/nologin",
            SERVICE_ACCOUNT_NAME,
        ]
        try:
            subprocess.run(command, check=True, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError) as error:
            detail = getattr(error, "stderr", None) or str(error)
            raise InfraError(
                "PostgreSQL and Elasticsearch refuse to run as root, and creating the system "
                f"user {SERVICE_ACCOUNT_NAME!r} to run them failed: {detail.strip()}"
            ) from None
        progress(f"created system user {SERVICE_ACCOUNT_NAME!r} to run the servers as")
        entry = pwd.getpwnam(SERVICE_ACCOUNT_NAME)
    return ServiceAccount(name=entry.pw_name, uid=entry.pw_uid, gid=entry.pw_gid)


def _is_root() -> bool:
    return os.geteuid() == 0


def process_start_ticks(pid: int) -> int | None:
    """The process's start time (clock ticks since boot), or None if it is gone.

    Together with the pid this identifies a process: pids are recycled, start times
    of different processes with the same pid differ. A zombie counts as gone (and
    is reaped if it is our child).
    """
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces; fields after it are fixed.
    fields = text[text.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        return None
    return int(fields[19])


def terminate_process(pid: int, start_ticks: int, *, timeout_seconds: float) -> None:
    """SIGTERM, a bounded wait, then SIGKILL; only while ``pid`` is still that process.

    Raises:
        InfraError: the process survived SIGKILL.
    """
    for signal_number, wait_seconds in (
        (signal.SIGTERM, timeout_seconds),
        (signal.SIGKILL, _KILL_WAIT_SECONDS),
    ):
        if process_start_ticks(pid) != start_ticks:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal_number)
        deadline = time.monotonic() + wait_seconds
        while time.monotonic() < deadline:
            if process_start_ticks(pid) != start_ticks:
                return
            time.sleep(0.2)
    raise InfraError(f"process {pid} is still alive after SIGKILL")


def port_is_free(port: int) -> bool:
    """True when nothing listens on ``127.0.0.1:port`` (a bind succeeds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # SO_REUSEADDR like the servers use, so TIME_WAIT leftovers do not count as busy.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((LOOPBACK_HOST, port))
        except OSError:
            return False
    return True


def free_port(*, avoid: set[int] | None = None) -> int:
    """A port on 127.0.0.1 that is free now (picked by the kernel)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((LOOPBACK_HOST, 0))
            port = int(probe.getsockname()[1])
        if not avoid or port not in avoid:
            return port


def tcp_connects(port: int, *, timeout_seconds: float = 1.0) -> bool:
    """True when a TCP connection to ``127.0.0.1:port`` succeeds."""
    try:
        with socket.create_connection((LOOPBACK_HOST, port), timeout=timeout_seconds):
            return True
    except OSError:
        return False


def _command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _add_mode(path: Path, bits: int) -> bool:
    mode = path.stat().st_mode
    if mode & bits == bits:
        return False
    path.chmod(stat.S_IMODE(mode) | bits)
    return True

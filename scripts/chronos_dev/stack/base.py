"""What every server module of the stack shares: the context to provision, launch and
probe a server, the :class:`Server` protocol, and the loopback network helpers.

The server modules (postgres, kafka, elasticsearch) import only this module and
:mod:`chronos_dev.stack.processes`; :mod:`chronos_dev.stack.stack` sits on top of them all.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from chronos_dev.stack import InfraError, tail_lines

LOOPBACK_HOST = "127.0.0.1"

Progress = Callable[[str], None]


def no_progress(message: str) -> None:
    """A :data:`Progress` that reports nothing."""
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
            if add_mode(parent, stat.S_IXOTH):
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
                if add_mode(item, wanted):
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
        redact: Sequence[str] = (),
    ) -> None:
        """Runs a provisioning command to completion, its output appended to ``log_path``.

        The command line is logged first, with each string of ``redact`` (a password on
        the command line of a tool that takes it no other way) shown as ``***``.

        Raises:
            InfraError: the command failed or timed out; the message shows its output.
        """
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            shown = " ".join(str(part) for part in argv)
            for secret in redact:
                shown = shown.replace(secret, "***")
            log.write(("$ " + shown + "\n").encode())
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

    def address(self, stack_dir: Path, ports: Mapping[str, int]) -> str:
        """What clients use: the value of ``external_env`` for this local server."""
        ...

    def client_environment(self, stack_dir: Path) -> dict[str, str]:
        """The other variables a client of this local server needs (CA, user, password
        file), by name; never a secret itself, only the paths of the files holding them."""
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


def add_mode(path: Path, bits: int) -> bool:
    """Adds the permission ``bits`` to ``path``; True when they were missing."""
    mode = path.stat().st_mode
    if mode & bits == bits:
        return False
    path.chmod(stat.S_IMODE(mode) | bits)
    return True

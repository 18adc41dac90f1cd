"""The measured stages (b)-(d) and (f) against the running services, and their
preparation.

(a) is in :mod:`chronos_dev.bench.pgbench`, (s) in :mod:`chronos_dev.bench.sustainable`, (e) in
:mod:`chronos_dev.bench.open_loop`, (g) in :mod:`chronos_dev.bench.memory`; the composition root
(:mod:`chronos_dev.bench.cli`) runs them in order.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import psycopg

from chronos.event_store.reader import head_position
from chronos.read_model.client import elasticsearch_client
from chronos.top import scrape
from chronos_dev.bench.clients import ThroughputResult, from_phase_report
from chronos_dev.bench.ghz import GhzCall, chronos_schema, run_ghz, write_health_protoset
from chronos_dev.bench.options import BenchOptions
from chronos_dev.bench.pyclient import (
    EXECUTE_BATCH,
    GET_ACCOUNT,
    HEALTH_CHECK,
    UnaryLoad,
    run_unary_load,
)
from chronos_dev.bench.resources import (
    PG_CONNECT_TIMEOUT_SECONDS,
    BenchError,
    BenchResources,
    Infrastructure,
)
from chronos_dev.bench.service_metrics import (
    BATCH_SIZE,
    REQUEST_DURATION,
    histogram_figures,
    scrape_all,
)
from chronos_dev.launcher import PROJECT_ROOT, ServiceSet, service_environment
from chronos_dev.loadtest.options import Distribution, Options
from chronos_dev.loadtest.outcomes import Outcomes
from chronos_dev.loadtest.runner import PhasePlan, PhaseReport, run_phase
from chronos_dev.loadtest.scenarios import account_id

CURRENCY = "EUR"
# Funding per account: far above what random transfers of at most AMOUNT_MAX_MINOR move
# in a run, so no transfer is refused for lack of funds (a cheap refusal would inflate
# the throughput).
INITIAL_BALANCE_MINOR = 10**9
AMOUNT_MAX_MINOR = 20_000
OVERDRAFT_LIMIT_MINOR = 10_000
# Round-robin request templates in ghz's data file for TransferFunds.
TRANSFER_TEMPLATES_MAX = 10_000
LAG_WAIT_SECONDS_MAX = 30.0
LAG_PROBES_IN_FLIGHT_MAX = 16
# Latency points the load test keeps for plots; the bench draws none.
PLOT_SAMPLES_MAX = 1000
REBUILD_TIMEOUT_SECONDS = 3600.0
_POLL_INTERVAL_SECONDS = 0.2
# Open-loop rate of the warm-up: well under what the pipeline sustains here.
WARM_UP_RATE_PER_SECOND = 200.0
# Longest wait for Elasticsearch's merges to finish before a read ceiling is measured.
_SETTLE_SECONDS_MAX = 60.0
# Unmeasured GetAccount calls before (d). Every bench run reads fresh indices, and
# Elasticsearch's CPU for the same reads falls over their first seconds; without this,
# (d) would measure Elasticsearch warming up. On a stack the bench itself started (cold
# JVMs) 10 s was not enough.
GET_ACCOUNT_WARM_UP_SECONDS = 20.0


def progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


@dataclass(slots=True)
class BenchContext:
    """What the stages share."""

    options: BenchOptions
    infrastructure: Infrastructure
    resources: BenchResources
    services: ServiceSet
    run_id: str
    work_dir: Path
    ghz_path: str | None
    start_position: int = 0
    funded_account_ids: list[str] = field(default_factory=list)
    funded_account_indices: tuple[int, ...] = ()
    # Every answer the Python client got, for the exactly-once check.
    outcomes: Outcomes = field(default_factory=Outcomes)


def loadtest_options(
    context: BenchContext,
    *,
    scenario: str,
    concurrency: int,
    processes: int,
    lag_sample_fraction: float,
) -> Options:
    """Options for :func:`chronos_dev.loadtest.runner.run_phase` against the bench's services."""
    options = context.options
    return Options(
        scenario=scenario,
        duration_seconds=options.duration_seconds,
        count=None,
        concurrency=concurrency,
        rate_per_second=0.0,
        accounts=options.accounts,
        seed=options.seed,
        processes=processes,
        command_addr=context.services.command_addr,
        query_addr=context.services.query_addr,
        pg_dsn=context.resources.pg_dsn,
        es_url=context.infrastructure.es_url,
        index_prefix=context.resources.index_prefix,
        output_dir=context.work_dir,
        plot=False,
        distribution=Distribution.UNIFORM,
        read_fraction=0.0,
        duplicate_fraction=0.0,
        currency=CURRENCY,
        initial_balance_minor=INITIAL_BALANCE_MINOR,
        overdraft_limit_minor=OVERDRAFT_LIMIT_MINOR,
        amount_max_minor=AMOUNT_MAX_MINOR,
        rpc_timeout_seconds=options.rpc_timeout_seconds,
        lag_sample_fraction=lag_sample_fraction,
        lag_wait_seconds_max=LAG_WAIT_SECONDS_MAX,
        lag_probes_in_flight_max=LAG_PROBES_IN_FLIGHT_MAX,
        catch_up_wait_seconds_max=options.catch_up_wait_seconds_max,
        plot_samples_max=PLOT_SAMPLES_MAX,
        progress_interval_seconds=1.0,
        security=context.services.security,
    )


def _absorb(context: BenchContext, report: PhaseReport) -> None:
    context.outcomes.merge(report.outcomes)


# --- preparation ----------------------------------------------------------------------


def open_and_fund_accounts(context: BenchContext) -> dict[str, Any]:
    """Opens and funds ``--accounts`` accounts with the load test's setup phase."""
    options = context.options
    loadtest = loadtest_options(
        context,
        scenario="setup",
        concurrency=options.concurrency,
        processes=1,
        lag_sample_fraction=0.0,
    )
    plan = PhasePlan(
        phase="setup",
        run_id=context.run_id,
        account_indices=tuple(range(options.accounts)),
        count_total=options.accounts,
        duration_seconds=None,
        rate_per_second=0.0,
    )
    report = run_phase(loadtest, plan)
    _absorb(context, report)
    funded = tuple(report.funded_account_indices)
    if len(funded) < 2:
        raise BenchError(f"only {len(funded)} of {options.accounts} accounts could be funded")
    context.funded_account_indices = funded
    context.funded_account_ids = [account_id(context.run_id, index) for index in funded]
    return {
        "accounts_funded": len(funded),
        "elapsed_seconds": round(report.elapsed_seconds, 3),
        "commands_per_second": round(2 * report.operations / report.elapsed_seconds, 1)
        if report.elapsed_seconds > 0
        else 0.0,
    }


def wait_for_projection(context: BenchContext) -> float:
    """Waits (bounded) until the projector's watermark reaches the event store's head.

    Returns:
        The seconds waited.

    Raises:
        BenchError: the projection did not catch up in time.
    """
    started = time.monotonic()
    deadline = started + context.options.catch_up_wait_seconds_max
    with psycopg.connect(
        context.resources.pg_dsn, autocommit=True, connect_timeout=PG_CONNECT_TIMEOUT_SECONDS
    ) as conn:
        head = head_position(conn)
    watermark = 0.0
    while time.monotonic() < deadline:
        snapshot = scrape(context.services.projector_metrics)
        if snapshot is not None:
            watermark = snapshot.total("chronos_projection_watermark_position")
            if watermark >= head:
                return time.monotonic() - started
        time.sleep(_POLL_INTERVAL_SECONDS)
    raise BenchError(
        f"the projection stayed at position {watermark:.0f} of {head} for "
        f"{context.options.catch_up_wait_seconds_max:.0f} s"
    )


def wait_for_merges(context: BenchContext) -> float:
    """Waits (bounded) until Elasticsearch runs no segment merge, twice in a row.

    After a write stage, merges go on for seconds and take a core's share; the read
    ceilings (c) and (d) are measured without them, as pgbench (a) runs on a quiet
    machine. Returns the seconds waited (the bound is not an error: the stage runs).
    """
    started = time.monotonic()
    deadline = started + _SETTLE_SECONDS_MAX
    quiet = 0
    with elasticsearch_client(context.infrastructure.es_url, request_timeout=10) as es:
        while time.monotonic() < deadline and quiet < 2:
            nodes = es.nodes.stats(metric="indices", index_metric="merge")["nodes"]
            merging = sum(node["indices"]["merges"]["current"] for node in nodes.values())
            quiet = quiet + 1 if merging == 0 else 0
            time.sleep(_POLL_INTERVAL_SECONDS)
    return time.monotonic() - started


def open_loop_transfers(
    context: BenchContext,
    *,
    phase: str,
    rate_per_second: float,
    duration_seconds: float,
    lag_sample_fraction: float,
) -> PhaseReport:
    """Transfers at ``rate_per_second`` (open loop) with the load test's runner; their
    outcomes join the exactly-once check."""
    options = context.options
    loadtest = replace(
        loadtest_options(
            context,
            scenario="transfers",
            concurrency=options.concurrency,
            processes=options.client_processes,
            lag_sample_fraction=lag_sample_fraction,
        ),
        duration_seconds=duration_seconds,
    )
    plan = PhasePlan(
        phase=phase,
        run_id=context.run_id,
        account_indices=context.funded_account_indices,
        count_total=None,
        duration_seconds=duration_seconds,
        rate_per_second=rate_per_second,
    )
    report = run_phase(loadtest, plan)
    _absorb(context, report)
    return report


def warm_up(context: BenchContext) -> dict[str, Any]:
    """Transfers through the whole pipeline, unmeasured, then a catch-up and the merges.

    A fresh stack's first heavy minute is the JVMs compiling: right after a restart,
    Kafka and Elasticsearch use about twice the CPU they use a few minutes later, and
    (b) would measure that instead of the ledger.
    """
    options = context.options
    report = open_loop_transfers(
        context,
        phase="warm-up",
        rate_per_second=WARM_UP_RATE_PER_SECOND,
        duration_seconds=options.warm_up_seconds,
        lag_sample_fraction=0.0,
    )
    return {
        "seconds": options.warm_up_seconds,
        "rate_per_second": WARM_UP_RATE_PER_SECOND,
        "operations": report.operations,
        "failed": report.operation_errors,
        "transfers_completed": report.operations - report.operation_errors,
        "catch_up_seconds": round(wait_for_projection(context), 3),
        "merges_seconds": round(wait_for_merges(context), 3),
    }


# --- (b) TransferFunds, (c) the empty call, (d) GetAccount -----------------------------


def _transfer_templates(context: BenchContext, path: Path) -> Path:
    """ghz's data file: transfers between random funded accounts, fresh request_ids."""
    rng = random.Random(f"{context.options.seed}:ghz-transfers")
    accounts = context.funded_account_ids
    count = min(TRANSFER_TEMPLATES_MAX, max(100, 10 * len(accounts)))
    templates = []
    for _ in range(count):
        source, target = rng.sample(accounts, 2)
        templates.append(
            {
                # ghz renders the template per call: every request is a new command.
                "request_id": "bench-ghz-{{newUUID}}",
                "from_account_id": source,
                "to_account_id": target,
                "amount": {"currency": CURRENCY, "minor_units": rng.randint(1, AMOUNT_MAX_MINOR)},
                "description": "bench transfer",
            }
        )
    path.write_text(json.dumps(templates))
    return path


def transfer_funds(
    context: BenchContext, *, read_side: bool, phase: str | None = None
) -> ThroughputResult:
    """(b) TransferFunds closed loop, as fast as the command server answers. Without
    ``read_side`` the poller and the projector are paused for the stage: the write path
    alone, like pgbench in (a). ``phase`` names the stage's requests (default: by
    ``read_side``)."""
    # The phase names the load test's request ids: each stage needs its own.
    if phase is None:
        phase = "transfers" if read_side else "transfers-write-path"
    with _read_side(context, read_side):
        result = _with_server_figures(
            context, "TransferFunds", lambda: _transfer_funds(context, phase)
        )
    result.extra["read_side"] = _READ_SIDE_STATES[read_side]
    return result


_READ_SIDE_STATES = {True: "running", False: "paused (poller, projector)"}


def _read_side(context: BenchContext, running: bool) -> AbstractContextManager[None]:
    """Leaves the read side running, or pauses it for the block."""
    return contextlib.nullcontext() if running else context.services.read_side_paused()


def transfer_batches(context: BenchContext, *, read_side: bool) -> ThroughputResult:
    """(b') Transfers in ExecuteBatch calls, closed loop: the bulk path's throughput.

    Counts commands (accepted transfers), not calls; latencies are per call. Every
    command's outcome goes into the exactly-once check. Without ``read_side`` the
    poller and the projector are paused for the stage: the write path alone, like
    pgbench in (a).
    """
    options = context.options
    load = UnaryLoad(
        rpc=EXECUTE_BATCH,
        address=context.services.command_addr,
        account_ids=tuple(context.funded_account_ids),
        concurrency=options.batch_concurrency,
        # One channel (connection) per process: the kernel spreads connections, not
        # calls, over the command server's processes.
        processes=min(options.client_processes, options.batch_concurrency),
        duration_seconds=options.duration_seconds,
        rpc_timeout_seconds=options.rpc_timeout_seconds,
        batch_size=options.batch_size,
        currency=CURRENCY,
        amount_max_minor=AMOUNT_MAX_MINOR,
        seed=options.seed,
        # Unique per stage: the two batch stages' call counters both start at zero.
        request_id_prefix=f"lt-{context.run_id}-{'br' if read_side else 'bp'}-",
        security=context.services.security,
    )
    with _read_side(context, read_side):
        result = _with_server_figures(context, "ExecuteBatch", lambda: run_unary_load(load))
    result.extra["batch_size"] = options.batch_size
    result.extra["read_side"] = _READ_SIDE_STATES[read_side]
    if result.outcomes is not None:
        context.outcomes.merge(result.outcomes)
    return result


def _with_server_figures(
    context: BenchContext, method: str, run: Callable[[], ThroughputResult]
) -> ThroughputResult:
    """Runs a command stage and adds the command workers' own figures: the time spent in
    the server and how many commands each group-commit transaction carried."""
    endpoints = context.services.command_metrics
    before = scrape_all(endpoints)
    result = run()
    after = scrape_all(endpoints)
    result.extra["server_side_latency_ms"] = histogram_figures(
        before, after, REQUEST_DURATION, method=method
    )
    batches = after.total(f"{BATCH_SIZE}_count") - before.total(f"{BATCH_SIZE}_count")
    commands = after.total(f"{BATCH_SIZE}_sum") - before.total(f"{BATCH_SIZE}_sum")
    result.extra["writer_transactions"] = int(batches)
    result.extra["writer_commands_per_transaction_mean"] = (
        round(commands / batches, 2) if batches > 0 else None
    )
    return result


def _transfer_funds(context: BenchContext, phase: str) -> ThroughputResult:
    options = context.options
    target = context.services.command_addr
    if context.ghz_path is not None:
        call = GhzCall(
            method="chronos.v1.CommandService/TransferFunds",
            schema_arguments=chronos_schema("commands.proto"),
            data_file=_transfer_templates(context, context.work_dir / "transfers.json"),
        )
        return _closed_loop_ghz(context, call, target, context.work_dir / f"ghz-{phase}.json")
    loadtest = loadtest_options(
        context,
        scenario="transfers",
        concurrency=options.concurrency,
        processes=options.client_processes,
        lag_sample_fraction=0.0,
    )
    plan = PhasePlan(
        phase=phase,
        run_id=context.run_id,
        account_indices=context.funded_account_indices,
        count_total=None,
        duration_seconds=options.duration_seconds,
        rate_per_second=0.0,
    )
    report = run_phase(loadtest, plan)
    _absorb(context, report)
    return from_phase_report(
        report,
        rpc="TransferFunds",
        target=target,
        concurrency=options.concurrency,
        processes=options.client_processes,
    )


def empty_call(context: BenchContext, target: str) -> ThroughputResult:
    """(c) ``grpc.health.v1.Health/Check`` on ``target``: the RPC stack alone."""
    options = context.options
    if context.ghz_path is not None:
        protoset = write_health_protoset(context.work_dir / "health.protoset")
        call = GhzCall(
            method="grpc.health.v1.Health/Check",
            schema_arguments=("--protoset", str(protoset)),
            data="{}",
        )
        return _closed_loop_ghz(
            context,
            call,
            target,
            context.work_dir / f"ghz-health-check-{target.rsplit(':', 1)[1]}.json",
        )
    return run_unary_load(
        UnaryLoad(
            rpc=HEALTH_CHECK,
            address=target,
            account_ids=(),
            concurrency=options.concurrency,
            processes=options.client_processes,
            duration_seconds=options.duration_seconds,
            rpc_timeout_seconds=options.rpc_timeout_seconds,
            security=context.services.security,
        )
    )


def get_account(context: BenchContext) -> ThroughputResult:
    """(d) GetAccount on the query server, round-robin over the funded accounts, after
    ``GET_ACCOUNT_WARM_UP_SECONDS`` of the same calls, unmeasured."""
    options = context.options
    target = context.services.query_addr
    call: GhzCall | None = None
    if context.ghz_path is not None:
        data_file = context.work_dir / "accounts.json"
        data_file.write_text(json.dumps([{"account_id": a} for a in context.funded_account_ids]))
        call = GhzCall(
            method="chronos.v1.QueryService/GetAccount",
            schema_arguments=chronos_schema("queries.proto"),
            data_file=data_file,
        )

    def run(duration_seconds: float) -> ThroughputResult:
        if call is not None:
            return _closed_loop_ghz(
                context,
                call,
                target,
                context.work_dir / "ghz-get-account.json",
                duration_seconds=duration_seconds,
            )
        return run_unary_load(
            UnaryLoad(
                rpc=GET_ACCOUNT,
                address=target,
                account_ids=tuple(context.funded_account_ids),
                concurrency=options.concurrency,
                processes=options.client_processes,
                duration_seconds=duration_seconds,
                rpc_timeout_seconds=options.rpc_timeout_seconds,
                security=context.services.security,
            )
        )

    run(min(GET_ACCOUNT_WARM_UP_SECONDS, options.duration_seconds))
    return run(options.duration_seconds)


# --- (f) rebuild ------------------------------------------------------------------------

_REBUILT = re.compile(
    r"rebuilt version (?P<version>\d+): (?P<events>[\d,]+) events .*?"
    r"replay (?P<replay>[\d.]+) s \((?P<rate>[\d,]+) events/s\), total (?P<total>[\d.]+) s"
)


def rebuild(context: BenchContext) -> dict[str, Any]:
    """(f) ``chronos projection rebuild`` of the bench database into the bench prefix."""
    return run_rebuild(
        context.resources.pg_dsn, context.infrastructure.es_url, context.resources.index_prefix
    )


def run_rebuild(pg_dsn: str, es_url: str, index_prefix: str) -> dict[str, Any]:
    """``chronos projection rebuild`` of the database at ``pg_dsn`` into ``index_prefix``,
    as its own process; its figures parsed from what it prints."""
    command = [
        sys.executable,
        "-m",
        "chronos.cli",
        "projection",
        "rebuild",
        "--index-prefix",
        index_prefix,
    ]
    env = service_environment({"CHRONOS_PG_DSN": pg_dsn, "CHRONOS_ES_URL": es_url})
    try:
        completed = subprocess.run(
            command,
            capture_output=True,
            text=True,
            env=env,
            cwd=PROJECT_ROOT,
            timeout=REBUILD_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise BenchError("chronos projection rebuild did not finish in time") from error
    match = _REBUILT.search(completed.stdout)
    if completed.returncode != 0 or match is None:
        raise BenchError(
            f"chronos projection rebuild failed with status {completed.returncode}: "
            f"{(completed.stderr + completed.stdout)[-3000:]}"
        )
    return {
        "events": int(match["events"].replace(",", "")),
        "replay_seconds": float(match["replay"]),
        "events_per_second": int(match["rate"].replace(",", "")),
        "total_seconds": float(match["total"]),
        "new_version": int(match["version"]),
        "command": "chronos projection rebuild --index-prefix <bench prefix>",
        "output": completed.stdout.strip()[-1000:],
    }


def _closed_loop_ghz(
    context: BenchContext,
    call: GhzCall,
    target: str,
    report_path: Path,
    *,
    duration_seconds: float | None = None,
) -> ThroughputResult:
    """One closed-loop ghz stage with the bench's concurrency and connections, for the
    bench's duration unless ``duration_seconds`` is given."""
    options = context.options
    assert context.ghz_path is not None
    return run_ghz(
        context.ghz_path,
        call,
        security=context.services.security,
        target=target,
        concurrency=options.concurrency,
        connections=options.connections,
        duration_seconds=options.duration_seconds if duration_seconds is None else duration_seconds,
        rpc_timeout_seconds=options.rpc_timeout_seconds,
        report_path=report_path,
    )

"""Composition root of ``scripts/bench``: stack, fresh resources, services, stages, report.

Exit status: 0 when every stage ran and every invariant held; 1 when a stage failed or
an invariant did not hold (a missed performance target is not a failure); 2 for bad
arguments; 130 when interrupted.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
import psycopg

from chronos.errors import ChronosError
from chronos_dev.bench import (
    cpu,
    hold_stages,
    machine,
    open_loop,
    pgbench,
    security,
    stages,
    sustainable,
)
from chronos_dev.bench.clients import ThroughputResult
from chronos_dev.bench.components import cpu_ms_per_transfer
from chronos_dev.bench.ghz import GHZ_INSTALL_COMMAND, find_ghz, ghz_version
from chronos_dev.bench.local_pids import listening_pids
from chronos_dev.bench.memory import MemorySampler
from chronos_dev.bench.options import BenchOptions, parse_options
from chronos_dev.bench.rate_search import half_load_rate
from chronos_dev.bench.report import (
    format_cpu,
    format_cpu_per_transfer,
    format_invariants,
    format_probes,
    format_table,
    ratios,
    targets,
    write_result,
)
from chronos_dev.bench.resources import (
    BenchError,
    BenchResources,
    Infrastructure,
    acquire_stack,
    create_resources,
    leftover_resources,
    postgres_settings,
    release_stack,
    remove_resources,
)
from chronos_dev.launcher import Services, ServiceSet
from chronos_dev.loadtest import invariants
from chronos_dev.loadtest.runner import LoadTestError

SCHEMA = "chronos-bench/1"
# What a stage may fail with: recorded, and the stages that need it are skipped.
_STAGE_ERRORS = (BenchError, LoadTestError, ChronosError, psycopg.Error, grpc.RpcError, OSError)
_T = TypeVar("_T")
CPU_STAGE_SECONDS_MIN = 1.0

_MEMORY_METHOD = (
    "sampled from /proc every --memory-interval-seconds during the whole run. Services "
    "(single processes started by the bench): max(VmHWM, sampled VmRSS peak). "
    "PostgreSQL: postmaster plus all its children (backends, background workers), the "
    "peak over samples of the sum of their PSS (smaps_rollup), so shared_buffers counts "
    "once; rss_peak_mb is the sum of their RSS, which counts shared memory once per "
    "process. Kafka, Elasticsearch: one JVM each, sampled VmRSS peak during the run "
    "(root_vm_hwm_mb is the peak since the server started, before the bench too)."
)


class _Stages:
    """Runs stages, records failures and skips the stages that need a failed one."""

    def __init__(
        self, results: dict[str, Any], sampler: MemorySampler, only: frozenset[str]
    ) -> None:
        self._only = only
        self._results = results
        self._sampler = sampler
        self._failed: set[str] = set()
        self._cores: dict[str, dict[str, float]] = results.setdefault("cpu_cores_used", {})
        self._cpu_seconds: dict[str, dict[str, float]] = results.setdefault("cpu_seconds_used", {})
        self._seconds: dict[str, float] = results.setdefault("stage_seconds", {})
        self._errors: dict[str, str] = results.setdefault("errors", {})

    def attempt(
        self, key: str, title: str, run: Callable[[], _T], *, needs: tuple[str, ...] = ()
    ) -> _T | None:
        if self._only and key not in self._only and key != "setup":
            self._results.setdefault("not_run", []).append(key)
            return None
        missing = [need for need in needs if need in self._failed]
        if missing:
            self._errors[key] = f"skipped: needs {', '.join(missing)}"
            self._failed.add(key)
            stages.progress(f"{title}: skipped (needs {', '.join(missing)})")
            return None
        stages.progress(title)
        started = time.monotonic()
        cpu_before = cpu.snapshot(self._sampler.peaks)
        try:
            value = run()
        except _STAGE_ERRORS as error:
            self._errors[key] = f"{type(error).__name__}: {error}"
            self._failed.add(key)
            stages.progress(f"{title}: FAILED: {error}")
            return None
        finally:
            elapsed_seconds = time.monotonic() - started
            self._seconds[key] = round(elapsed_seconds, 3)
            # CPU time is counted in clock ticks (10 ms): over a short stage the ratio
            # would be noise.
            if elapsed_seconds >= CPU_STAGE_SECONDS_MIN:
                after = cpu.snapshot(self._sampler.peaks)
                self._cores[key] = cpu.cores_used(cpu_before, after)
                used = cpu.seconds_used(cpu_before, after)
                self._cpu_seconds[key] = {name: round(s, 3) for name, s in used.items()}
        if isinstance(value, ThroughputResult):
            self._results[key] = value.to_json()
        elif isinstance(value, dict):
            self._results[key] = value
        return value


def _options_json(options: BenchOptions) -> dict[str, Any]:
    values = dataclasses.asdict(options)
    values["output_dir"] = str(options.output_dir)
    values["only"] = sorted(options.only)
    return values


def _watch_stack(sampler: MemorySampler, infrastructure: Infrastructure) -> dict[str, bool]:
    """Watches the stack's servers; returns name -> whether it is a Chronos service."""
    watched: dict[str, bool] = {}
    for name, pid in sorted(infrastructure.pids.items()):
        # Only PostgreSQL runs as a tree of processes sharing memory (shared_buffers).
        is_postgres = name == "postgres"
        sampler.watch(name, pid, tree=is_postgres, proportional=is_postgres)
        watched[name] = False
    return watched


def _watch_services(
    sampler: MemorySampler, services: ServiceSet, options: BenchOptions, suffix: str = ""
) -> dict[str, bool]:
    """Watches the set's processes, named by module (and worker) and ``suffix``."""
    watched: dict[str, bool] = {}
    for module, processes, workers in (
        ("command_server", options.command_processes, services.command_worker_pids),
        ("query_server", options.query_processes, services.query_worker_pids),
    ):
        if processes > 1:
            sampler.watch(f"{module} supervisor{suffix}", services.processes[module].pid)
            watched[f"{module} supervisor{suffix}"] = True
        for name, pid in workers.items():
            sampler.watch(f"{name}{suffix}", pid)
            watched[f"{name}{suffix}"] = True
    for module in ("outbox_poller", "projector"):
        if module in services.processes:
            sampler.watch(f"{module}{suffix}", services.processes[module].pid)
            watched[f"{module}{suffix}"] = True
    return watched


def _memory_json(sampler: MemorySampler, is_service: dict[str, bool]) -> dict[str, Any]:
    mib = 1024 * 1024
    processes = {}
    for name, peak in sorted(sampler.peaks.items()):
        processes[name] = {
            "peak_mb": round(peak.peak_bytes / mib, 1),
            "service": is_service.get(name, False),
            **peak.to_json(),
        }
    return {
        "processes": processes,
        "interval_seconds": sampler.interval_seconds,
        "method": _MEMORY_METHOD,
    }


def _run_with_services(
    options: BenchOptions,
    infrastructure: Infrastructure,
    resources: BenchResources,
    sampler: MemorySampler,
    results: dict[str, Any],
    ghz_path: str | None,
    is_service: dict[str, bool],
) -> None:
    work_dir = options.output_dir / "work"
    work_dir.mkdir(parents=True, exist_ok=True)
    runner = _Stages(results, sampler, options.only)

    pgbench_path = pgbench.find_pgbench(options.pgbench_path)

    def run_pgbench() -> dict[str, Any]:
        pgbench.prepare_tables(resources.pg_dsn, options.accounts)
        result = pgbench.run_pgbench(
            pgbench_path,
            resources.pg_dsn,
            accounts=options.accounts,
            clients=options.pgbench_clients,
            threads=options.pgbench_threads,
            duration_seconds=options.duration_seconds,
            work_dir=work_dir / "pgbench",
        )
        return result.to_json()

    # Before the services start, so that nothing else uses the server meanwhile.
    runner.attempt("pgbench", "(a) pgbench: one transfer as hand-written SQL", run_pgbench)

    # Before the services start: they inherit it (see hold_stages); an explicit setting
    # in the environment wins.
    os.environ.setdefault(
        hold_stages.EXPIRY_INTERVAL_VARIABLE, f"{hold_stages.EXPIRY_INTERVAL_SECONDS:g}"
    )
    stages.progress(f"starting the services ({options.command_processes} command processes)")
    with (
        Services(
            resources.backends(infrastructure),
            command_processes=options.command_processes,
            query_processes=options.query_processes,
            log_dir=options.output_dir / "logs",
        ) as services,
        security.insecure_services(options, infrastructure, resources) as insecure,
    ):
        is_service.update(_watch_services(sampler, services, options))
        if insecure is not None:
            is_service.update(_watch_services(sampler, insecure, options, security.NAME_SUFFIX))
        results["environment"]["services"] = {
            "command_addr": services.command_addr,
            "query_addr": services.query_addr,
            "command_processes": options.command_processes,
            "query_processes": options.query_processes,
            "logs": str(options.output_dir / "logs"),
            "security": security.describe(services, insecure),
        }
        context = stages.BenchContext(
            options=options,
            infrastructure=infrastructure,
            resources=resources,
            services=services,
            run_id=str(uuid.uuid4()),
            work_dir=work_dir,
            ghz_path=ghz_path,
            start_position=invariants.start_position(resources.pg_dsn),
        )
        runner.attempt(
            "setup",
            f"opening and funding {options.accounts} accounts",
            lambda: stages.open_and_fund_accounts(context),
        )
        if options.warm_up_seconds > 0:
            runner.attempt(
                "warm_up",
                f"warm-up: {options.warm_up_seconds:g} s of transfers at "
                f"{stages.WARM_UP_RATE_PER_SECOND:g}/s through the whole pipeline, unmeasured",
                lambda: stages.warm_up(context),
                needs=("setup",),
            )
        transfer = runner.attempt(
            "transfer_funds",
            f"(b) TransferFunds, closed loop, concurrency {options.concurrency}",
            lambda: stages.transfer_funds(context, read_side=True),
            needs=("setup",),
        )
        runner.attempt(
            security.TRANSFER_FUNDS_OFF,
            "(b-off) the same with TLS and authentication off (a second set of servers)",
            lambda: security.transfer_funds(context, insecure),
            needs=("setup",),
        )
        # Its backlog waits, with (b')'s, for the drain below.
        runner.attempt(
            "transfer_funds_write_path",
            f"(bw) TransferFunds, closed loop, concurrency {options.concurrency}, read side "
            "paused (the write path alone, as in a)",
            lambda: stages.transfer_funds(context, read_side=False),
            needs=("setup",),
        )
        batches = (
            f"transfers in ExecuteBatch calls of {options.batch_size}, closed loop, "
            f"{options.batch_concurrency} calls in flight"
        )
        runner.attempt(
            "transfer_batches",
            f"(b') {batches}, read side paused (the write path alone, as in a)",
            lambda: stages.transfer_batches(context, read_side=False),
            needs=("setup",),
        )
        runner.attempt(
            "drain",
            "the read side catches up with the paused stages' backlog",
            lambda: {"seconds": round(stages.wait_for_projection(context), 3)},
            needs=("setup",),
        )
        runner.attempt(
            "transfer_batches_pipeline",
            f"(b'') {batches}, read side running",
            lambda: stages.transfer_batches(context, read_side=True),
            needs=("setup", "drain"),
        )
        _hold_stages(runner, context, options)
        # Before (c) and (d): the read side has caught up with the write stages and
        # Elasticsearch has finished merging, so the read ceilings are measured on a
        # quiet machine, as pgbench is.
        runner.attempt(
            "catch_up",
            "waiting for the projection to catch up and Elasticsearch's merges to finish",
            lambda: {
                "seconds": round(stages.wait_for_projection(context), 3),
                "merges_seconds": round(stages.wait_for_merges(context), 3),
            },
            needs=("setup",),
        )
        runner.attempt(
            "empty_call",
            "(c) the empty call: grpc.health.v1.Health/Check on the command server",
            lambda: stages.empty_call(context, services.command_addr),
        )
        # Not asked for, but the fair yardstick for (d): the query server runs one
        # process, the command server (where (c) runs) --command-processes.
        runner.attempt(
            "empty_call_query_server",
            "(c') the empty call on the query server",
            lambda: stages.empty_call(context, services.query_addr),
        )
        runner.attempt(
            "get_account",
            "(d) GetAccount, round-robin over the funded accounts (after 10 s unmeasured)",
            lambda: stages.get_account(context),
            needs=("setup", "catch_up"),
        )
        runner.attempt(
            security.GET_ACCOUNT_OFF,
            "(d-off) the same with TLS and authentication off (a second set of servers)",
            lambda: security.get_account(context, insecure),
            needs=("setup", "catch_up"),
        )
        search = runner.attempt(
            "sustainable_rate",
            f"(s) the sustainable rate: at most {options.probes_max} open-loop probes of "
            f"{options.probe_seconds:g} s below (b)'s throughput",
            lambda: sustainable.sustainable_rate(
                context, transfer.throughput_per_second if transfer is not None else 0.0
            ),
            needs=("transfer_funds", "catch_up"),
        )
        half_rate, rate_source = half_load_rate(
            override=options.half_load_rate,
            sustainable=(search or {}).get("sustainable_rate_per_second"),
            low=(search or {}).get("low_per_second"),
        )
        runner.attempt(
            "half_load",
            f"(e) TransferFunds open loop at {half_rate:.0f}/s ({rate_source}) and the lags",
            lambda: _half_load(context, half_rate, rate_source),
            needs=("catch_up",) if options.half_load_rate else ("sustainable_rate", "catch_up"),
        )
        runner.attempt(
            "rebuild",
            "(f) chronos projection rebuild of the bench event store",
            lambda: stages.rebuild(context),
        )
        runner.attempt(
            "invariants",
            "checking the invariants (event store and read side)",
            lambda: _check_invariants(context),
            needs=("setup",),
        )
        # The services' last memory figures, while they still run.
        sampler.sample()
        stages.progress("stopping the services")


def _hold_stages(runner: _Stages, context: stages.BenchContext, options: BenchOptions) -> None:
    """(h), (h') and (x), read side running; their backlog waits for the catch-up."""
    runner.attempt(
        "hold_pairs",
        f"(h) hold pairs: CreatePendingTransfer, then PostPendingTransfer of its hold, "
        f"closed loop, concurrency {options.concurrency}",
        lambda: hold_stages.hold_pairs(context),
        needs=("setup",),
    )
    runner.attempt(
        "hold_pair_batches",
        f"(h') hold pairs in ExecuteBatch: {options.batch_size} creates, then their posts, "
        f"closed loop, {options.batch_concurrency} pairs of calls in flight",
        lambda: hold_stages.hold_pair_batches(context),
        needs=("setup",),
    )
    runner.attempt(
        "hold_expiry",
        f"(x) the hold expiry job: {options.expiry_holds:,} holds falling due together",
        lambda: hold_stages.hold_expiry(context),
        needs=("setup",),
    )


def _half_load(
    context: stages.BenchContext, rate_per_second: float, rate_source: str
) -> dict[str, Any]:
    if rate_per_second <= 0:
        raise BenchError(f"no rate for the half load: {rate_source}; --half-load-rate sets one")
    return open_loop.half_load(context, rate_per_second, rate_source)


def _check_invariants(context: stages.BenchContext) -> dict[str, Any]:
    checks = invariants.check_all(
        pg_dsn=context.resources.pg_dsn,
        outcomes=context.outcomes,
        request_id_prefix=f"lt-{context.run_id}-",
        start_position=context.start_position,
        query_addr=context.services.query_addr,
        security=context.services.security,
        es_url=context.infrastructure.es_url,
        index_prefix=context.resources.index_prefix,
        wait_seconds_max=context.options.catch_up_wait_seconds_max,
        rpc_timeout_seconds=context.options.rpc_timeout_seconds,
    )
    return {
        "passed": all(check.passed for check in checks),
        "checks": [{"name": c.name, "passed": c.passed, "detail": c.detail} for c in checks],
        "note": (
            "exactly-once covers the requests of the Python client (setup, batches, half "
            "load); "
            "the other checks cover every event, ghz's transfers included"
        ),
    }


def _leftovers(options: BenchOptions, infrastructure: Infrastructure) -> list[str]:
    """Removes earlier runs' leftovers when asked, else says they are there."""
    leftovers = leftover_resources(infrastructure)
    if not leftovers:
        return []
    if not options.remove_leftovers:
        stages.progress(
            f"{len(leftovers)} earlier run(s) stopped before removing their databases, "
            f"topics and indices ({leftovers[0].database} ...); --remove-leftovers removes them"
        )
        return []
    for leftover in leftovers:
        remove_resources(infrastructure, leftover)
    return [leftover.database for leftover in leftovers]


def run(options: BenchOptions) -> int:
    """Runs the whole bench; returns the exit status (see the module docstring)."""
    options.output_dir.mkdir(parents=True, exist_ok=True)
    started_monotonic = time.monotonic()
    results: dict[str, Any] = {
        "schema": SCHEMA,
        "machine": machine.describe(),
        "options": _options_json(options),
        "errors": {},
    }
    ghz_path = find_ghz(options.ghz_path) if options.use_ghz else None
    results["client"] = {
        "tool": "ghz" if ghz_path else "python",
        "ghz_path": ghz_path,
        "ghz_version": ghz_version(ghz_path) if ghz_path else None,
        "why": (
            "ghz found"
            if ghz_path
            else ("--no-ghz" if not options.use_ghz else f"ghz not found ({GHZ_INSTALL_COMMAND})")
        ),
    }
    if options.use_ghz and not ghz_path:
        stages.progress(f"ghz not found, using the Python client; install: {GHZ_INSTALL_COMMAND}")
    sampler = MemorySampler(interval_seconds=options.memory_interval_seconds)
    sampler.start()
    is_service: dict[str, bool] = {}
    infrastructure: Infrastructure | None = None
    try:
        infrastructure = acquire_stack()
        # Servers given by address have no pids: find them, to watch their CPU and memory.
        for name, pid in listening_pids(infrastructure).items():
            infrastructure.pids.setdefault(name, pid)
        results["environment"] = {"stack_started_by_bench": infrastructure.started}
        is_service.update(_watch_stack(sampler, infrastructure))
        results["environment"]["leftovers_removed"] = _leftovers(options, infrastructure)
        resources = create_resources(infrastructure)
        stages.progress(
            f"bench database {resources.database}, index prefix {resources.index_prefix}"
        )
        results["environment"].update(resources.to_json())
        results["environment"]["postgres_settings"] = postgres_settings(resources.pg_dsn)
        try:
            _run_with_services(
                options, infrastructure, resources, sampler, results, ghz_path, is_service
            )
        finally:
            if options.keep_resources:
                stages.progress(f"kept {resources.database} and the rest (--keep)")
            else:
                remove_resources(infrastructure, resources)
    except _STAGE_ERRORS as error:
        results["errors"]["bench"] = f"{type(error).__name__}: {error}"
        stages.progress(f"FAILED: {error}")
    finally:
        sampler.stop()
        if infrastructure is not None:
            release_stack(infrastructure)
    results["memory"] = _memory_json(sampler, is_service)
    results["ratios"] = ratios(results)
    results["cpu_ms_per_transfer"] = cpu_ms_per_transfer(results)
    results["targets"] = [target.to_json() for target in targets(results)]
    results["machine"]["load_average_at_end"] = [round(v, 2) for v in machine.load_average()]
    results["elapsed_seconds"] = round(time.monotonic() - started_monotonic, 1)
    path = write_result(options.output_dir, results)
    print(format_table(results))
    print(format_probes(results))
    print(format_cpu_per_transfer(results))
    print(format_cpu(results))
    print(format_invariants(results.get("invariants")))
    for key, message in results["errors"].items():
        print(f"error in {key}: {message}")
    print(f"results: {path}")
    invariants_passed = bool(results.get("invariants", {}).get("passed"))
    return 0 if invariants_passed and not results["errors"] else 1


def main(argv: list[str] | None = None) -> int:
    options = parse_options(argv)
    try:
        return run(options)
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130

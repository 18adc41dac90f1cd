"""Runs one phase of a load test in one or several client processes, with a progress line.

Each client process runs a grpc.aio event loop with its share of ``--concurrency``
*slots*. A slot takes the process's next request index, waits until that request is due
(open loop) and sends it; so a request is delayed, never dropped, when every slot is
busy, and that delay counts in its latency. Processes interleave their indices (see
:func:`chronos_dev.loadtest.stats.worker_request_index`) and share one start time, taken
after all of them have connected, so together they follow one schedule.

Processes are started with the ``spawn`` method: forking a process that already used
gRPC is unsafe. With ``--processes 1`` the phase runs in this process instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import queue
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from chronos_dev.loadtest.channels import load_channel
from chronos_dev.loadtest.options import Options
from chronos_dev.loadtest.outcomes import Outcomes
from chronos_dev.loadtest.progress import ProgressCounters, ProgressLine
from chronos_dev.loadtest.scenarios import Client, Recorder, Scenario, run_operation
from chronos_dev.loadtest.stats import (
    LatencyHistogram,
    Reservoir,
    scheduled_offset_seconds,
    split_evenly,
    worker_request_index,
)

# Bounds on the process plumbing (the RPCs have their own deadlines).
CONNECT_WAIT_SECONDS_MAX = 30.0
# Connections per client process to each service. A server's processes share its port
# (SO_REUSEPORT) and the kernel spreads connections, not calls, over them: with one
# connection per client process, both of a two-process client's connections often
# landed on the same server process, which then did all the work.
CHANNELS_PER_PROCESS = 4
STARTUP_WAIT_SECONDS_MAX = 120.0
# Margin between "every process is ready" and the first scheduled request.
START_DELAY_SECONDS = 0.1


class LoadTestError(Exception):
    """The load test itself could not run (servers unreachable, a client process died)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PhasePlan:
    """What one phase sends; picklable."""

    # "setup" or the scenario name; part of every request_id.
    phase: str
    run_id: str
    # Indices of the accounts the phase uses (setup: the ones it opens, in order).
    account_indices: tuple[int, ...]
    count_total: int | None
    duration_seconds: float | None
    rate_per_second: float


@dataclass(slots=True)
class WorkerReport:
    """What one client process sends back."""

    worker_index: int
    started_monotonic: float
    finished_monotonic: float
    recorder: Recorder


@dataclass(slots=True)
class PhaseReport:
    """The merged reports of every client process of a phase."""

    phase: str
    elapsed_seconds: float
    operations: int = 0
    operation_errors: int = 0
    # Refusals the scenario provoked on purpose (see Recorder.expected_refusals).
    expected_refusals: int = 0
    histograms: dict[str, LatencyHistogram] = field(default_factory=dict)
    errors: dict[tuple[str, str, str], int] = field(default_factory=dict)
    outcomes: Outcomes = field(default_factory=Outcomes)
    lag: LatencyHistogram = field(default_factory=LatencyHistogram)
    lag_timeouts: int = 0
    lag_failures: int = 0
    lag_probes_skipped: int = 0
    # (seconds since the phase started, rpc, latency in ms), a uniform sample.
    samples: list[tuple[float, str, float]] = field(default_factory=list)
    funded_account_indices: list[int] = field(default_factory=list)

    @property
    def throughput_per_second(self) -> float:
        return self.operations / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0


async def _open_channels(
    stack: contextlib.AsyncExitStack, options: Options
) -> tuple[list[grpc.aio.Channel], list[grpc.aio.Channel]]:
    """``CHANNELS_PER_PROCESS`` channels to each service, closed with ``stack``; waits
    (bounded) until the command channels are ready."""
    command_channels: list[grpc.aio.Channel] = []
    query_channels: list[grpc.aio.Channel] = []
    for _ in range(CHANNELS_PER_PROCESS):
        for channels, address in (
            (command_channels, options.command_addr),
            (query_channels, options.query_addr),
        ):
            # A local subchannel pool gives each channel a connection of its own.
            channel = load_channel(
                address, options.security, options=[("grpc.use_local_subchannel_pool", 1)]
            )
            channels.append(await stack.enter_async_context(channel))
    try:
        await asyncio.wait_for(
            asyncio.gather(*(c.channel_ready() for c in command_channels)),
            CONNECT_WAIT_SECONDS_MAX,
        )
    except TimeoutError as error:
        raise LoadTestError(
            f"command service at {options.command_addr} not reachable within "
            f"{CONNECT_WAIT_SECONDS_MAX:.0f} s"
        ) from error
    return command_channels, query_channels


async def run_worker(
    options: Options,
    plan: PhasePlan,
    worker_index: int,
    progress: ProgressCounters,
    wait_for_start: Callable[[], float],
) -> WorkerReport:
    """Runs this process's share of ``plan``; see the module docstring."""
    worker_count = options.processes
    concurrency = split_evenly(options.concurrency, worker_count)[worker_index]
    seed_text = f"{options.seed}:{plan.phase}:{worker_index}"
    async with contextlib.AsyncExitStack() as stack:
        command_channels, query_channels = await _open_channels(stack, options)
        start = wait_for_start()
        recorder = Recorder(
            phase_start_monotonic=start,
            samples=Reservoir(
                capacity=max(1, options.plot_samples_max // worker_count),
                rng=random.Random(f"samples:{seed_text}"),
            ),
        )
        lag_rng = random.Random(f"lag:{seed_text}")
        client = Client(options, command_channels, query_channels, recorder, lag_rng=lag_rng)
        scenario = Scenario(
            options, plan.run_id, plan.phase, plan.account_indices, random.Random(seed_text)
        )
        next_local_index = 0

        async def slot() -> None:
            nonlocal next_local_index
            while True:
                index = worker_request_index(worker_index, worker_count, next_local_index)
                if plan.count_total is not None and index >= plan.count_total:
                    return
                if plan.rate_per_second > 0:
                    offset = scheduled_offset_seconds(index, plan.rate_per_second)
                    if plan.duration_seconds is not None and offset >= plan.duration_seconds:
                        return
                    scheduled = start + offset
                else:
                    scheduled = time.monotonic()
                    if (
                        plan.duration_seconds is not None
                        and scheduled - start >= plan.duration_seconds
                    ):
                        return
                # Claim the index and draw the operation before any await, so each index
                # gets the same draw from the seeded generator on every run.
                next_local_index += 1
                operation = scenario.draw(index)
                delay = scheduled - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                succeeded = await run_operation(operation, client, scheduled)
                recorder.operations += 1
                recorder.operation_errors += 0 if succeeded else 1
                progress.update(worker_index, recorder.operations, recorder.operation_errors)

        await asyncio.gather(*(slot() for _ in range(concurrency)))
        finished = time.monotonic()
        await client.drain_probes()
    return WorkerReport(
        worker_index=worker_index,
        started_monotonic=start,
        finished_monotonic=finished,
        recorder=recorder,
    )


def _process_main(
    options: Options,
    plan: PhasePlan,
    worker_index: int,
    progress_array: Any,
    ready_queue: Any,
    start_event: Any,
    start_value: Any,
    result_queue: Any,
) -> None:
    """Entry point of a spawned client process."""

    def wait_for_start() -> float:
        ready_queue.put(worker_index)
        if not start_event.wait(STARTUP_WAIT_SECONDS_MAX):
            raise LoadTestError("no start signal from the parent process")
        return float(start_value.value)

    try:
        report = asyncio.run(
            run_worker(
                options, plan, worker_index, ProgressCounters(progress_array), wait_for_start
            )
        )
    except BaseException as error:
        result_queue.put(("error", worker_index, f"{type(error).__name__}: {error}"))
        raise
    result_queue.put(("ok", worker_index, report))


def run_phase(options: Options, plan: PhasePlan) -> PhaseReport:
    """Runs ``plan`` in ``options.processes`` client processes and merges their reports.

    Raises:
        LoadTestError: a client process failed or could not start.
    """
    context = multiprocessing.get_context("spawn")
    progress_array = context.RawArray("q", 2 * options.processes)
    counters = ProgressCounters(progress_array)
    with ProgressLine(plan.phase, counters, plan, options.progress_interval_seconds) as line:

        def start_now() -> float:
            line.mark_started()
            return time.monotonic()

        if options.processes == 1:
            reports = [asyncio.run(run_worker(options, plan, 0, counters, start_now))]
        else:
            reports = _run_processes(context, options, plan, progress_array, start_now)
    return _merge(plan.phase, reports)


def _run_processes(
    context: Any,
    options: Options,
    plan: PhasePlan,
    progress_array: Any,
    start_now: Callable[[], float],
) -> list[WorkerReport]:
    ready_queue = context.Queue()
    result_queue = context.Queue()
    start_event = context.Event()
    start_value = context.Value("d", 0.0)
    processes = [
        context.Process(
            target=_process_main,
            args=(
                options,
                plan,
                worker_index,
                progress_array,
                ready_queue,
                start_event,
                start_value,
                result_queue,
            ),
            name=f"loadtest-client-{worker_index}",
        )
        for worker_index in range(options.processes)
    ]
    for process in processes:
        process.start()
    try:
        deadline = time.monotonic() + STARTUP_WAIT_SECONDS_MAX
        ready = 0
        while ready < len(processes):
            _raise_on_early_result(result_queue)
            try:
                ready_queue.get(timeout=0.2)
                ready += 1
            except queue.Empty:
                if time.monotonic() > deadline:
                    raise LoadTestError("client processes did not start in time") from None
                if any(not p.is_alive() for p in processes):
                    _raise_on_early_result(result_queue, wait_seconds=1.0)
                    raise LoadTestError("a client process exited during start") from None
        # Every process measures from this one instant (CLOCK_MONOTONIC is system-wide).
        start_value.value = start_now() + START_DELAY_SECONDS
        start_event.set()
        reports: list[WorkerReport] = []
        while len(reports) < len(processes):
            try:
                status, worker_index, payload = result_queue.get(timeout=0.5)
            except queue.Empty:
                if any(p.exitcode not in (None, 0) for p in processes):
                    raise LoadTestError("a client process died without a report") from None
                continue
            if status != "ok":
                raise LoadTestError(f"client process {worker_index} failed: {payload}")
            reports.append(payload)
        for process in processes:
            process.join(timeout=30)
        return reports
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
                process.join(timeout=10)


def _raise_on_early_result(result_queue: Any, wait_seconds: float = 0.0) -> None:
    try:
        status, worker_index, payload = result_queue.get(timeout=wait_seconds or 0.001)
    except queue.Empty:
        return
    raise LoadTestError(f"client process {worker_index} failed: {payload} ({status})")


def _merge(phase: str, reports: list[WorkerReport]) -> PhaseReport:
    start = min(report.started_monotonic for report in reports)
    finished = max(report.finished_monotonic for report in reports)
    merged = PhaseReport(phase=phase, elapsed_seconds=max(0.0, finished - start))
    for report in sorted(reports, key=lambda r: r.worker_index):
        recorder = report.recorder
        merged.operations += recorder.operations
        merged.operation_errors += recorder.operation_errors
        merged.expected_refusals += recorder.expected_refusals
        for rpc, histogram in recorder.histograms.items():
            merged.histograms.setdefault(rpc, LatencyHistogram()).merge(histogram)
        for key, count in recorder.errors.items():
            merged.errors[key] = merged.errors.get(key, 0) + count
        merged.outcomes.merge(recorder.outcomes)
        merged.lag.merge(recorder.lag)
        merged.lag_timeouts += recorder.lag_timeouts
        merged.lag_failures += recorder.lag_failures
        merged.lag_probes_skipped += recorder.lag_probes_skipped
        # Sample times are relative to each process's start; shift them to the common one.
        shift = recorder.phase_start_monotonic - start
        merged.samples.extend((t + shift, rpc, ms) for t, rpc, ms in recorder.samples.items)
        merged.funded_account_indices.extend(recorder.funded_account_indices)
    merged.funded_account_indices.sort()
    return merged

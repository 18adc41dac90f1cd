"""Closed-loop Python client for the read stages when ghz is not used (``--no-ghz``).

The load test's runner (``chronos.loadtest``) drives the command stages; its scenarios
have no empty call and always mix ``ListTransactions`` into reads, so the empty-call and
``GetAccount`` stages use this small driver instead, built the same way: ``processes``
spawned processes (forking after gRPC is in use is unsafe), each one ``grpc.aio``
channel and ``concurrency / processes`` coroutines calling back to back. Latencies go
into the load test's :class:`~chronos.loadtest.stats.LatencyHistogram` and merge across
processes. All processes start together (a barrier) and stop after the same duration.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from chronos.bench.clients import ThroughputResult
from chronos.bench.resources import BenchError
from chronos.loadtest.stats import LatencyHistogram, split_evenly
from chronos.v1 import queries_pb2, queries_pb2_grpc

HEALTH_CHECK = "Check"
GET_ACCOUNT = "GetAccount"
CONNECT_WAIT_SECONDS_MAX = 30.0
START_WAIT_SECONDS_MAX = 120.0
# Beyond the stage's duration: the last calls' deadlines and the report's transfer.
RESULT_WAIT_MARGIN_SECONDS = 60.0


@dataclass(frozen=True, slots=True, kw_only=True)
class UnaryLoad:
    """One closed-loop stage; picklable, so each process gets a copy."""

    rpc: str
    address: str
    # GetAccount: the accounts asked for, round-robin.
    account_ids: tuple[str, ...]
    concurrency: int
    processes: int
    duration_seconds: float
    rpc_timeout_seconds: float


@dataclass(slots=True)
class _WorkerResult:
    ok: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    histogram: LatencyHistogram = field(default_factory=LatencyHistogram)
    started_monotonic: float = 0.0
    finished_monotonic: float = 0.0


async def _run_worker(load: UnaryLoad, worker_index: int, barrier: Any) -> _WorkerResult:
    result = _WorkerResult()
    slots = split_evenly(load.concurrency, load.processes)[worker_index]
    async with grpc.aio.insecure_channel(load.address) as channel:
        await asyncio.wait_for(channel.channel_ready(), CONNECT_WAIT_SECONDS_MAX)
        if load.rpc == HEALTH_CHECK:
            health = health_pb2_grpc.HealthStub(channel)
            health_request = health_pb2.HealthCheckRequest(service="")

            def call() -> Any:
                return health.Check(health_request, timeout=load.rpc_timeout_seconds)

        else:
            assert load.account_ids, "GetAccount needs accounts"
            queries = queries_pb2_grpc.QueryServiceStub(channel)  # type: ignore[no-untyped-call]
            requests = [queries_pb2.GetAccountRequest(account_id=a) for a in load.account_ids]
            counter = worker_index

            def call() -> Any:
                nonlocal counter
                request = requests[counter % len(requests)]
                counter += load.processes
                return queries.GetAccount(request, timeout=load.rpc_timeout_seconds)

        # The barrier is a multiprocessing primitive: wait for it off the event loop.
        await asyncio.to_thread(barrier.wait, START_WAIT_SECONDS_MAX)
        start = time.monotonic()
        stop_at = start + load.duration_seconds

        async def slot() -> None:
            while time.monotonic() < stop_at:
                sent = time.monotonic()
                try:
                    await call()
                except grpc.aio.AioRpcError as error:
                    result.failed += 1
                    name = error.code().name
                    result.errors[name] = result.errors.get(name, 0) + 1
                    continue
                result.histogram.record_seconds(time.monotonic() - sent)
                result.ok += 1

        await asyncio.gather(*(slot() for _ in range(slots)))
        result.started_monotonic = start
        result.finished_monotonic = time.monotonic()
    return result


def _process_main(load: UnaryLoad, worker_index: int, barrier: Any, results: Any) -> None:
    try:
        outcome = asyncio.run(_run_worker(load, worker_index, barrier))
    except BaseException as error:
        barrier.abort()
        results.put(("error", worker_index, f"{type(error).__name__}: {error}"))
        raise
    results.put(("ok", worker_index, outcome))


def run_unary_load(load: UnaryLoad) -> ThroughputResult:
    """Runs ``load`` and merges the processes' results.

    Raises:
        BenchError: a client process failed or did not report in time.
    """
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(load.processes + 1)
    results = context.Queue()
    processes = [
        context.Process(
            target=_process_main,
            args=(load, index, barrier, results),
            name=f"bench-client-{index}",
        )
        for index in range(load.processes)
    ]
    for process in processes:
        process.start()
    try:
        try:
            barrier.wait(START_WAIT_SECONDS_MAX)
        except threading.BrokenBarrierError as error:
            raise BenchError(f"{load.rpc} client processes did not start: {error!r}") from error
        deadline = time.monotonic() + load.duration_seconds + RESULT_WAIT_MARGIN_SECONDS
        reports: list[_WorkerResult] = []
        while len(reports) < len(processes):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BenchError(f"{load.rpc} client processes did not report in time")
            try:
                status, index, payload = results.get(timeout=min(1.0, remaining))
            except queue.Empty:
                continue
            if status != "ok":
                raise BenchError(f"{load.rpc} client process {index} failed: {payload}")
            reports.append(payload)
        for process in processes:
            process.join(timeout=30)
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
                process.join(timeout=10)
    return _merge(load, reports)


def _merge(load: UnaryLoad, reports: list[_WorkerResult]) -> ThroughputResult:
    histogram = LatencyHistogram()
    errors: dict[str, int] = {}
    for report in reports:
        histogram.merge(report.histogram)
        for name, count in report.errors.items():
            errors[name] = errors.get(name, 0) + count
    start = min(report.started_monotonic for report in reports)
    finish = max(report.finished_monotonic for report in reports)
    return ThroughputResult(
        tool="python",
        rpc=load.rpc,
        target=load.address,
        concurrency=load.concurrency,
        connections=load.processes,
        elapsed_seconds=max(0.0, finish - start),
        ok=sum(report.ok for report in reports),
        failed=sum(report.failed for report in reports),
        errors=errors,
        histogram=histogram,
        extra={"latency_includes_errors": False},
    )

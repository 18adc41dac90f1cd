"""Closed-loop Python client: the batch stage, and the read stages without ghz.

The load test's runner (``chronos_dev.loadtest``) drives the unary command stages; its
scenarios have no empty call and always mix ``ListTransactions`` into reads, so the
empty-call and ``GetAccount`` stages use this small driver instead (when ghz is not
used), and so does ``ExecuteBatch`` always: ghz renders a JSON template per call, which
for a batch of transfers cost more CPU than the server's work, while this client sends
serialized requests and only stamps fresh request_ids into them (see
:func:`_batch_templates`). It is built like the load test: ``processes``
spawned processes (forking after gRPC is in use is unsafe), each one ``grpc.aio``
channel and ``concurrency / processes`` coroutines calling back to back. Latencies go
into the load test's :class:`~chronos_dev.loadtest.stats.LatencyHistogram` and merge across
processes. All processes start together (a barrier) and stop after the same duration.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import queue
import random
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from chronos.v1 import commands_pb2, ledger_pb2, queries_pb2, queries_pb2_grpc
from chronos_dev.bench.clients import ThroughputResult
from chronos_dev.bench.resources import BenchError
from chronos_dev.client import ClientSecurity
from chronos_dev.loadtest.channels import call_metadata, load_channel
from chronos_dev.loadtest.outcomes import Outcomes
from chronos_dev.loadtest.stats import LatencyHistogram, split_evenly

HEALTH_CHECK = "Check"
GET_ACCOUNT = "GetAccount"
EXECUTE_BATCH = "ExecuteBatch"
EXECUTE_BATCH_METHOD = "/chronos.v1.CommandService/ExecuteBatch"
# Stands for a call's request_id prefix in a serialized batch; replaced by a prefix of
# the same length, so every length field of the message stays right.
_ID_TOKEN = "~" * 16
_BATCH_TEMPLATES = 16
CONNECT_WAIT_SECONDS_MAX = 30.0
START_WAIT_SECONDS_MAX = 120.0
# Beyond the stage's duration: the last calls' deadlines and the report's transfer.
RESULT_WAIT_MARGIN_SECONDS = 60.0


@dataclass(frozen=True, slots=True, kw_only=True)
class UnaryLoad:
    """One closed-loop stage; picklable, so each process gets a copy."""

    rpc: str
    address: str
    # GetAccount: the accounts asked for, round-robin; ExecuteBatch: moved between.
    account_ids: tuple[str, ...]
    concurrency: int
    processes: int
    duration_seconds: float
    rpc_timeout_seconds: float
    # ExecuteBatch only: transfers per call, their currency and largest amount.
    batch_size: int = 0
    currency: str = ""
    amount_max_minor: int = 0
    seed: int = 1
    # Starts every request_id (the invariant check finds the run's commands by it).
    request_id_prefix: str = ""
    # The servers' CA and the token every call carries (kept out of the repr).
    security: ClientSecurity = field(repr=False)
    # Builds the call of an RPC this module does not know (a module-level function, so
    # that the load still pickles); each call's answer counts ``ok`` units.
    call_factory: CallFactory | None = None
    # One connection per slot, as for ExecuteBatch (see _run_worker).
    connection_per_slot: bool = False


@dataclass(slots=True)
class WorkerResult:
    """One client process's tally.

    ``ok`` counts answers (ExecuteBatch: accepted commands; a call factory: its units)
    and ``failed`` failures (ExecuteBatch: commands failed alone or with their call).
    """

    ok: int = 0
    failed: int = 0
    calls: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    histogram: LatencyHistogram = field(default_factory=LatencyHistogram)
    started_monotonic: float = 0.0
    finished_monotonic: float = 0.0
    outcomes: Outcomes = field(default_factory=Outcomes)


Call = Callable[[], Awaitable[int]]


@dataclass(frozen=True, slots=True)
class Worker:
    """What a call factory builds a client process's call from: the load, the process's
    index, its channels, the metadata every call carries, and its tally."""

    load: UnaryLoad
    index: int
    channels: Sequence[grpc.aio.Channel]
    metadata: tuple[tuple[str, str], ...]
    result: WorkerResult


CallFactory = Callable[[Worker], Call]
"""Builds the call a worker's slots repeat; the call returns the ``ok`` units it
completed, and raises AioRpcError for a failed one."""


def record_answer(result: WorkerResult, request_id: str, rpc: str, answer: Any) -> None:
    """Records ``answer``, the CommandResponse of ``request_id`` (a ``rpc`` command)."""
    result.outcomes.record_ok(
        request_id,
        rpc,
        event_count=len(answer.event_ids),
        position=answer.position,
        replayed=answer.replayed,
    )


def record_batch_answer(
    result: WorkerResult,
    request_ids: Sequence[str],
    response: commands_pb2.ExecuteBatchResponse,
    rpc: str,
) -> list[int]:
    """Records each command's outcome of an ExecuteBatch answer; returns the indexes of
    the accepted ones. ``rpc`` names the commands' method in the outcomes."""
    accepted: list[int] = []
    for index, (request_id, item) in enumerate(zip(request_ids, response.results, strict=True)):
        if item.HasField("response"):
            record_answer(result, request_id, rpc, item.response)
            accepted.append(index)
        else:
            code = _STATUS_CODES.get(item.error.code, grpc.StatusCode.UNKNOWN)
            result.outcomes.record_failure(request_id, code)
            result.failed += 1
            result.errors[code.name] = result.errors.get(code.name, 0) + 1
    return accepted


def record_batch_failure(
    result: WorkerResult, request_ids: Sequence[str], error: grpc.aio.AioRpcError
) -> None:
    """Records a failed ExecuteBatch call: every command failed with it. The slot that
    re-raises it counts one of them, so this counts the others."""
    for request_id in request_ids:
        result.outcomes.record_failure(request_id, error.code())
    name = error.code().name
    result.failed += len(request_ids) - 1
    result.errors[name] = result.errors.get(name, 0) + len(request_ids) - 1


def _batch_templates(load: UnaryLoad, worker_index: int) -> list[bytes]:
    """Serialized ExecuteBatch requests of random transfers whose request_ids are
    ``<token>-<index>``; each call replaces the token with its own prefix."""
    rng = random.Random(f"{load.seed}:batch:{worker_index}")
    templates = []
    for _ in range(_BATCH_TEMPLATES):
        commands = []
        for index in range(load.batch_size):
            source, target = rng.sample(load.account_ids, 2)
            transfer = commands_pb2.TransferFundsRequest(
                request_id=f"{load.request_id_prefix}{_ID_TOKEN}-{index:04d}",
                from_account_id=source,
                to_account_id=target,
                amount=ledger_pb2.Money(
                    currency=load.currency, minor_units=rng.randint(1, load.amount_max_minor)
                ),
                description="bench batch transfer",
            )
            commands.append(commands_pb2.BatchCommand(transfer_funds=transfer))
        request = commands_pb2.ExecuteBatchRequest(commands=commands)
        templates.append(request.SerializeToString())
    return templates


async def _run_worker(load: UnaryLoad, worker_index: int, barrier: Any) -> WorkerResult:
    result = WorkerResult()
    slots = split_evenly(load.concurrency, load.processes)[worker_index]
    # ExecuteBatch: one connection per slot (a local subchannel pool stops gRPC from
    # sharing one), because the kernel spreads connections, not calls, over the server's
    # SO_REUSEPORT processes, and a few long calls on one connection can all land on one.
    connections = slots if load.rpc == EXECUTE_BATCH or load.connection_per_slot else 1
    metadata = call_metadata(load.security)
    async with contextlib.AsyncExitStack() as stack:
        channels = []
        for _ in range(max(1, connections)):
            channel = await stack.enter_async_context(
                load_channel(
                    load.address, load.security, options=[("grpc.use_local_subchannel_pool", 1)]
                )
            )
            await asyncio.wait_for(channel.channel_ready(), CONNECT_WAIT_SECONDS_MAX)
            channels.append(channel)
        if load.call_factory is not None:
            call = load.call_factory(Worker(load, worker_index, channels, metadata, result))
        elif load.rpc == HEALTH_CHECK:
            health = health_pb2_grpc.HealthStub(channel)
            health_request = health_pb2.HealthCheckRequest(service="")

            async def call() -> int:
                await health.Check(
                    health_request, timeout=load.rpc_timeout_seconds, metadata=metadata
                )
                return 1

        elif load.rpc == EXECUTE_BATCH:
            assert load.batch_size > 0 and len(load.account_ids) >= 2
            executes = [
                each.unary_unary(
                    EXECUTE_BATCH_METHOD,
                    request_serializer=None,  # the templates are serialized already
                    response_deserializer=commands_pb2.ExecuteBatchResponse.FromString,
                )
                for each in channels
            ]
            templates = _batch_templates(load, worker_index)
            token = _ID_TOKEN.encode()

            async def call() -> int:
                prefix = f"b{worker_index:02d}{result.calls:013d}"
                request = templates[result.calls % len(templates)].replace(token, prefix.encode())
                execute = executes[result.calls % len(executes)]
                result.calls += 1
                request_ids = [
                    f"{load.request_id_prefix}{prefix}-{index:04d}"
                    for index in range(load.batch_size)
                ]
                try:
                    response = await execute(
                        request, timeout=load.rpc_timeout_seconds, metadata=metadata
                    )
                except grpc.aio.AioRpcError as error:
                    record_batch_failure(result, request_ids, error)
                    raise
                return len(record_batch_answer(result, request_ids, response, "TransferFunds"))

        else:
            assert load.account_ids, "GetAccount needs accounts"
            queries = queries_pb2_grpc.QueryServiceStub(channel)  # type: ignore[no-untyped-call]
            requests = [queries_pb2.GetAccountRequest(account_id=a) for a in load.account_ids]
            counter = worker_index

            async def call() -> int:
                nonlocal counter
                request = requests[counter % len(requests)]
                counter += load.processes
                await queries.GetAccount(
                    request, timeout=load.rpc_timeout_seconds, metadata=metadata
                )
                return 1

        # The barrier is a multiprocessing primitive: wait for it off the event loop.
        await asyncio.to_thread(barrier.wait, START_WAIT_SECONDS_MAX)
        start = time.monotonic()
        stop_at = start + load.duration_seconds

        async def slot() -> None:
            while time.monotonic() < stop_at:
                sent = time.monotonic()
                try:
                    answered = await call()
                except grpc.aio.AioRpcError as error:
                    result.failed += 1
                    name = error.code().name
                    result.errors[name] = result.errors.get(name, 0) + 1
                    continue
                result.histogram.record_seconds(time.monotonic() - sent)
                result.ok += answered

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
        reports: list[WorkerResult] = []
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


def _merge(load: UnaryLoad, reports: list[WorkerResult]) -> ThroughputResult:
    histogram = LatencyHistogram()
    errors: dict[str, int] = {}
    outcomes = Outcomes()
    for report in reports:
        histogram.merge(report.histogram)
        outcomes.merge(report.outcomes)
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
        calls=sum(report.calls for report in reports) or None,
        failed=sum(report.failed for report in reports),
        errors=errors,
        histogram=histogram,
        extra={"latency_includes_errors": False},
        outcomes=outcomes,
    )


# google.rpc.Code numbers (an item's error) to grpc.StatusCode.
_STATUS_CODES = {code.value[0]: code for code in grpc.StatusCode}

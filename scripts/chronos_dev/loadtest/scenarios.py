"""The operations each scenario sends, and the per-process record of their answers.

One *operation* is what the schedule counts: opening and funding one account (setup),
one transfer (transfers, duplicates; a duplicated transfer also sends its copy), or one
read or one transfer (mixed), one hold's life or one reversed transfer (holds, see
:mod:`.scenarios_holds`). Every RPC has a deadline; every answer is recorded in a
:class:`Recorder` (latency per RPC, errors by status code and ``ErrorInfo`` reason, the
outcome of each request_id for the invariant checks).

Projection lag is measured on a sample of accepted commands: right after the answer, a
probe calls ``GetAccount(account, min_position=position)``, which the query server holds
until its projection has applied that position (bounded on its side by
``CHRONOS_QUERY_MIN_POSITION_WAIT_SECONDS_MAX``; on ``PROJECTION_BEHIND`` or a deadline
the probe asks again, up to ``--lag-wait-seconds-max``). The lag is the time from the
command's answer to the probe's answer, so it includes one query round trip and up to
one watermark refresh interval of the query server (10 ms by default). Probes run beside
the load, at most ``lag_probes_in_flight_max`` at a time per process; a sample that
finds no free slot is skipped rather than queued, so probes never pile up.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from chronos.domain.errors import Reason
from chronos.v1 import commands_pb2, commands_pb2_grpc, ledger_pb2, queries_pb2, queries_pb2_grpc
from chronos_dev.loadtest.channels import call_metadata, error_reason
from chronos_dev.loadtest.options import (
    HOT_ACCOUNT_FRACTION,
    HOT_PICK_FRACTION,
    Distribution,
    Options,
)
from chronos_dev.loadtest.outcomes import Outcomes
from chronos_dev.loadtest.stats import LatencyHistogram, Reservoir

RETRY_SUFFIX = " (retry)"
LIST_TRANSACTIONS_PAGE_SIZE = 20


def account_id(run_id: str, index: int) -> str:
    """The id of the run's ``index``-th account: derived, so every process agrees on it."""
    return str(uuid.uuid5(uuid.UUID(run_id), f"account:{index}"))


@dataclass(slots=True)
class Recorder:
    """Everything one client process learns in one phase; merged by the parent."""

    phase_start_monotonic: float
    samples: Reservoir
    histograms: dict[str, LatencyHistogram] = field(default_factory=dict)
    # (rpc, status code name, ErrorInfo reason) -> count.
    errors: dict[tuple[str, str, str], int] = field(default_factory=dict)
    outcomes: Outcomes = field(default_factory=Outcomes)
    lag: LatencyHistogram = field(default_factory=LatencyHistogram)
    lag_timeouts: int = 0
    lag_failures: int = 0
    lag_probes_skipped: int = 0
    # Refusals provoked on purpose (a race's loser): in ``errors`` too, not failures.
    expected_refusals: int = 0
    operations: int = 0
    operation_errors: int = 0
    funded_account_indices: list[int] = field(default_factory=list)

    def latency(self, rpc: str, started_monotonic: float, finished_monotonic: float) -> None:
        histogram = self.histograms.get(rpc)
        if histogram is None:
            histogram = self.histograms[rpc] = LatencyHistogram()
        latency_seconds = finished_monotonic - started_monotonic
        histogram.record_seconds(latency_seconds)
        self.samples.offer(
            (started_monotonic - self.phase_start_monotonic, rpc, latency_seconds * 1000)
        )

    def error(self, rpc: str, code: grpc.StatusCode, reason: str) -> None:
        key = (rpc, code.name, reason)
        self.errors[key] = self.errors.get(key, 0) + 1


class Client:
    """The stubs of one process, with deadlines and recording around every call."""

    def __init__(
        self,
        options: Options,
        command_channels: Sequence[grpc.aio.Channel],
        query_channels: Sequence[grpc.aio.Channel],
        recorder: Recorder,
        lag_rng: random.Random,
    ) -> None:
        self.options = options
        self._lag_rng = lag_rng
        # Calls go round the channels (each its own connection), so the kernel spreads
        # them over the processes of a server sharing its port.
        self._commands = itertools.cycle(
            [commands_pb2_grpc.CommandServiceStub(c) for c in command_channels]  # type: ignore[no-untyped-call]
        )
        self._queries = itertools.cycle(
            [queries_pb2_grpc.QueryServiceStub(c) for c in query_channels]  # type: ignore[no-untyped-call]
        )
        self.recorder = recorder
        self._probes: set[asyncio.Task[None]] = set()
        self._metadata = call_metadata(options.security)

    @property
    def commands(self) -> commands_pb2_grpc.CommandServiceStub:
        """The command stub for the next call."""
        return next(self._commands)

    @property
    def queries(self) -> queries_pb2_grpc.QueryServiceStub:
        """The query stub for the next call."""
        return next(self._queries)

    async def call(
        self,
        rpc: str,
        method: Callable[..., Awaitable[Any]],
        request: Any,
        started_monotonic: float,
        *,
        timeout_seconds: float | None = None,
    ) -> tuple[Any | None, grpc.StatusCode, str]:
        """Calls ``method``; returns (response or None, status code, ErrorInfo reason).

        The latency recorded under ``rpc`` runs from ``started_monotonic`` (the scheduled
        time in open loop) to the answer, errors included.
        """
        timeout = self.options.rpc_timeout_seconds if timeout_seconds is None else timeout_seconds
        try:
            response = await method(request, timeout=timeout, metadata=self._metadata)
        except grpc.aio.AioRpcError as error:
            finished = time.monotonic()
            self.recorder.latency(rpc, started_monotonic, finished)
            reason = error_reason(error)
            self.recorder.error(rpc, error.code(), reason)
            return None, error.code(), reason
        self.recorder.latency(rpc, started_monotonic, time.monotonic())
        return response, grpc.StatusCode.OK, ""

    async def command(
        self, rpc: str, request: Any, started_monotonic: float, *, retry: bool = False
    ) -> commands_pb2.CommandResponse | None:
        """Sends a command and records the outcome of its request_id."""
        response, _, _ = await self.command_answer(rpc, request, started_monotonic, retry=retry)
        return response

    async def command_answer(
        self, rpc: str, request: Any, started_monotonic: float, *, retry: bool = False
    ) -> tuple[commands_pb2.CommandResponse | None, grpc.StatusCode, str]:
        """Like :meth:`command`, with the status code and ErrorInfo reason of a failure."""
        method = getattr(self.commands, rpc)
        label = rpc + RETRY_SUFFIX if retry else rpc
        response, code, reason = await self.call(label, method, request, started_monotonic)
        outcomes = self.recorder.outcomes
        if response is None:
            outcomes.record_failure(request.request_id, code)
            return None, code, reason
        outcomes.record_ok(
            request.request_id,
            rpc,
            event_count=len(response.event_ids),
            position=response.position,
            replayed=response.replayed,
        )
        if not response.replayed:
            self.maybe_probe_lag(response.account_id, response.position, time.monotonic())
        return response, code, reason

    # --- projection lag ----------------------------------------------------------------

    def maybe_probe_lag(self, account: str, position: int, answered_monotonic: float) -> None:
        """Starts a lag probe for a ``lag_sample_fraction`` share of commands."""
        fraction = self.options.lag_sample_fraction
        if fraction <= 0 or self._lag_rng.random() >= fraction:
            return
        if len(self._probes) >= self.options.lag_probes_in_flight_max:
            self.recorder.lag_probes_skipped += 1
            return
        task = asyncio.create_task(self._probe_lag(account, position, answered_monotonic))
        self._probes.add(task)
        task.add_done_callback(self._probes.discard)

    async def _probe_lag(self, account: str, position: int, answered_monotonic: float) -> None:
        deadline = answered_monotonic + self.options.lag_wait_seconds_max
        request = queries_pb2.GetAccountRequest(account_id=account, min_position=position)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.recorder.lag_timeouts += 1
                return
            try:
                await self.queries.GetAccount(
                    request,
                    timeout=min(self.options.rpc_timeout_seconds, remaining),
                    metadata=self._metadata,
                )
            except grpc.aio.AioRpcError as error:
                behind = error.code() == grpc.StatusCode.DEADLINE_EXCEEDED or (
                    error.code() == grpc.StatusCode.UNAVAILABLE
                    and error_reason(error) == Reason.PROJECTION_BEHIND.value
                )
                if behind:
                    continue
                self.recorder.lag_failures += 1
                return
            self.recorder.lag.record_seconds(time.monotonic() - answered_monotonic)
            return

    async def drain_probes(self) -> None:
        """Waits for the probes still running (each is bounded by its own deadline)."""
        if self._probes:
            await asyncio.gather(*self._probes, return_exceptions=True)


# --- what each scenario sends --------------------------------------------------------


def money(currency: str, minor_units: int) -> ledger_pb2.Money:
    return ledger_pb2.Money(currency=currency, minor_units=minor_units)


class Scenario:
    """Draws and runs operations; ``draw`` is synchronous so the seed fixes the mix."""

    def __init__(
        self,
        options: Options,
        run_id: str,
        phase: str,
        account_indices: tuple[int, ...],
        rng: random.Random,
    ) -> None:
        self.options = options
        self.run_id = run_id
        self.phase = phase
        self.account_ids = [account_id(run_id, i) for i in account_indices]
        self.account_indices = account_indices
        self.rng = rng
        hot = max(1, round(len(self.account_ids) * HOT_ACCOUNT_FRACTION))
        self._hot_count = min(hot, len(self.account_ids) - 1) if len(self.account_ids) > 1 else 1

    def request_id(self, kind: str, index: int) -> str:
        return f"lt-{self.run_id}-{self.phase}-{kind}-{index}"

    def pick_account(self) -> str:
        """An account per ``--distribution`` (hot: 80 % of picks on the first 20 %)."""
        ids = self.account_ids
        if self.options.distribution is Distribution.HOT and len(ids) > 1:
            if self.rng.random() < HOT_PICK_FRACTION:
                return ids[self.rng.randrange(self._hot_count)]
            return ids[self.rng.randrange(self._hot_count, len(ids))]
        return ids[self.rng.randrange(len(ids))]

    def draw(self, index: int) -> Callable[[Client, float], Awaitable[None]]:
        """The operation with run-wide index ``index``, ready to run."""
        if self.phase == "setup":
            return self._setup_operation(index)
        if self.phase == "holds":
            # Imported here: the holds scenario builds on this module's names.
            from chronos_dev.loadtest.scenarios_holds import hold_operation

            return hold_operation(self, index)
        if self.options.read_fraction > 0 and self.rng.random() < self.options.read_fraction:
            return self._read_operation()
        return self._transfer_operation(index)

    def _setup_operation(self, index: int) -> Callable[[Client, float], Awaitable[None]]:
        account_index = self.account_indices[index]
        account = self.account_ids[index]
        opening = commands_pb2.OpenAccountRequest(
            request_id=self.request_id("open", account_index),
            account_id=account,
            owner_name=f"Load Test {account_index}",
            currency=self.options.currency,
            overdraft_limit_minor=self.options.overdraft_limit_minor,
            metadata={"source": "loadtest"},
        )
        funding = commands_pb2.DepositRequest(
            request_id=self.request_id("fund", account_index),
            account_id=account,
            amount=money(self.options.currency, self.options.initial_balance_minor),
            description="load test funding",
        )

        async def run(client: Client, scheduled_monotonic: float) -> None:
            opened = await client.command("OpenAccount", opening, scheduled_monotonic)
            if opened is None:
                raise OperationFailed
            funded = await client.command("Deposit", funding, time.monotonic())
            if funded is None:
                raise OperationFailed
            client.recorder.funded_account_indices.append(account_index)

        return run

    def _read_operation(self) -> Callable[[Client, float], Awaitable[None]]:
        account = self.pick_account()
        if self.rng.random() < 0.5:

            async def get_account(client: Client, scheduled_monotonic: float) -> None:
                request = queries_pb2.GetAccountRequest(account_id=account)
                response, _, _ = await client.call(
                    "GetAccount", client.queries.GetAccount, request, scheduled_monotonic
                )
                if response is None:
                    raise OperationFailed

            return get_account

        async def list_transactions(client: Client, scheduled_monotonic: float) -> None:
            request = queries_pb2.ListTransactionsRequest(
                account_id=account, page_size=LIST_TRANSACTIONS_PAGE_SIZE
            )
            response, _, _ = await client.call(
                "ListTransactions", client.queries.ListTransactions, request, scheduled_monotonic
            )
            if response is None:
                raise OperationFailed

        return list_transactions

    def _transfer_operation(self, index: int) -> Callable[[Client, float], Awaitable[None]]:
        source = self.pick_account()
        target = self.pick_account()
        while target == source:
            target = self.pick_account()
        request = commands_pb2.TransferFundsRequest(
            request_id=self.request_id("transfer", index),
            from_account_id=source,
            to_account_id=target,
            amount=money(self.options.currency, self.rng.randint(1, self.options.amount_max_minor)),
            description="load test transfer",
        )
        duplicate = ""
        if (
            self.options.duplicate_fraction > 0
            and self.rng.random() < self.options.duplicate_fraction
        ):
            # Half the copies follow the answer (a client retrying after a lost reply),
            # half race the original (a client retrying before the reply arrived).
            duplicate = "after" if self.rng.random() < 0.5 else "concurrent"

        async def run(client: Client, scheduled_monotonic: float) -> None:
            if duplicate == "concurrent":
                first, _ = await asyncio.gather(
                    client.command("TransferFunds", request, scheduled_monotonic),
                    client.command("TransferFunds", request, scheduled_monotonic, retry=True),
                )
            else:
                first = await client.command("TransferFunds", request, scheduled_monotonic)
                if duplicate == "after":
                    await client.command("TransferFunds", request, time.monotonic(), retry=True)
            if first is None:
                raise OperationFailed

        return run


class OperationFailed(Exception):
    """An operation got an error answer (already recorded); counts it as failed."""


async def run_operation(
    operation: Callable[[Client, float], Awaitable[None]],
    client: Client,
    scheduled_monotonic: float,
) -> bool:
    """Runs one operation; True when every RPC it needed answered OK."""
    try:
        await operation(client, scheduled_monotonic)
    except OperationFailed:
        return False
    return True

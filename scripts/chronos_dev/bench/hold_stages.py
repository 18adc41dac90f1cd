"""The hold stages: (h) create + post pairs through the gRPC server, (h') the same pairs
in ExecuteBatch calls, and (x) the rate of the command servers' hold expiry job.

(h) and (h') are closed loops of the Python client (:mod:`chronos_dev.bench.hold_client`),
with the read side running, as in (b) and (b''). (x) places ``--expiry-holds`` holds whose
timeouts all end within about a second of one moment (each batch's whole-second timeout is
counted down to it), waits until the write side shows every one EXPIRED, and reads the
rate from the holds' own timestamps in PostgreSQL. Every command's outcome joins the
exactly-once check.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import time
from dataclasses import dataclass
from typing import Any

import grpc
import psycopg

from chronos.v1 import commands_pb2, commands_pb2_grpc
from chronos_dev.bench.clients import ThroughputResult
from chronos_dev.bench.hold_client import (
    CREATE,
    HOLD_PAIR,
    HOLD_PAIR_BATCH,
    create_request,
    hold_pair_batch_call,
    hold_pair_call,
)
from chronos_dev.bench.pyclient import (
    UnaryLoad,
    WorkerResult,
    record_batch_answer,
    run_unary_load,
)
from chronos_dev.bench.resources import PG_CONNECT_TIMEOUT_SECONDS, BenchError
from chronos_dev.bench.stages import AMOUNT_MAX_MINOR, CURRENCY, BenchContext
from chronos_dev.loadtest.channels import call_metadata, load_channel
from chronos_dev.loadtest.outcomes import Outcomes

# The command servers' expiry job runs this often in the bench (the services inherit the
# bench's environment): (x) then measures the job's work more than its wait between runs.
EXPIRY_INTERVAL_VARIABLE = "CHRONOS_HOLD_EXPIRY_INTERVAL_SECONDS"
EXPIRY_INTERVAL_SECONDS = 0.2
# (x): the holds fall due this long after the stage starts, plus a second per this many
# holds, so that placing them (ExecuteBatch, read side running) ends before the first is
# due and the job works through a backlog instead of following the placing.
EXPIRY_LEAD_SECONDS_MIN = 3.0
EXPIRY_PLACE_RATE_ASSUMED_PER_SECOND = 1000.0
_POLL_INTERVAL_SECONDS = 0.2

_READ_SIDE_RUNNING = "running"


def _load(context: BenchContext, **fields: Any) -> UnaryLoad:
    options = context.options
    return UnaryLoad(
        address=context.services.command_addr,
        account_ids=tuple(context.funded_account_ids),
        duration_seconds=options.duration_seconds,
        rpc_timeout_seconds=options.rpc_timeout_seconds,
        currency=CURRENCY,
        amount_max_minor=AMOUNT_MAX_MINOR,
        seed=options.seed,
        security=context.services.security,
        **fields,
    )


def _absorb(context: BenchContext, result: ThroughputResult) -> ThroughputResult:
    if result.outcomes is not None:
        context.outcomes.merge(result.outcomes)
    result.extra["unit"] = "pairs"
    result.extra["read_side"] = _READ_SIDE_RUNNING
    return result


def hold_pairs(context: BenchContext) -> ThroughputResult:
    """(h) CreatePendingTransfer, then PostPendingTransfer of the pending_id it answered,
    back to back in each of ``--concurrency`` slots: pairs per second, and the latency of
    the pair (both calls)."""
    options = context.options
    load = _load(
        context,
        rpc=HOLD_PAIR,
        concurrency=options.concurrency,
        processes=options.client_processes,
        request_id_prefix=f"lt-{context.run_id}-hold-pairs-",
        call_factory=hold_pair_call,
    )
    return _absorb(context, run_unary_load(load))


def hold_pair_batches(context: BenchContext) -> ThroughputResult:
    """(h') An ExecuteBatch of ``--batch-size`` creates, then an ExecuteBatch of the
    posts of the holds it placed, back to back in each of ``--batch-concurrency`` slots:
    pairs per second over the stage, and the latency of the two calls."""
    options = context.options
    load = _load(
        context,
        rpc=HOLD_PAIR_BATCH,
        concurrency=options.batch_concurrency,
        processes=min(options.client_processes, options.batch_concurrency),
        batch_size=options.batch_size,
        request_id_prefix=f"lt-{context.run_id}-hold-batches-",
        call_factory=hold_pair_batch_call,
        connection_per_slot=True,
    )
    result = _absorb(context, run_unary_load(load))
    result.extra["batch_size"] = options.batch_size
    return result


# --- (x) the expiry job ------------------------------------------------------------------


def timeout_until(due_at: float, now: float) -> int:
    """The whole-second timeout that makes a hold placed at ``now`` fall due at or up to
    a second after ``due_at`` (epoch seconds); at least 1, the shortest a hold takes."""
    return max(1, math.ceil(due_at - now))


@dataclass(frozen=True, slots=True, kw_only=True)
class ExpiryTimes:
    """The expired holds' times in the write side, epoch seconds: when they fell due
    (``expires_at``) and when the job's transactions that expired them began
    (``updated_at``)."""

    holds: int
    first_due: float
    last_due: float
    first_expired: float
    last_expired: float


def expiry_figures(times: ExpiryTimes) -> dict[str, Any]:
    """(x)'s figures. The rate counts from the first hold due to the last one expired,
    so it includes the job's wait for its next run and the spread of the due times: a
    lower bound of the job's own rate, which ``expired_per_second_while_expiring`` (from
    its first expiry to its last) bounds from above."""
    assert times.holds > 0 and times.last_expired >= times.first_expired
    total_seconds = times.last_expired - times.first_due
    busy_seconds = times.last_expired - times.first_expired
    return {
        "holds_expired": times.holds,
        "expired_per_second": round(times.holds / total_seconds, 1) if total_seconds > 0 else None,
        "expired_per_second_while_expiring": round(times.holds / busy_seconds, 1)
        if busy_seconds > 0
        else None,
        "due_spread_seconds": round(times.last_due - times.first_due, 3),
        "first_due_to_first_expired_seconds": round(times.first_expired - times.first_due, 3),
        "first_due_to_last_expired_seconds": round(total_seconds, 3),
    }


def hold_expiry(context: BenchContext) -> dict[str, Any]:
    """(x) Places ``--expiry-holds`` holds due together, then waits until the command
    servers' expiry job has expired every one; their timestamps give the rate.

    Raises:
        BenchError: a hold could not be placed, or not all expired in time.
    """
    options = context.options
    count = options.expiry_holds
    lead_seconds = EXPIRY_LEAD_SECONDS_MIN + count / EXPIRY_PLACE_RATE_ASSUMED_PER_SECOND
    due_at = time.time() + lead_seconds
    started = time.monotonic()
    placed = asyncio.run(_place_holds(context, count, due_at))
    context.outcomes.merge(placed.outcomes)
    if len(placed.pending_ids) != count:
        raise BenchError(
            f"{count - len(placed.pending_ids)} of {count} holds were not placed: {placed.errors}"
        )
    placing_seconds = time.monotonic() - started
    deadline = max(due_at, time.time()) + options.catch_up_wait_seconds_max
    times = _wait_until_expired(context.resources.pg_dsn, placed.pending_ids, deadline)
    return {
        **expiry_figures(times),
        "holds_placed": count,
        "placing_seconds": round(placing_seconds, 3),
        "lead_seconds": round(lead_seconds, 3),
        "job_interval_seconds": float(os.environ.get(EXPIRY_INTERVAL_VARIABLE, "1")),
        "read_side": _READ_SIDE_RUNNING,
    }


@dataclass(slots=True)
class _Placed:
    pending_ids: list[str]
    outcomes: Outcomes
    errors: dict[str, int]


async def _place_holds(context: BenchContext, count: int, due_at: float) -> _Placed:
    """Places ``count`` holds in ExecuteBatch calls of ``--batch-size``,
    ``--batch-concurrency`` at a time, each batch's timeout counted down to ``due_at``."""
    options = context.options
    security = context.services.security
    metadata = call_metadata(security)
    tally = WorkerResult()
    rng = random.Random(f"{options.seed}:hold-expiry")
    starts = iter(range(0, count, options.batch_size))
    pending_ids: list[str] = []
    prefix = f"lt-{context.run_id}-hold-expiry-"
    async with load_channel(context.services.command_addr, security) as channel:
        stub = commands_pb2_grpc.CommandServiceStub(channel)  # type: ignore[no-untyped-call]

        async def place() -> None:
            for start in starts:
                size = min(options.batch_size, count - start)
                request_ids = [f"{prefix}{start + index:07d}" for index in range(size)]
                timeout_seconds = timeout_until(due_at, time.time())
                request = commands_pb2.ExecuteBatchRequest(
                    commands=[
                        commands_pb2.BatchCommand(
                            create_pending_transfer=create_request(
                                context.funded_account_ids,
                                CURRENCY,
                                AMOUNT_MAX_MINOR,
                                rng,
                                request_id,
                                timeout_seconds,
                            )
                        )
                        for request_id in request_ids
                    ]
                )
                try:
                    response = await stub.ExecuteBatch(
                        request, timeout=options.rpc_timeout_seconds, metadata=metadata
                    )
                except grpc.aio.AioRpcError as error:
                    tally.errors[error.code().name] = tally.errors.get(error.code().name, 0) + 1
                    for request_id in request_ids:
                        tally.outcomes.record_failure(request_id, error.code())
                    continue
                accepted = record_batch_answer(tally, request_ids, response, CREATE)
                pending_ids.extend(response.results[i].response.pending_id for i in accepted)

        await asyncio.gather(*(place() for _ in range(options.batch_concurrency)))
    return _Placed(pending_ids=pending_ids, outcomes=tally.outcomes, errors=tally.errors)


_EXPIRY_STATE = """SELECT count(*) FILTER (WHERE state = 'EXPIRED'),
                          extract(epoch FROM min(expires_at)), extract(epoch FROM max(expires_at)),
                          extract(epoch FROM min(updated_at) FILTER (WHERE state = 'EXPIRED')),
                          extract(epoch FROM max(updated_at) FILTER (WHERE state = 'EXPIRED'))
                   FROM pending_transfers WHERE pending_id = ANY(%s::uuid[])"""


def _wait_until_expired(pg_dsn: str, pending_ids: list[str], deadline: float) -> ExpiryTimes:
    """Polls the write side until every hold of ``pending_ids`` is EXPIRED.

    Raises:
        BenchError: some were not by ``deadline`` (epoch seconds).
    """
    with psycopg.connect(
        pg_dsn, autocommit=True, connect_timeout=PG_CONNECT_TIMEOUT_SECONDS
    ) as conn:
        while True:
            row = conn.execute(_EXPIRY_STATE, (pending_ids,)).fetchone()
            assert row is not None
            expired = int(row[0])
            if expired == len(pending_ids):
                return ExpiryTimes(
                    holds=expired,
                    first_due=float(row[1]),
                    last_due=float(row[2]),
                    first_expired=float(row[3]),
                    last_expired=float(row[4]),
                )
            if time.time() > deadline:
                raise BenchError(
                    f"only {expired} of {len(pending_ids)} holds expired by the deadline"
                )
            time.sleep(_POLL_INTERVAL_SECONDS)

"""The Python client's calls for the hold stages: a create + post pair, one RPC after
the other, and the same pair for a whole batch (a batch of creates, then a batch of the
posts of the holds it placed).

A pair needs the ``pending_id`` the create answered, so it cannot be a single templated
call: ghz cannot chain two calls, and these stages always run this client. Each factory
is a module-level function (:data:`chronos_dev.bench.pyclient.CallFactory`), so that the
load carrying it pickles into the client processes.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import grpc

from chronos.v1 import commands_pb2, commands_pb2_grpc, ledger_pb2
from chronos_dev.bench.pyclient import (
    Call,
    UnaryLoad,
    Worker,
    WorkerResult,
    record_answer,
    record_batch_answer,
    record_batch_failure,
)

HOLD_PAIR = "CreatePendingTransfer+PostPendingTransfer"
HOLD_PAIR_BATCH = "ExecuteBatch(creates, then posts)"
CREATE = "CreatePendingTransfer"
POST = "PostPendingTransfer"
HOLD_DESCRIPTION = "bench hold"


def create_request(
    account_ids: Sequence[str],
    currency: str,
    amount_max_minor: int,
    rng: random.Random,
    request_id: str,
    timeout_seconds: int = 0,
) -> commands_pb2.CreatePendingTransferRequest:
    """A hold of a random amount between two random accounts of ``account_ids``."""
    source, target = rng.sample(list(account_ids), 2)
    return commands_pb2.CreatePendingTransferRequest(
        request_id=request_id,
        from_account_id=source,
        to_account_id=target,
        amount=ledger_pb2.Money(currency=currency, minor_units=rng.randint(1, amount_max_minor)),
        description=HOLD_DESCRIPTION,
        timeout_seconds=timeout_seconds,
    )


def _create(
    load: UnaryLoad, rng: random.Random, request_id: str
) -> commands_pb2.CreatePendingTransferRequest:
    return create_request(load.account_ids, load.currency, load.amount_max_minor, rng, request_id)


def hold_pair_call(worker: Worker) -> Call:
    """One pair per call: CreatePendingTransfer, then PostPendingTransfer of the whole
    hold; the call's latency is the pair's. Counts one ``ok`` per posted hold."""
    load, worker_index, metadata, result = worker.load, worker.index, worker.metadata, worker.result
    stub = commands_pb2_grpc.CommandServiceStub(worker.channels[0])  # type: ignore[no-untyped-call]
    rng = random.Random(f"{load.seed}:hold-pairs:{worker_index}")

    async def call() -> int:
        prefix = f"{load.request_id_prefix}h{worker_index:02d}{result.calls:011d}"
        result.calls += 1
        create_id, post_id = f"{prefix}-c", f"{prefix}-p"
        try:
            created = await stub.CreatePendingTransfer(
                _create(load, rng, create_id),
                timeout=load.rpc_timeout_seconds,
                metadata=metadata,
            )
        except grpc.aio.AioRpcError as error:
            result.outcomes.record_failure(create_id, error.code())
            raise
        record_answer(result, create_id, CREATE, created)
        post = commands_pb2.PostPendingTransferRequest(
            request_id=post_id, pending_id=created.pending_id
        )
        try:
            posted = await stub.PostPendingTransfer(
                post, timeout=load.rpc_timeout_seconds, metadata=metadata
            )
        except grpc.aio.AioRpcError as error:
            result.outcomes.record_failure(post_id, error.code())
            raise
        record_answer(result, post_id, POST, posted)
        return 1

    return call


def hold_pair_batch_call(worker: Worker) -> Call:
    """``load.batch_size`` pairs per call: an ExecuteBatch of that many creates, then an
    ExecuteBatch of the posts of the holds it placed; the call's latency is the two
    calls'. Counts one ``ok`` per posted hold; each failed command counts as failed."""
    load, worker_index, metadata, result = worker.load, worker.index, worker.metadata, worker.result
    rng = random.Random(f"{load.seed}:hold-pair-batches:{worker_index}")
    stubs = [
        commands_pb2_grpc.CommandServiceStub(channel)  # type: ignore[no-untyped-call]
        for channel in worker.channels
    ]

    async def call() -> int:
        prefix = f"{load.request_id_prefix}hb{worker_index:02d}{result.calls:011d}"
        stub = stubs[result.calls % len(stubs)]
        result.calls += 1
        create_ids = [f"{prefix}-c{index:04d}" for index in range(load.batch_size)]
        creates = commands_pb2.ExecuteBatchRequest(
            commands=[
                commands_pb2.BatchCommand(create_pending_transfer=_create(load, rng, rid))
                for rid in create_ids
            ]
        )
        created, accepted = await _execute(
            stub, creates, create_ids, load, metadata, result, CREATE
        )
        placed = [created.results[i].response.pending_id for i in accepted]
        if not placed:
            return 0
        post_ids = [f"{prefix}-p{index:04d}" for index in range(len(placed))]
        posts = commands_pb2.ExecuteBatchRequest(
            commands=[
                commands_pb2.BatchCommand(
                    post_pending_transfer=commands_pb2.PostPendingTransferRequest(
                        request_id=rid, pending_id=pending_id
                    )
                )
                for rid, pending_id in zip(post_ids, placed, strict=True)
            ]
        )
        _, posted = await _execute(stub, posts, post_ids, load, metadata, result, POST)
        return len(posted)

    return call


async def _execute(
    stub: commands_pb2_grpc.CommandServiceStub,
    request: commands_pb2.ExecuteBatchRequest,
    request_ids: list[str],
    load: UnaryLoad,
    metadata: tuple[tuple[str, str], ...],
    result: WorkerResult,
    rpc: str,
) -> tuple[commands_pb2.ExecuteBatchResponse, list[int]]:
    """Sends one ExecuteBatch and records its commands' outcomes; returns the answer and
    the indexes of the accepted commands."""
    try:
        response = await stub.ExecuteBatch(
            request, timeout=load.rpc_timeout_seconds, metadata=metadata
        )
    except grpc.aio.AioRpcError as error:
        record_batch_failure(result, request_ids, error)
        raise
    return response, record_batch_answer(result, request_ids, response, rpc)

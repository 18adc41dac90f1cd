"""Composition root of the command server: ``python -m command_server``."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sys

import grpc
from psycopg_pool import AsyncConnectionPool

from chronos import telemetry
from chronos.event_store.hold_expiry import expire_due_holds
from chronos.event_store.login_check import check_postgres_login
from chronos.event_store.maintenance import expire_idempotency_records, run_periodically
from chronos.event_store.writer import LedgerWriter, WriterSettings, writer_pool
from chronos.metrics import DB_POOL_IN_USE, DB_POOL_WAITING
from chronos.process import run_grpc_server
from chronos.rpc import InFlightLimit, add_servicer, serve
from chronos.security.authentication import build_authenticator
from chronos.v1 import commands_pb2
from command_server.config import CommandServerConfig
from command_server.servicer import CommandServicer, commands_in

_logger = logging.getLogger("command_server")


async def run(config: CommandServerConfig) -> None:
    # A refused login stops the start; an unreachable server does not (calls answer
    # UNAVAILABLE until it is back).
    await asyncio.to_thread(check_postgres_login, config.pg_dsn)
    pool = writer_pool(
        config.pg_dsn,
        min_size=config.writer_lanes,
        max_size=config.pool_size_max,
        name="command-writer",
        application_name="chronos-command-server",
        bounds=config.session_bounds,
    )
    await pool.open(wait=False)
    writer = LedgerWriter(
        pool,
        WriterSettings(
            topic=config.topic,
            lanes=config.writer_lanes,
            batch_size_max=config.batch_size_max,
            retries_max=config.retries_max,
            idempotency_retention_seconds=config.idempotency_retention_seconds,
        ),
    )
    writer.start()
    stop_jobs = asyncio.Event()
    jobs = _start_jobs(config, pool, writer, stop_jobs)
    pool_gauges = asyncio.create_task(_report_pool(pool, stop_jobs))

    authenticator = build_authenticator("command", config.security)

    def register(server: grpc.aio.Server) -> list[str]:
        servicer = CommandServicer(writer, traceparent=telemetry.current_traceparent)
        service = commands_pb2.DESCRIPTOR.services_by_name["CommandService"]
        limit = InFlightLimit(config.in_flight_max, "commands", weigh=commands_in)
        return [add_servicer(server, servicer, service, limit, authenticator)]

    async def on_stop() -> None:
        stop_jobs.set()
        await asyncio.gather(*jobs)
        await pool_gauges
        await writer.close()
        await pool.close()

    await serve(
        name="command server",
        address=config.address,
        register=register,
        security=config.security,
        authenticator=authenticator,
        interceptors=telemetry.server_interceptors("command"),
        on_stop=on_stop,
        shutdown_grace_seconds=config.shutdown_grace_seconds,
        reuse_port=config.reuse_port,
    )


def _start_jobs(
    config: CommandServerConfig,
    pool: AsyncConnectionPool,
    writer: LedgerWriter,
    stop: asyncio.Event,
) -> list[asyncio.Task[None]]:
    """The periodic housekeeping: idempotency records' expiry, and the holds' expiry."""
    return [
        asyncio.create_task(
            run_periodically(
                "idempotency expiry",
                config.idempotency_expiry_interval_seconds,
                functools.partial(expire_idempotency_records, pool),
                stop,
            )
        ),
        asyncio.create_task(
            run_periodically(
                "hold expiry",
                config.hold_expiry_interval_seconds,
                functools.partial(expire_due_holds, pool, writer.execute_in_order),
                stop,
            )
        ),
    ]


async def _report_pool(pool: AsyncConnectionPool, stop: asyncio.Event) -> None:
    while not stop.is_set():
        stats = pool.get_stats()
        DB_POOL_IN_USE.labels("command").set(
            stats.get("pool_size", 0) - stats.get("pool_available", 0)
        )
        DB_POOL_WAITING.labels("command").set(stats.get("requests_waiting", 0))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=1.0)


def main() -> int:
    # Each command worker has its own pool and writer; the ledger's locking is the same
    # across processes as within one.
    return run_grpc_server(
        service="command-server",
        module="command_server",
        prefix="COMMAND",
        load_config=CommandServerConfig.from_env,
        serve=run,
    )


if __name__ == "__main__":
    sys.exit(main())

"""The hash chain stays gapless and correct when several command server processes, each
with its own group-commit writer, append at once; `chronos verify` checks it."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import grpc
import psycopg

from chronos.v1 import commands_pb2 as pb
from chronos.v1 import commands_pb2_grpc, ledger_pb2
from chronos_dev.client import channel as open_channel
from tests.e2e.helpers import free_port, service_process
from tests.integration.conftest import create_database, drop_database

SERVERS = 2
# Each server runs this many processes, each its own writer and pool.
PROCESSES_PER_SERVER = 2
TRANSFERS = 600
ACCOUNTS = 6


def _eur(minor: int) -> ledger_pb2.Money:
    return ledger_pb2.Money(currency="EUR", minor_units=minor)


def test_the_chain_is_gapless_and_correct_under_several_command_servers(
    pg_dsn: str, tmp_path: Path
) -> None:
    name, dsn = create_database(pg_dsn)
    rng = random.Random(18)
    try:
        with ExitStack() as stack:
            addresses = []
            for index in range(SERVERS):
                address = f"127.0.0.1:{free_port()}"
                stack.enter_context(
                    service_process(
                        "command_server",
                        {
                            "CHRONOS_PG_DSN": dsn,
                            "CHRONOS_COMMAND_ADDR": address,
                            "CHRONOS_COMMAND_PROCESSES": str(PROCESSES_PER_SERVER),
                            "CHRONOS_COMMAND_METRICS_PORT": str(free_port()),
                            "TMPDIR": str(tmp_path),
                        },
                        log_path=tmp_path / f"command-{index}.log",
                        grpc_address=address,
                    )
                )
                addresses.append(address)
            channels = [stack.enter_context(open_channel(addresses[i % SERVERS])) for i in range(8)]
            stubs = [commands_pb2_grpc.CommandServiceStub(c) for c in channels]
            accounts = []
            for _ in range(ACCOUNTS):
                opened = stubs[0].OpenAccount(
                    pb.OpenAccountRequest(
                        request_id=str(uuid.uuid4()), owner_name="Ada", currency="EUR"
                    ),
                    timeout=10,
                )
                stubs[0].Deposit(
                    pb.DepositRequest(
                        request_id=str(uuid.uuid4()),
                        account_id=opened.account_id,
                        amount=_eur(1_000_000),
                    ),
                    timeout=10,
                )
                accounts.append(opened.account_id)
            pairs = [rng.sample(accounts, 2) for _ in range(TRANSFERS)]

            def transfer(index: int) -> grpc.StatusCode:
                source, target = pairs[index]
                try:
                    stubs[index % len(stubs)].TransferFunds(
                        pb.TransferFundsRequest(
                            request_id=str(uuid.uuid4()),
                            from_account_id=source,
                            to_account_id=target,
                            amount=_eur(rng.randint(1, 100)),
                        ),
                        timeout=30,
                    )
                except grpc.RpcError as error:
                    return error.code()
                return grpc.StatusCode.OK

            with ThreadPoolExecutor(max_workers=32) as pool:
                codes = list(pool.map(transfer, range(TRANSFERS)))
        assert codes.count(grpc.StatusCode.OK) == TRANSFERS, set(codes)

        verified = subprocess.run(
            [sys.executable, "-m", "chronos.cli", "verify", "--dsn", dsn, "--no-progress"],
            # A topic of its own: this ledger has no checkpoints, and the default topic's
            # belong to another ledger (the one ./scripts/run serves).
            env={**os.environ, "CHRONOS_EVENTS_TOPIC": f"chain-concurrency-{uuid.uuid4().hex}"},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert verified.returncode == 0, verified.stdout + verified.stderr
        with psycopg.connect(dsn) as conn:
            row = conn.execute(
                "SELECT (SELECT position FROM ledger_head), count(*), "
                "count(*) FILTER (WHERE event_type = 'FundsTransferred') FROM events"
            ).fetchone()
        assert row is not None
        head, events, transfer_lines = row
        assert (events, transfer_lines) == (head, TRANSFERS * 2)
        assert verified.stdout.startswith(f"chain intact: positions 1..{head}, {head} events")
    finally:
        drop_database(pg_dsn, name)

"""The command server as a real process, called through generated gRPC stubs."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from google.rpc import code_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from chronos.domain.ledger import system_account_id
from chronos.v1 import commands_pb2 as pb
from chronos.v1 import commands_pb2_grpc, ledger_pb2
from chronos_dev.client import channel as open_channel
from tests.e2e.helpers import PROJECT_ROOT, details_of, free_port, service_process
from tests.integration.conftest import create_database, drop_database

METRICS_PORT = free_port()


@pytest.fixture(scope="module")
def server(pg_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    name, dsn = create_database(pg_dsn)
    address = f"127.0.0.1:{free_port()}"
    log_path = tmp_path_factory.mktemp("command-server") / "server.log"
    env = {
        "CHRONOS_PG_DSN": dsn,
        "CHRONOS_COMMAND_ADDR": address,
        "CHRONOS_COMMAND_METRICS_PORT": str(METRICS_PORT),
    }
    try:
        with service_process("command_server", env, log_path=log_path, grpc_address=address):
            yield address, dsn
    finally:
        drop_database(pg_dsn, name)


@pytest.fixture(scope="module")
def stub(server: tuple[str, str]) -> Iterator[commands_pb2_grpc.CommandServiceStub]:
    with open_channel(server[0]) as channel:
        yield commands_pb2_grpc.CommandServiceStub(channel)


def rid() -> str:
    return f"e2e-{uuid.uuid4()}"


def eur(minor: int) -> ledger_pb2.Money:
    return ledger_pb2.Money(currency="EUR", minor_units=minor)


def open_account(stub: Any, limit_minor: int = 0, currency: str = "EUR") -> str:
    response = stub.OpenAccount(
        pb.OpenAccountRequest(
            request_id=rid(),
            owner_name="Grace Hopper",
            currency=currency,
            overdraft_limit_minor=limit_minor,
            metadata={"segment": "retail"},
        ),
        timeout=10,
    )
    uuid.UUID(response.account_id)
    return str(response.account_id)


def error_of(call: Any, request: Any) -> tuple[grpc.StatusCode, str, str, list[str]]:
    """Calls and returns (code, ErrorInfo reason, message, BadRequest fields)."""
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=10)
    error = caught.value
    status = rpc_status.from_call(error)
    assert status is not None, "no rich status details"
    reason, fields = details_of(status)
    return error.code(), reason, error.details(), fields


def test_money_moves_and_every_response_carries_position_and_balances(stub: Any) -> None:
    a, b = open_account(stub), open_account(stub, limit_minor=100)
    deposit = stub.Deposit(pb.DepositRequest(request_id=rid(), account_id=a, amount=eur(1000)))
    assert deposit.entry_id and not deposit.replayed
    balances = {x.account_id: x.balance.minor_units for x in deposit.balances}
    assert balances == {a: 1000, system_account_id("EUR"): -1000}
    transfer = stub.TransferFunds(
        pb.TransferFundsRequest(
            request_id=rid(), from_account_id=a, to_account_id=b, amount=eur(300)
        )
    )
    assert transfer.position > deposit.position
    assert {x.account_id: x.balance.minor_units for x in transfer.balances} == {a: 700, b: 300}
    withdraw = stub.Withdraw(pb.WithdrawRequest(request_id=rid(), account_id=b, amount=eur(350)))
    assert {x.account_id: x.balance.minor_units for x in withdraw.balances}[b] == -50
    fee = open_account(stub)
    journal = stub.PostJournalEntry(
        pb.PostJournalEntryRequest(
            request_id=rid(),
            description="transfer with fee",
            lines=[
                pb.JournalLine(account_id=a, amount=eur(110), side=ledger_pb2.SIDE_DEBIT),
                pb.JournalLine(account_id=b, amount=eur(100), side=ledger_pb2.SIDE_CREDIT),
                pb.JournalLine(account_id=fee, amount=eur(10), side=ledger_pb2.SIDE_CREDIT),
            ],
        )
    )
    assert {x.account_id: x.balance.minor_units for x in journal.balances} == {
        a: 590,
        b: 50,
        fee: 10,
    }
    assert len(journal.event_ids) == 3


def test_status_commands(stub: Any) -> None:
    a = open_account(stub)
    stub.Deposit(pb.DepositRequest(request_id=rid(), account_id=a, amount=eur(5)))
    frozen = stub.FreezeAccount(
        pb.FreezeAccountRequest(request_id=rid(), account_id=a, reason="kyc")
    )
    assert frozen.account_id == a and frozen.position > 0
    code, reason, _, _ = error_of(
        stub.Withdraw, pb.WithdrawRequest(request_id=rid(), account_id=a, amount=eur(1))
    )
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "ACCOUNT_FROZEN")
    stub.Deposit(pb.DepositRequest(request_id=rid(), account_id=a, amount=eur(1)))
    stub.UnfreezeAccount(pb.UnfreezeAccountRequest(request_id=rid(), account_id=a))
    code, reason, _, _ = error_of(
        stub.CloseAccount, pb.CloseAccountRequest(request_id=rid(), account_id=a)
    )
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "ACCOUNT_NOT_EMPTY")
    stub.Withdraw(pb.WithdrawRequest(request_id=rid(), account_id=a, amount=eur(6)))
    closed = stub.CloseAccount(pb.CloseAccountRequest(request_id=rid(), account_id=a))
    assert closed.balances[0].balance.minor_units == 0
    code, reason, _, _ = error_of(
        stub.Deposit, pb.DepositRequest(request_id=rid(), account_id=a, amount=eur(1))
    )
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "ACCOUNT_CLOSED")


def test_replay_and_key_reuse(stub: Any) -> None:
    a = open_account(stub)
    request = pb.DepositRequest(request_id=rid(), account_id=a, amount=eur(10))
    first = stub.Deposit(request)
    again = stub.Deposit(request)
    assert again.replayed and not first.replayed
    assert (again.position, again.entry_id) == (first.position, first.entry_id)
    request.amount.minor_units = 11
    code, reason, _, _ = error_of(stub.Deposit, request)
    assert (code, reason) == (grpc.StatusCode.ALREADY_EXISTS, "IDEMPOTENCY_KEY_REUSED")
    # OpenAccount without an id: a retry gets the id generated the first time.
    open_request = pb.OpenAccountRequest(request_id=rid(), owner_name="Retry", currency="EUR")
    assert stub.OpenAccount(open_request).account_id == stub.OpenAccount(open_request).account_id


@pytest.mark.parametrize(
    ("method", "request_message", "fields"),
    [
        ("Deposit", pb.DepositRequest(account_id=str(uuid.uuid4()), amount=eur(1)), ["request_id"]),
        (
            "Deposit",
            pb.DepositRequest(request_id="x", account_id="not-a-uuid", amount=eur(0)),
            ["account_id", "amount.minor_units"],
        ),
        (
            "Withdraw",
            pb.WithdrawRequest(
                request_id="x",
                account_id=str(uuid.uuid4()),
                amount=ledger_pb2.Money(currency="eur", minor_units=1),
            ),
            ["amount.currency"],
        ),
        (
            "TransferFunds",
            pb.TransferFundsRequest(
                request_id="x",
                from_account_id="11111111-1111-4111-8111-111111111111",
                to_account_id="11111111-1111-4111-8111-111111111111",
                amount=eur(1),
            ),
            ["to_account_id"],
        ),
        ("PostJournalEntry", pb.PostJournalEntryRequest(request_id="x"), ["lines"]),
        (
            "OpenAccount",
            pb.OpenAccountRequest(request_id="x", owner_name="o" * 201, currency="EUR"),
            ["owner_name"],
        ),
        (
            "FreezeAccount",
            pb.FreezeAccountRequest(request_id="r" * 129, account_id=str(uuid.uuid4())),
            ["request_id"],
        ),
        # NUL reaches no database column: PostgreSQL text cannot hold it.
        (
            "OpenAccount",
            pb.OpenAccountRequest(
                request_id="r",
                owner_name="Ada\x00",
                currency="EUR",
                metadata={"ok": "fine", "segment\x00": "retail"},
            ),
            ["owner_name", "metadata['segment\\x00']"],
        ),
    ],
)
def test_invalid_requests_get_invalid_argument_with_field_violations(
    stub: Any, method: str, request_message: Any, fields: list[str]
) -> None:
    code, reason, message, violations = error_of(getattr(stub, method), request_message)
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert reason == "VALIDATION_FAILED"
    assert violations == fields
    assert message.startswith("The request is invalid")


def test_a_system_account_id_in_braces_cannot_be_opened(stub: Any, server: tuple[str, str]) -> None:
    # ISK: a currency no other test touches, so its system account does not exist yet.
    system_id = system_account_id("ISK")
    request = pb.OpenAccountRequest(
        request_id=rid(), account_id=f"{{{system_id.upper()}}}", owner_name="M", currency="ISK"
    )
    code, reason, _, fields = error_of(stub.OpenAccount, request)
    assert (code, reason, fields) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "VALIDATION_FAILED",
        ["account_id"],
    )
    with psycopg.connect(server[1]) as conn:
        accounts = conn.execute("SELECT count(*) FROM accounts WHERE account_id = %s", (system_id,))
        events = conn.execute("SELECT count(*) FROM events WHERE stream_id = %s", (system_id,))
        records = conn.execute(
            "SELECT count(*) FROM idempotency WHERE request_id = %s", (request.request_id,)
        )
        assert [row.fetchone() for row in (accounts, events, records)] == [(0,), (0,), (0,)]


def test_a_request_that_is_not_protobuf_is_invalid_argument(server: tuple[str, str]) -> None:
    # gRPC's own deserializer would answer UNKNOWN with a Python exception's text.
    with open_channel(server[0]) as channel:
        call = channel.unary_unary("/chronos.v1.CommandService/TransferFunds")
        for payload, problem in (
            (b"\x0a\x03\xff\xfe\xfd", "String field had bad UTF-8"),
            (b"\x08" + b"\x80" * 11, "Wire format was corrupt"),
        ):
            code, reason, message, fields = error_of(call, payload)
            assert (code, reason, fields) == (
                grpc.StatusCode.INVALID_ARGUMENT,
                "VALIDATION_FAILED",
                [],
            )
            assert message.startswith(
                "The request is invalid: it is not a well-formed "
                "chronos.v1.TransferFundsRequest message"
            )
            assert problem in message


def test_business_rejections_map_to_their_codes(stub: Any) -> None:
    a = open_account(stub)
    usd = open_account(stub, currency="USD")
    cases = [
        (
            stub.Withdraw,
            pb.WithdrawRequest(request_id=rid(), account_id=a, amount=eur(1)),
            (grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS"),
        ),
        (
            stub.Deposit,
            pb.DepositRequest(request_id=rid(), account_id=str(uuid.uuid4()), amount=eur(1)),
            (grpc.StatusCode.NOT_FOUND, "ACCOUNT_NOT_FOUND"),
        ),
        (
            stub.OpenAccount,
            pb.OpenAccountRequest(request_id=rid(), account_id=a, owner_name="x", currency="EUR"),
            (grpc.StatusCode.ALREADY_EXISTS, "ACCOUNT_EXISTS"),
        ),
        (
            stub.TransferFunds,
            pb.TransferFundsRequest(
                request_id=rid(), from_account_id=usd, to_account_id=a, amount=eur(1)
            ),
            (grpc.StatusCode.FAILED_PRECONDITION, "CURRENCY_MISMATCH"),
        ),
        (
            stub.UnfreezeAccount,
            pb.UnfreezeAccountRequest(request_id=rid(), account_id=a),
            (grpc.StatusCode.FAILED_PRECONDITION, "ACCOUNT_NOT_FROZEN"),
        ),
    ]
    for call, request, expected in cases:
        code, reason, message, _ = error_of(call, request)
        assert (code, reason) == expected
        assert message and "Traceback" not in message


def test_execute_batch_runs_commands_in_order_each_with_its_own_outcome(stub: Any) -> None:
    new, other = str(uuid.uuid4()), open_account(stub)
    commands = [
        pb.BatchCommand(
            open_account=pb.OpenAccountRequest(
                request_id=rid(), account_id=new, owner_name="Batch", currency="EUR"
            )
        ),
        pb.BatchCommand(
            deposit=pb.DepositRequest(request_id=rid(), account_id=new, amount=eur(100))
        ),
        pb.BatchCommand(
            transfer_funds=pb.TransferFundsRequest(
                request_id=rid(), from_account_id=new, to_account_id=other, amount=eur(60)
            )
        ),
        pb.BatchCommand(
            transfer_funds=pb.TransferFundsRequest(
                request_id=rid(), from_account_id=new, to_account_id=other, amount=eur(60)
            )
        ),
        pb.BatchCommand(
            deposit=pb.DepositRequest(request_id="x", account_id="not-a-uuid", amount=eur(0))
        ),
        pb.BatchCommand(),
        pb.BatchCommand(
            withdraw=pb.WithdrawRequest(request_id=rid(), account_id=new, amount=eur(40))
        ),
    ]
    request = pb.ExecuteBatchRequest(commands=commands)
    first = stub.ExecuteBatch(request, timeout=10)
    kinds = [result.WhichOneof("outcome") for result in first.results]
    assert kinds == ["response", "response", "response", "error", "error", "error", "response"]
    errors = [(r.error.code, *details_of(r.error)) for r in first.results if r.HasField("error")]
    assert errors == [
        (code_pb2.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS", []),
        (code_pb2.INVALID_ARGUMENT, "VALIDATION_FAILED", ["account_id", "amount.minor_units"]),
        (code_pb2.INVALID_ARGUMENT, "VALIDATION_FAILED", ["command"]),
    ]
    assert all(r.error.message for r in first.results if r.HasField("error"))
    answers = [r.response for r in first.results if r.HasField("response")]
    positions = [answer.position for answer in answers]
    assert positions == sorted(positions) and len(set(positions)) == 4
    final = {b.account_id: b.balance.minor_units for b in answers[-1].balances}
    assert final[new] == 0 and answers[2].balances[1].balance.minor_units >= 60
    assert not any(answer.replayed for answer in answers)

    # The same batch again: accepted commands replay, rejected ones are judged anew.
    again = stub.ExecuteBatch(request, timeout=10)
    assert [r.WhichOneof("outcome") for r in again.results] == kinds
    replays = [r.response for r in again.results if r.HasField("response")]
    assert all(answer.replayed for answer in replays)
    assert [answer.position for answer in replays] == positions
    assert again.results[3].error.code == code_pb2.FAILED_PRECONDITION


def test_execute_batch_refuses_an_empty_or_oversized_batch(stub: Any) -> None:
    too_many = [
        pb.BatchCommand(deposit=pb.DepositRequest(request_id=rid(), amount=eur(1)))
        for _ in range(1001)
    ]
    for commands in ([], too_many):
        assert "1 to 1000 commands" in batch_refusal(stub, commands)


def batch_refusal(stub: Any, commands: list[pb.BatchCommand]) -> str:
    """Asserts the whole batch is refused as invalid; returns the message."""
    code, reason, message, fields = error_of(
        stub.ExecuteBatch, pb.ExecuteBatchRequest(commands=commands)
    )
    assert (code, reason, fields) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "VALIDATION_FAILED",
        ["commands"],
    )
    return message


def test_a_batch_answer_fits_a_default_client_so_journal_lines_are_capped(stub: Any) -> None:
    accounts = [open_account(stub) for _ in range(64)]
    for account in accounts[:32]:
        stub.Deposit(
            pb.DepositRequest(request_id=rid(), account_id=account, amount=eur(1_000)), timeout=10
        )

    def entry() -> pb.BatchCommand:
        sides = [ledger_pb2.SIDE_DEBIT] * 32 + [ledger_pb2.SIDE_CREDIT] * 32
        lines = [
            pb.JournalLine(account_id=account, amount=eur(1), side=side)
            for account, side in zip(accounts, sides, strict=True)
        ]
        return pb.BatchCommand(
            post_journal_entry=pb.PostJournalEntryRequest(
                request_id=rid(), lines=lines, description="d" * 500
            )
        )

    # 157 entries of 64 lines: 10,048 lines, over the cap. Refused whole: the account
    # the batch would open can still be opened by the same request afterwards.
    opening = pb.OpenAccountRequest(
        request_id=rid(), account_id=str(uuid.uuid4()), owner_name="Ada", currency="EUR"
    )
    over = [pb.BatchCommand(open_account=opening)] + [entry() for _ in range(157)]
    assert "at most 10000 lines in all, got 10048" in batch_refusal(stub, over)
    assert not stub.OpenAccount(opening, timeout=10).replayed

    # 156 entries (9,984 lines) commit, and the answer reaches a client with gRPC's
    # default 4 MB receive limit (the module's channel has no options).
    answer = stub.ExecuteBatch(
        pb.ExecuteBatchRequest(commands=[entry() for _ in range(156)]), timeout=60
    )
    assert [r.WhichOneof("outcome") for r in answer.results] == ["response"] * 156
    assert all(len(r.response.balances) == 64 for r in answer.results)
    assert answer.ByteSize() < 4 * 2**20


def test_health_and_reflection_list_the_service(server: tuple[str, str]) -> None:
    with open_channel(server[0]) as channel:
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
        )
        names = {s.name for r in responses for s in r.list_services_response.service}
    assert "chronos.v1.CommandService" in names
    assert "grpc.health.v1.Health" in names


def scrape(port: int) -> dict[str, float]:
    """The metrics endpoint as {sample name with labels: value}."""
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    samples = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def test_metrics_count_requests_rejections_and_batches(stub: Any) -> None:
    before = scrape(METRICS_PORT)
    a = open_account(stub)
    stub.Deposit(pb.DepositRequest(request_id=rid(), account_id=a, amount=eur(5)))
    error_of(stub.Withdraw, pb.WithdrawRequest(request_id=rid(), account_id=a, amount=eur(6)))
    after = scrape(METRICS_PORT)

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    ok = 'chronos_grpc_requests_total{code="OK",method="Deposit",service="command"}'
    refused = (
        'chronos_grpc_requests_total{code="FAILED_PRECONDITION",method="Withdraw",'
        'service="command"}'
    )
    assert delta(ok) == 1
    assert delta(refused) == 1
    assert delta('chronos_commands_rejected_total{reason="INSUFFICIENT_FUNDS"}') == 1
    assert delta("chronos_writer_batch_commands_count") >= 3
    assert (
        delta('chronos_grpc_request_duration_seconds_count{method="OpenAccount",service="command"}')
        == 1
    )


@contextlib.contextmanager
def command_server(
    pg_dsn: str, tmp_path: Path, **env: str
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A command server process on a fresh database (dropped afterwards), serving;
    yields it and its address. ``env`` adds CHRONOS_* settings."""
    name, dsn = create_database(pg_dsn)
    address = f"127.0.0.1:{free_port()}"
    try:
        with service_process(
            "command_server",
            {"CHRONOS_PG_DSN": dsn, "CHRONOS_COMMAND_ADDR": address, **env},
            log_path=tmp_path / "server.log",
            grpc_address=address,
        ) as process:
            yield process, address
    finally:
        drop_database(pg_dsn, name)


def test_two_workers_count_every_call_on_the_one_metrics_port(pg_dsn: str, tmp_path: Path) -> None:
    calls = 24
    # The port after the metrics port is taken (here by this test, in `scripts/run` by
    # the query server): workers must not each want a port of their own.
    with socket.socket() as neighbour:
        metrics_port = taken_port_after_free_one(neighbour)
        with command_server(
            pg_dsn,
            tmp_path,
            CHRONOS_COMMAND_PROCESSES="2",
            CHRONOS_COMMAND_METRICS_PORT=str(metrics_port),
            # The workers' metrics files go here and must be gone afterwards.
            TMPDIR=str(tmp_path),
        ) as (process, address):
            before = scrape(metrics_port)
            for _ in range(calls):
                # A channel each: the kernel spreads connections over the workers.
                with open_channel(address) as channel:
                    open_account(commands_pb2_grpc.CommandServiceStub(channel))
            after = scrape(metrics_port)
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0
    opened = 'chronos_grpc_requests_total{code="OK",method="OpenAccount",service="command"}'
    assert after.get(opened, 0.0) - before.get(opened, 0.0) == calls
    assert list(tmp_path.glob("chronos-command-metrics-*")) == []


def test_work_over_the_in_flight_limit_is_refused_and_not_started(
    pg_dsn: str, tmp_path: Path
) -> None:
    # The lowest limit a server accepts: one full batch at a time.
    with (
        command_server(pg_dsn, tmp_path, CHRONOS_COMMAND_IN_FLIGHT_MAX="1000") as (_, address),
        open_channel(address) as channel,
    ):
        stub = commands_pb2_grpc.CommandServiceStub(channel)
        source, target = open_account(stub), open_account(stub)
        stub.Deposit(
            pb.DepositRequest(request_id=rid(), account_id=source, amount=eur(10_000)),
            timeout=10,
        )
        batches = [
            pb.ExecuteBatchRequest(
                commands=[
                    pb.BatchCommand(
                        transfer_funds=pb.TransferFundsRequest(
                            request_id=rid(),
                            from_account_id=source,
                            to_account_id=target,
                            amount=eur(1),
                        )
                    )
                    for _ in range(1000)
                ]
            )
            for _ in range(4)
        ]
        # Sent together: while the first admitted batch runs, the others find the
        # server full.
        calls = [stub.ExecuteBatch.future(batch, timeout=60) for batch in batches]
        admitted, refused = [], []
        for batch, call in zip(batches, calls, strict=True):
            if call.exception() is None:
                admitted.append(batch)
                continue
            refused.append(batch)
            status = rpc_status.from_call(call.exception())
            assert status is not None
            assert call.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert details_of(status) == ("SERVER_BUSY", [])
            assert "in flight and takes at most 1,000" in call.details()
            assert "nothing was done" in call.details()
        assert admitted and refused
        # Refused means not started: sent again, none of its commands replays.
        for batch, replayed in [(b, False) for b in refused] + [(b, True) for b in admitted]:
            again = stub.ExecuteBatch(batch, timeout=60)
            assert [r.WhichOneof("outcome") for r in again.results] == ["response"] * 1000
            assert {r.response.replayed for r in again.results} == {replayed}
        last = stub.Deposit(
            pb.DepositRequest(request_id=rid(), account_id=target, amount=eur(1)), timeout=10
        )
        balances = {b.account_id: b.balance.minor_units for b in last.balances}
        assert balances[target] == 4 * 1000 + 1


def taken_port_after_free_one(neighbour: socket.socket) -> int:
    """A free port whose next port ``neighbour`` now listens on."""
    for _ in range(50):
        port = free_port()
        try:
            neighbour.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        neighbour.listen()
        return port
    raise AssertionError("no free port with a free neighbour")


def test_a_worker_that_dies_takes_the_server_down(pg_dsn: str, tmp_path: Path) -> None:
    with command_server(pg_dsn, tmp_path, CHRONOS_COMMAND_PROCESSES="2") as (supervisor, _):
        workers = children(supervisor.pid)
        assert len(workers) == 2
        os.kill(workers[0], signal.SIGKILL)  # as the kernel's OOM killer would
        # Not left serving with one worker: the other is stopped and the supervisor
        # exits non-zero, for whoever runs it to restart it whole.
        assert supervisor.wait(timeout=30) != 0
        assert not Path(f"/proc/{workers[1]}").exists()
    assert f"worker {workers[0]} exited on its own" in (tmp_path / "server.log").read_text()


def children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_sigterm_shuts_down_cleanly(pg_dsn: str, tmp_path: Path) -> None:
    with command_server(pg_dsn, tmp_path, CHRONOS_COMMAND_METRICS_PORT="0") as (
        process,
        address,
    ):
        with open_channel(address) as channel:
            open_account(commands_pb2_grpc.CommandServiceStub(channel))
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    assert "command server stopped" in (tmp_path / "server.log").read_text()


def test_bad_configuration_exits_with_a_clear_message() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHRONOS_")}
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    result = subprocess.run(
        [sys.executable, "-m", "command_server"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=PROJECT_ROOT,
    )
    assert result.returncode == 2
    assert "CHRONOS_PG_DSN is not set" in result.stderr

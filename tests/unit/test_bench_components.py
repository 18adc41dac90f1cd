"""CPU per transfer by component: grouping the bench's processes and the division."""

from __future__ import annotations

import pytest

from chronos_dev.bench.components import (
    CLIENTS,
    COMMAND_SERVER,
    COMPONENTS,
    ELASTICSEARCH,
    KAFKA,
    OTHER,
    POSTGRESQL,
    QUERY_SERVER,
    READ_SIDE_PAUSED_NOTE,
    component_of,
    cpu_ms_per_transfer,
    ms_per_transfer,
    seconds_by_component,
    transfers_completed,
)
from chronos_dev.bench.cpu import BENCH_PROCESS, CLIENT_PROCESSES, TOTAL, CpuSnapshot, seconds_used

STAGE_SECONDS = {
    "command_server supervisor": 0.5,
    "command_server worker 0": 4.0,
    "command_server worker 1": 3.5,
    "query_server worker 0": 0.25,
    "outbox_poller": 1.0,
    "projector": 2.0,
    "postgres": 3.0,
    "kafka": 0.5,
    "elasticsearch": 1.5,
    BENCH_PROCESS: 0.75,
    CLIENT_PROCESSES: 1.25,
}


def test_every_process_the_bench_watches_has_its_component() -> None:
    assert component_of("command_server worker 3") == COMMAND_SERVER
    assert component_of("command_server supervisor") == COMMAND_SERVER
    assert component_of("query_server supervisor") == QUERY_SERVER
    assert component_of("postgres") == POSTGRESQL
    assert component_of("kafka") == KAFKA
    assert component_of("elasticsearch") == ELASTICSEARCH
    assert component_of(BENCH_PROCESS) == component_of(CLIENT_PROCESSES) == CLIENTS
    assert component_of("something new") == OTHER


def test_seconds_are_summed_per_component() -> None:
    grouped = seconds_by_component({**STAGE_SECONDS, TOTAL: 99.0})

    assert grouped[COMMAND_SERVER] == 8.0
    assert grouped[CLIENTS] == 2.0
    assert grouped[POSTGRESQL] == 3.0
    # The total of the input is not a process; nothing is lost or counted twice.
    assert sum(grouped.values()) == sum(STAGE_SECONDS.values())


def test_milliseconds_per_transfer_divide_by_the_transfers() -> None:
    per_transfer = ms_per_transfer(seconds_by_component(STAGE_SECONDS), transfers=1000)

    assert list(per_transfer) == [*COMPONENTS, TOTAL]
    assert per_transfer[COMMAND_SERVER] == 8.0
    assert per_transfer[KAFKA] == 0.5
    assert per_transfer[TOTAL] == 18.25


def test_an_unwatched_component_is_unknown_not_zero() -> None:
    per_transfer = ms_per_transfer({COMMAND_SERVER: 2.0, OTHER: 1.0}, transfers=500)

    assert per_transfer[POSTGRESQL] is None
    assert per_transfer[COMMAND_SERVER] == 4.0
    assert per_transfer[OTHER] == 2.0
    assert per_transfer[TOTAL] == 6.0


def test_a_slightly_negative_delta_counts_as_zero() -> None:
    assert ms_per_transfer({POSTGRESQL: -0.01}, transfers=10)[POSTGRESQL] == 0.0


def test_no_transfers_cannot_be_divided_by() -> None:
    with pytest.raises(ValueError):
        ms_per_transfer({COMMAND_SERVER: 1.0}, transfers=0)


def test_transfers_are_read_from_each_kind_of_stage() -> None:
    assert transfers_completed({"rpc": "TransferFunds", "ok": 900, "failed": 3}) == 900
    assert transfers_completed({"rpc": "ExecuteBatch", "ok": 4000, "calls": 20}) == 4000
    assert transfers_completed({"rpc": "GetAccount", "ok": 900}) is None
    assert transfers_completed({"rpc": "Check", "ok": 900}) is None
    assert transfers_completed({"transfers_completed": 42, "command": {"ok": 1}}) == 42
    assert transfers_completed({"seconds": 1.5}) is None
    assert transfers_completed(None) is None


def test_the_section_covers_the_stages_that_moved_transfers() -> None:
    results = {
        "cpu_seconds_used": {
            "transfer_funds": STAGE_SECONDS,
            "transfer_funds_write_path": {"command_server worker 0": 1.0},
            "get_account": STAGE_SECONDS,
            "half_load": STAGE_SECONDS,
            "drain": STAGE_SECONDS,
        },
        "transfer_funds": {"rpc": "TransferFunds", "ok": 2000, "read_side": "running"},
        "transfer_funds_write_path": {
            "rpc": "TransferFunds",
            "ok": 500,
            "read_side": "paused (poller, projector)",
        },
        "get_account": {"rpc": "GetAccount", "ok": 5000},
        "half_load": {"transfers_completed": 0},
        "drain": {"seconds": 3.0},
    }

    stages = cpu_ms_per_transfer(results)["stages"]

    assert set(stages) == {"transfer_funds", "transfer_funds_write_path"}
    assert stages["transfer_funds"]["transfers"] == 2000
    assert stages["transfer_funds"][COMMAND_SERVER] == 4.0
    assert "note" not in stages["transfer_funds"]
    assert stages["transfer_funds_write_path"][COMMAND_SERVER] == 2.0
    assert stages["transfer_funds_write_path"]["note"] == READ_SIDE_PAUSED_NOTE


def test_cpu_seconds_between_snapshots_include_the_bench_and_its_clients() -> None:
    before = CpuSnapshot(
        taken_monotonic=10.0,
        processes={"projector": 5.0, "gone": 1.0},
        bench_seconds=2.0,
        clients_seconds=1.0,
    )
    after = CpuSnapshot(
        taken_monotonic=12.0,
        processes={"projector": 6.5, "new": 0.5},
        bench_seconds=2.25,
        clients_seconds=4.0,
    )

    used = seconds_used(before, after)

    assert used == {"projector": 1.5, "new": 0.5, BENCH_PROCESS: 0.25, CLIENT_PROCESSES: 3.0}

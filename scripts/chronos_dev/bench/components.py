"""CPU milliseconds per transfer by component: where a stage's transfers cost CPU.

A stage's per-process CPU seconds (:func:`chronos_dev.bench.cpu.seconds_used`) are grouped
into the components of the pipeline (every command server worker into "command_server",
the bench and the clients it ran into "clients", ...), and each component's seconds
are divided by the transfers the stage completed: ``cpu seconds x 1000 / transfers``.
Pure functions over ``bench.json``'s own sections, so that they are unit-tested.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chronos_dev.bench.cpu import BENCH_PROCESS, CLIENT_PROCESSES, TOTAL

COMMAND_SERVER = "command_server"
POSTGRESQL = "postgresql"
OUTBOX_POLLER = "outbox_poller"
KAFKA = "kafka"
PROJECTOR = "projector"
ELASTICSEARCH = "elasticsearch"
QUERY_SERVER = "query_server"
CLIENTS = "clients"
# A watched process no rule below names (none today: a new process shows up here
# rather than vanishing from the total).
OTHER = "other"
# The components in the order of a transfer's path, then those beside it.
COMPONENTS = (
    COMMAND_SERVER,
    POSTGRESQL,
    OUTBOX_POLLER,
    KAFKA,
    PROJECTOR,
    ELASTICSEARCH,
    QUERY_SERVER,
    CLIENTS,
)
# Process name (as the bench watches it) or its prefix -> component. The services are
# named by their module ("command_server worker 1", "command_server supervisor"), the
# stack's servers by their ``chronos infra`` name.
_EXACT = {
    "postgres": POSTGRESQL,
    "kafka": KAFKA,
    "elasticsearch": ELASTICSEARCH,
    "outbox_poller": OUTBOX_POLLER,
    "projector": PROJECTOR,
    BENCH_PROCESS: CLIENTS,
    CLIENT_PROCESSES: CLIENTS,
}
_PREFIXES = (("command_server", COMMAND_SERVER), ("query_server", QUERY_SERVER))
# The closed-loop results (``ThroughputResult``) whose ``ok`` counts completed transfers:
# one per TransferFunds answer, one per accepted command of an ExecuteBatch call.
_TRANSFER_RPCS = ("TransferFunds", "ExecuteBatch")
# Stages whose transfers found the read side paused: the poller, Kafka, the projector
# and Elasticsearch do their share of these transfers later, in the drain.
READ_SIDE_PAUSED_NOTE = "read side paused: its share of these transfers is spent in the drain"
METHOD = (
    "CPU seconds of each component over the stage (utime + stime from /proc, the bench "
    "and its waited-for clients from getrusage; see cpu_cores_used) x 1000 / transfers "
    "completed in the stage. command_server: every worker and the supervisor; "
    "postgresql: the postmaster and all its children; clients: ghz, pgbench, the load "
    "test's client processes and the bench process itself. null: the component's "
    "processes were not watched (e.g. servers given by address only, whose pids are "
    "unknown). total: the sum of the measured components. A component's idle and "
    "background work over the stage (Elasticsearch's refreshes and merges, Kafka's "
    "housekeeping) counts too, so the figures rise at low rates; on servers shared with "
    "other work, that work counts too."
)


def component_of(process: str) -> str:
    """The component a watched process belongs to (:data:`OTHER` when none)."""
    exact = _EXACT.get(process)
    if exact is not None:
        return exact
    for prefix, component in _PREFIXES:
        if process.startswith(prefix):
            return component
    return OTHER


def seconds_by_component(seconds_by_process: Mapping[str, float]) -> dict[str, float]:
    """Sums the processes' CPU seconds per component; a component none of whose
    processes was watched is absent (unknown, not zero)."""
    grouped: dict[str, float] = {}
    for process, seconds in seconds_by_process.items():
        if process == TOTAL:
            continue
        component = component_of(process)
        grouped[component] = grouped.get(component, 0.0) + seconds
    return grouped


def ms_per_transfer(
    component_seconds: Mapping[str, float], transfers: int
) -> dict[str, float | None]:
    """``seconds x 1000 / transfers`` per component (None where it was not measured),
    in :data:`COMPONENTS` order, :data:`OTHER` when present, and the total.

    Raises:
        ValueError: ``transfers`` is not positive (there is nothing to divide by).
    """
    if transfers <= 0:
        raise ValueError(f"CPU per transfer needs transfers, got {transfers}")
    names = [*COMPONENTS, *([OTHER] if OTHER in component_seconds else [])]
    per_transfer: dict[str, float | None] = {
        name: _per_transfer(component_seconds.get(name), transfers) for name in names
    }
    per_transfer[TOTAL] = _per_transfer(sum(component_seconds.values()), transfers)
    return per_transfer


def _per_transfer(seconds: float | None, transfers: int) -> float | None:
    if seconds is None:
        return None
    # Clock ticks are 10 ms and a backend that exits between two snapshots takes its
    # ticks along, so a component can come out a hair below zero: that is zero.
    return round(max(seconds, 0.0) * 1000 / transfers, 3)


def transfers_completed(stage: Any) -> int | None:
    """The transfers a stage's result (a section of ``bench.json``) completed, or None
    for a stage that moves no transfers."""
    if not isinstance(stage, dict):
        return None
    explicit = stage.get("transfers_completed")
    if isinstance(explicit, int):
        return explicit
    if stage.get("rpc") in _TRANSFER_RPCS and isinstance(stage.get("ok"), int):
        ok: int = stage["ok"]
        return ok
    return None


def cpu_ms_per_transfer(results: Mapping[str, Any]) -> dict[str, Any]:
    """The ``cpu_ms_per_transfer`` section of ``bench.json``: for every stage that
    completed transfers and whose CPU was recorded, the transfers and each component's
    CPU milliseconds per transfer."""
    stages: dict[str, Any] = {}
    for key, seconds_by_process in (results.get("cpu_seconds_used") or {}).items():
        stage = results.get(key)
        transfers = transfers_completed(stage)
        if not transfers:
            continue
        entry: dict[str, Any] = {
            "transfers": transfers,
            **ms_per_transfer(seconds_by_component(seconds_by_process), transfers),
        }
        if isinstance(stage, dict) and stage.get("read_side", "running") != "running":
            entry["note"] = READ_SIDE_PAUSED_NOTE
        stages[key] = entry
    return {"method": METHOD, "stages": stages}

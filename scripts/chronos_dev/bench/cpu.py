"""CPU time per process over each stage: where the machine's cores went.

Not a target of the issue, but the figure that explains the others on a small machine,
where clients, services and servers share the cores: a stage whose command workers
each used a whole core is CPU-bound in Python, one whose workers idled while
PostgreSQL was busy waits on the database.

A process's CPU time is ``utime + stime`` from ``/proc/<pid>/stat`` plus ``cutime +
cstime`` (its children that exited and were waited for); for a tree (PostgreSQL) the
live descendants' own times are added, so backends that come and go are counted
either while alive or, once gone, in the postmaster's children's times. The bench's
own processes are read from ``getrusage``: ``RUSAGE_SELF`` (the bench, including the
Python client when it runs in-process) and ``RUSAGE_CHILDREN`` (the clients it ran as
child processes and waited for: ghz, pgbench, the load test's client processes, the
rebuild command).
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path

from chronos_dev.bench.memory import TreePeak, descendants
from chronos_dev.proc import parent_pids

_CLOCK_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
TOTAL = "total"
# The two entries besides the watched processes: the bench itself and the clients it
# ran as child processes.
BENCH_PROCESS = "bench (this process)"
CLIENT_PROCESSES = "clients (ghz, pgbench, load-test processes)"


def _stat_ticks(pid: int) -> tuple[int, int] | None:
    """(own ticks, waited-for children's ticks) of ``pid``; None when it is gone."""
    try:
        stat = (Path("/proc") / str(pid) / "stat").read_text()
    except OSError:
        return None
    # Fields after the command name: state is field 3, utime..cstime are 14..17.
    fields = stat[stat.rfind(")") + 2 :].split()
    utime, stime, cutime, cstime = (int(value) for value in fields[11:15])
    return utime + stime, cutime + cstime


def _tree_cpu_seconds(peak: TreePeak, parents: dict[int, int]) -> float | None:
    root = _stat_ticks(peak.root_pid)
    if root is None:
        return None
    ticks = root[0] + root[1]
    if peak.tree:
        for pid in descendants(peak.root_pid, parents)[1:]:
            child = _stat_ticks(pid)
            if child is not None:
                ticks += child[0]
    return ticks / _CLOCK_TICKS_PER_SECOND


@dataclass(slots=True)
class CpuSnapshot:
    taken_monotonic: float
    processes: dict[str, float] = field(default_factory=dict)
    bench_seconds: float = 0.0
    clients_seconds: float = 0.0


def snapshot(peaks: dict[str, TreePeak]) -> CpuSnapshot:
    """CPU seconds so far of every watched process and of the bench and its clients."""
    parents = parent_pids() if any(peak.tree for peak in peaks.values()) else {}
    taken = CpuSnapshot(taken_monotonic=time.monotonic())
    for name, peak in peaks.items():
        seconds = _tree_cpu_seconds(peak, parents)
        if seconds is not None:
            taken.processes[name] = seconds
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    taken.bench_seconds = own.ru_utime + own.ru_stime
    taken.clients_seconds = children.ru_utime + children.ru_stime
    return taken


def seconds_used(before: CpuSnapshot, after: CpuSnapshot) -> dict[str, float]:
    """CPU seconds each process used between the snapshots, the bench and its clients
    included.

    Processes that started after ``before`` count from zero; ones gone by ``after`` are
    left out (their time can no longer be read).
    """
    used = {
        name: seconds - before.processes.get(name, 0.0) for name, seconds in after.processes.items()
    }
    used[BENCH_PROCESS] = after.bench_seconds - before.bench_seconds
    used[CLIENT_PROCESSES] = after.clients_seconds - before.clients_seconds
    return dict(sorted(used.items()))


def cores_used(before: CpuSnapshot, after: CpuSnapshot) -> dict[str, float]:
    """Average cores each process used between the snapshots (CPU seconds / wall time),
    rounded, and their total."""
    elapsed = after.taken_monotonic - before.taken_monotonic
    if elapsed <= 0:
        return {}
    used = {name: seconds / elapsed for name, seconds in seconds_used(before, after).items()}
    rounded = {name: round(value, 2) for name, value in used.items()}
    # Near the machine's core count means the stage was CPU-bound as a whole (processes
    # not watched, e.g. other people's, come on top).
    rounded[TOTAL] = round(sum(used.values()), 2)
    return rounded

"""Reading ``/proc``: the parent of every process, a process's children and environment.

The launcher finds the workers of a multi-process server through these; the bench's
memory and CPU samplers walk process trees with them.
"""

from __future__ import annotations

from pathlib import Path

PROC = Path("/proc")


def parent_pids() -> dict[int, int]:
    """pid -> parent pid of every process now in ``/proc``."""
    parents: dict[int, int] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name (field 2) may hold spaces and parentheses: split after the
        # last ')' to reach the fixed fields (state, ppid, ...).
        fields = stat[stat.rfind(")") + 2 :].split()
        parents[int(entry.name)] = int(fields[1])
    return parents


def children_of(pid: int) -> list[int]:
    """The direct children of ``pid`` now alive."""
    return sorted(child for child, parent in parent_pids().items() if parent == pid)


def environment_of(pid: int) -> dict[str, str]:
    """The environment ``pid`` was started with (empty when unreadable)."""
    try:
        raw = (PROC / str(pid) / "environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.partition(b"=") for item in raw.split(b"\0") if item)
    return {key.decode(errors="replace"): value.decode(errors="replace") for key, _, value in pairs}

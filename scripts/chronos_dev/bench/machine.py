"""A description of the machine a bench ran on, for the results file."""

from __future__ import annotations

import datetime
import os
import platform
import sys
from pathlib import Path


def _first_value(path: Path, key: str) -> str:
    """The value of the first ``key: value`` line of a ``/proc`` file ("" if none)."""
    try:
        text = path.read_text()
    except OSError:
        return ""
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == key:
            return value.strip()
    return ""


def load_average() -> tuple[float, float, float]:
    """The 1, 5 and 15 minute load averages."""
    return os.getloadavg()


def describe() -> dict[str, object]:
    """nproc, memory, CPU model, kernel, Python version, date and load average."""
    memory_total = _first_value(Path("/proc/meminfo"), "MemTotal")
    memory_total_kib = int(memory_total.split()[0]) if memory_total else 0
    uname = platform.uname()
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "hostname": uname.node,
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": _first_value(Path("/proc/cpuinfo"), "model name") or uname.processor,
        "memory_total_mb": round(memory_total_kib / 1024),
        "kernel": f"{uname.system} {uname.release} {uname.version}",
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "load_average_at_start": [round(value, 2) for value in load_average()],
    }

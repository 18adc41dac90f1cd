"""Peak memory of the processes under test, sampled from ``/proc`` by a background thread.

Every ``interval_seconds`` the sampler reads, for each watched process (and, for a
process *tree*, every descendant found through the parent pids in ``/proc/<pid>/stat``):

* ``VmRSS`` from ``/proc/<pid>/status``: resident memory, shared pages included;
* ``Pss`` from ``/proc/<pid>/smaps_rollup`` (only for trees watched with
  ``proportional``): the proportional set size, where a page shared by n processes
  counts 1/n in each. Summed over a tree it counts shared memory once, which matters
  for PostgreSQL: every backend maps the same ``shared_buffers``, so the sum of the
  backends' RSS counts that segment once per backend. It is opt-in because the kernel
  walks the page tables to compute it: about 10 ms for a JVM with a 1 GB heap, too much
  CPU to spend every half second on a two-core machine under load;
* ``VmHWM`` of the tree's root: the kernel's own peak RSS of that one process since it
  started (exact, not sampled, but covering the whole life of the process).

A tree's peak is the largest per-sample *sum* over the processes alive at that moment.
Sampling misses a spike shorter than the interval; ``VmHWM`` does not, which is why the
services the bench starts itself (single processes whose whole life is the run) are
judged by ``max(VmHWM, sampled RSS peak)``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from chronos_dev.proc import PROC, parent_pids

_KIB = 1024
# A thread, not a process: bounded by construction, but bound the join anyway.
_JOIN_TIMEOUT_SECONDS = 10.0


@dataclass(slots=True)
class TreePeak:
    """What the sampler learned about one watched process (tree)."""

    name: str
    root_pid: int
    tree: bool
    proportional: bool
    rss_peak_bytes: int = 0
    pss_peak_bytes: int = 0
    # VmHWM of the root process at the last sample that found it alive.
    root_hwm_bytes: int = 0
    processes_max: int = 0
    samples: int = 0

    @property
    def peak_bytes(self) -> int:
        """The figure to judge: PSS for proportional trees, else the larger of the
        sampled RSS peak and the root's VmHWM (the tree's HWM when it is one process)."""
        if self.proportional:
            return self.pss_peak_bytes
        if self.tree and self.processes_max > 1:
            return self.rss_peak_bytes
        return max(self.rss_peak_bytes, self.root_hwm_bytes)

    def to_json(self) -> dict[str, object]:
        mib = 1024 * 1024
        return {
            "pid": self.root_pid,
            "tree": self.tree,
            "rss_peak_mb": round(self.rss_peak_bytes / mib, 1),
            "pss_peak_mb": round(self.pss_peak_bytes / mib, 1) if self.proportional else None,
            "root_vm_hwm_mb": round(self.root_hwm_bytes / mib, 1),
            "processes_max": self.processes_max,
            "samples": self.samples,
        }


def _status_kib(pid: int, fields: tuple[str, ...]) -> dict[str, int]:
    """``field -> kB`` from ``/proc/<pid>/status``; empty when the process is gone."""
    values: dict[str, int] = {}
    try:
        text = (PROC / str(pid) / "status").read_text()
    except OSError:
        return values
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name in fields:
            values[name] = int(rest.split()[0])
    return values


def _pss_kib(pid: int) -> int:
    try:
        text = (PROC / str(pid) / "smaps_rollup").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def descendants(root_pid: int, parents: dict[int, int]) -> list[int]:
    """``root_pid`` and every process below it, root first."""
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    found = [root_pid]
    index = 0
    while index < len(found):
        found.extend(sorted(children.get(found[index], [])))
        index += 1
    return found


@dataclass
class MemorySampler:
    """Samples the watched processes until stopped; see the module docstring."""

    interval_seconds: float
    peaks: dict[str, TreePeak] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def watch(self, name: str, pid: int, *, tree: bool = False, proportional: bool = False) -> None:
        """Adds a process (with its descendants when ``tree``) under ``name``; with
        ``proportional`` its PSS is read as well (see the module docstring)."""
        with self._lock:
            assert name not in self.peaks, f"{name} watched twice"
            self.peaks[name] = TreePeak(
                name=name, root_pid=pid, tree=tree, proportional=proportional
            )
        self.sample()

    def start(self) -> None:
        assert self._thread is None, "started twice"
        self._thread = threading.Thread(target=self._run, name="bench-memory", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Takes a last sample and stops the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=_JOIN_TIMEOUT_SECONDS)
        self.sample()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_seconds):
            self.sample()

    def sample(self) -> None:
        """Reads every watched tree once (also called before a watched process stops)."""
        with self._lock:
            watched = list(self.peaks.values())
        if not watched:
            return
        parents = parent_pids() if any(peak.tree for peak in watched) else {}
        for peak in watched:
            root = _status_kib(peak.root_pid, ("VmRSS", "VmHWM"))
            if not root:
                continue
            pids = descendants(peak.root_pid, parents) if peak.tree else [peak.root_pid]
            rss_kib = root.get("VmRSS", 0)
            for pid in pids[1:]:
                rss_kib += _status_kib(pid, ("VmRSS",)).get("VmRSS", 0)
            pss_kib = sum(_pss_kib(pid) for pid in pids) if peak.proportional else 0
            with self._lock:
                peak.samples += 1
                peak.rss_peak_bytes = max(peak.rss_peak_bytes, rss_kib * _KIB)
                peak.pss_peak_bytes = max(peak.pss_peak_bytes, pss_kib * _KIB)
                peak.root_hwm_bytes = max(peak.root_hwm_bytes, root.get("VmHWM", 0) * _KIB)
                peak.processes_max = max(peak.processes_max, len(pids))

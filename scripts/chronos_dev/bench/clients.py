"""The result of one closed-loop gRPC stage, whichever client (ghz or Python) ran it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from chronos_dev.loadtest.outcomes import Outcomes
from chronos_dev.loadtest.runner import PhaseReport
from chronos_dev.loadtest.stats import LatencyHistogram


@dataclass(slots=True, kw_only=True)
class ThroughputResult:
    """Answers of one RPC sent as fast as the server answers (closed loop)."""

    # "ghz" or "python".
    tool: str
    rpc: str
    target: str
    concurrency: int
    # ghz: connections; Python client: processes (one channel each).
    connections: int
    elapsed_seconds: float
    ok: int
    failed: int
    # Status code name -> count of failed calls.
    errors: dict[str, int] = field(default_factory=dict)
    # Latencies of the OK answers.
    histogram: LatencyHistogram = field(default_factory=LatencyHistogram)
    extra: dict[str, Any] = field(default_factory=dict)
    # Calls made when one call carries several commands (ExecuteBatch); ``ok`` and
    # ``failed`` then count commands, and latencies are per call.
    calls: int | None = None
    # What became of each command, when the client kept track (for the invariants).
    outcomes: Outcomes | None = None

    @property
    def throughput_per_second(self) -> float:
        """OK answers per second of the stage."""
        return self.ok / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        summary = self.histogram.summary_milliseconds()
        return {
            "tool": self.tool,
            "rpc": self.rpc,
            "target": self.target,
            "loop": "closed",
            "concurrency": self.concurrency,
            "connections": self.connections,
            "elapsed_seconds": round(self.elapsed_seconds, 3),
            "ok": self.ok,
            "failed": self.failed,
            **({"calls": self.calls} if self.calls is not None else {}),
            "errors": dict(sorted(self.errors.items())),
            "throughput_per_second": round(self.throughput_per_second, 1),
            "latency_ms": {
                key: (int(value) if key == "count" else round(value, 3))
                for key, value in summary.items()
            },
            **self.extra,
        }


def from_phase_report(
    report: PhaseReport, *, rpc: str, target: str, concurrency: int, processes: int
) -> ThroughputResult:
    """A load-test phase (``chronos_dev.loadtest``) as a :class:`ThroughputResult`."""
    errors: dict[str, int] = {}
    for (_, code, reason), count in report.errors.items():
        key = f"{code}/{reason}" if reason else code
        errors[key] = errors.get(key, 0) + count
    histogram = report.histograms.get(rpc, LatencyHistogram())
    return ThroughputResult(
        tool="python",
        rpc=rpc,
        target=target,
        concurrency=concurrency,
        connections=processes,
        elapsed_seconds=report.elapsed_seconds,
        ok=report.operations - report.operation_errors,
        failed=report.operation_errors,
        errors=errors,
        histogram=histogram,
        extra={"latency_includes_errors": True},
    )

"""The results of a run: the printed summary, ``result.json`` and ``latency.png``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from chronos_dev.loadtest.invariants import CheckResult
from chronos_dev.loadtest.options import Options
from chronos_dev.loadtest.runner import PhaseReport
from chronos_dev.loadtest.stats import LatencyHistogram, log_bins_milliseconds

RESULT_FILE = "result.json"
PLOT_FILE = "latency.png"


def errors_by_status(report: PhaseReport) -> dict[str, int]:
    """Error counts keyed ``CODE`` or ``CODE/REASON``, over every RPC."""
    totals: dict[str, int] = {}
    for (_, code, reason), count in report.errors.items():
        key = f"{code}/{reason}" if reason else code
        totals[key] = totals.get(key, 0) + count
    return dict(sorted(totals.items(), key=lambda item: -item[1]))


def phase_to_json(report: PhaseReport) -> dict[str, Any]:
    errors_by_rpc: dict[str, dict[str, int]] = {}
    for (rpc, code, reason), count in sorted(report.errors.items()):
        key = f"{code}/{reason}" if reason else code
        errors_by_rpc.setdefault(rpc, {})[key] = count
    outcomes = report.outcomes
    return {
        "phase": report.phase,
        "elapsed_seconds": round(report.elapsed_seconds, 3),
        "operations": report.operations,
        "operations_failed": report.operation_errors,
        "expected_refusals": report.expected_refusals,
        "throughput_per_second": round(report.throughput_per_second, 1),
        "latency_ms": {
            rpc: _rounded(histogram.summary_milliseconds())
            for rpc, histogram in sorted(report.histograms.items())
        },
        "errors": errors_by_status(report),
        "errors_by_rpc": errors_by_rpc,
        "requests": {
            "accepted": len(outcomes.accepted),
            "rejected": len(outcomes.rejected),
            "unknown": len(outcomes.unknown),
            "replayed_answers": outcomes.replayed_answers,
            "replay_mismatches": outcomes.replay_mismatch_count,
            "races": dict(sorted(outcomes.races.items())),
            "race_violations": dict(sorted(outcomes.race_violations.items())),
        },
        "projection_lag_ms": {
            **_rounded(report.lag.summary_milliseconds()),
            "timeouts": report.lag_timeouts,
            "failures": report.lag_failures,
            "probes_skipped": report.lag_probes_skipped,
        },
    }


def _rounded(summary: dict[str, float]) -> dict[str, float]:
    return {
        key: (int(value) if key == "count" else round(value, 3)) for key, value in summary.items()
    }


def result_to_json(
    options: Options,
    run_id: str,
    phases: Sequence[PhaseReport],
    checks: Sequence[CheckResult],
    plot_path: Path | None,
) -> dict[str, Any]:
    measured = phases[-1]
    return {
        "run_id": run_id,
        "scenario": options.scenario,
        "options": {
            "duration_seconds": options.duration_seconds,
            "count": options.count,
            "concurrency": options.concurrency,
            "rate_per_second": options.rate_per_second,
            "loop": "open" if options.rate_per_second > 0 else "closed",
            "accounts": options.accounts,
            "seed": options.seed,
            "processes": options.processes,
            "distribution": options.distribution.value,
            "read_fraction": options.read_fraction,
            "duplicate_fraction": options.duplicate_fraction,
            "command_addr": options.command_addr,
            "query_addr": options.query_addr,
            "rpc_timeout_seconds": options.rpc_timeout_seconds,
            "lag_sample_fraction": options.lag_sample_fraction,
        },
        "projection_lag_method": (
            "GetAccount(account, min_position=command position) sent right after the "
            "command's answer; lag = its answer time minus the command's answer time"
        ),
        **phase_to_json(measured),
        "phases": [phase_to_json(phase) for phase in phases],
        "invariants": {
            "passed": all(check.passed for check in checks),
            "checks": [{"name": c.name, "passed": c.passed, "detail": c.detail} for c in checks],
        },
        "plot": str(plot_path) if plot_path is not None else None,
    }


def write_result(output_dir: Path, result: dict[str, Any]) -> Path:
    path = output_dir / RESULT_FILE
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def _format_latency_table(histograms: dict[str, LatencyHistogram]) -> list[str]:
    header = f"  {'RPC':28} {'count':>9} {'p50':>9} {'p90':>9} {'p99':>9} {'p99.9':>9} {'max':>9}"
    lines = [header]
    for rpc, histogram in sorted(histograms.items()):
        s = histogram.summary_milliseconds()
        lines.append(
            f"  {rpc:28} {int(s['count']):>9} {s['p50_ms']:>9.2f} {s['p90_ms']:>9.2f} "
            f"{s['p99_ms']:>9.2f} {s['p99.9_ms']:>9.2f} {s['max_ms']:>9.2f}"
        )
    return lines


def format_phase(report: PhaseReport, *, measured: bool) -> str:
    label = "measured" if measured else "preparation"
    lines = [
        f"{report.phase} ({label}): {report.operations} operations in "
        f"{report.elapsed_seconds:.2f} s = {report.throughput_per_second:.1f} ops/s, "
        f"{report.operation_errors} failed, {report.expected_refusals} refused as expected",
        "  latency (ms, from the scheduled start):",
        *_format_latency_table(report.histograms),
    ]
    errors = errors_by_status(report)
    if errors:
        lines.append("  errors by status/ErrorInfo reason:")
        lines.extend(f"    {key:40} {count:>9}" for key, count in errors.items())
    else:
        lines.append("  errors: none")
    outcomes = report.outcomes
    lines.append(
        f"  request_ids: {len(outcomes.accepted)} accepted, {len(outcomes.rejected)} rejected, "
        f"{len(outcomes.unknown)} unknown, {outcomes.replayed_answers} replayed answers, "
        f"{outcomes.replay_mismatch_count} replay mismatches"
    )
    for kind, races in sorted(outcomes.races.items()):
        lines.append(
            f"  {kind} races: {races}, {outcomes.race_violations.get(kind, 0)} without "
            "exactly one winner"
        )
    lag = report.lag.summary_milliseconds()
    lines.append(
        f"  projection lag (ms, {int(lag['count'])} samples): p50 {lag['p50_ms']:.1f}  "
        f"p99 {lag['p99_ms']:.1f}  max {lag['max_ms']:.1f}  "
        f"({report.lag_timeouts} timed out, {report.lag_failures} failed, "
        f"{report.lag_probes_skipped} skipped)"
    )
    return "\n".join(lines)


def format_checks(checks: Sequence[CheckResult]) -> str:
    lines = ["invariants:"]
    for check in checks:
        lines.append(f"  {'PASS' if check.passed else 'FAIL'}  {check.name}: {check.detail}")
    verdict = "all checks passed" if all(c.passed for c in checks) else "SOME CHECKS FAILED"
    lines.append(f"invariants: {verdict}")
    return "\n".join(lines)


def plot(report: PhaseReport, path: Path, title: str) -> Path:
    """Writes latency over time (sampled points) and the latency histogram per RPC."""
    # Imported here so runs with --no-plot work without matplotlib; Agg renders files
    # without a display.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (over_time, distribution) = plt.subplots(2, 1, figsize=(11, 8))
    rpcs = sorted({rpc for _, rpc, _ in report.samples})
    for rpc in rpcs:
        points = [(t, ms) for t, name, ms in report.samples if name == rpc]
        over_time.scatter(
            [t for t, _ in points], [ms for _, ms in points], s=2, alpha=0.5, label=rpc
        )
    over_time.set_yscale("log")
    over_time.set_xlabel("scheduled start (s since the phase began)")
    over_time.set_ylabel("latency (ms)")
    over_time.set_title(title)
    if rpcs:
        over_time.legend(markerscale=4, fontsize="small")
    for rpc, histogram in sorted(report.histograms.items()):
        buckets = log_bins_milliseconds(histogram)
        if not buckets:
            continue
        # Bars on a log axis from the exact histogram: every request counts, not just
        # the sampled ones.
        distribution.bar(
            [low for low, _, _ in buckets],
            [count for _, _, count in buckets],
            width=[high - low for low, high, _ in buckets],
            align="edge",
            alpha=0.5,
            label=rpc,
        )
    distribution.set_xscale("log")
    distribution.set_xlabel("latency (ms)")
    distribution.set_ylabel("requests")
    if report.histograms:
        distribution.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path

"""Stage (e), and the open-loop runs of the sustainable rate's probes (s): TransferFunds at
a fixed rate with the load test's runner, and the services' histograms over the run and
the drain after it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chronos.top import Snapshot
from chronos_dev.bench.clients import from_phase_report
from chronos_dev.bench.service_metrics import (
    PROJECTION_LAG,
    PUBLISH_LATENCY,
    REQUEST_DURATION,
    SEARCH_LAG,
    histogram_figures,
    scrape_all,
)
from chronos_dev.bench.stages import BenchContext, open_loop_transfers, wait_for_projection
from chronos_dev.loadtest.runner import PhaseReport


@dataclass(frozen=True, slots=True)
class OpenLoopMeasurement:
    """An open-loop run and the services' metrics before it and after its drain."""

    report: PhaseReport
    # "projector", "poller", "command" -> merged snapshot of their metrics.
    before: dict[str, Snapshot]
    after: dict[str, Snapshot]
    drain_seconds: float

    def figures(self, service: str, name: str, **match: str) -> dict[str, float | int | None]:
        """:func:`histogram_figures` of one service's histogram over the run."""
        return histogram_figures(self.before[service], self.after[service], name, **match)


def measure_open_loop(
    context: BenchContext,
    *,
    phase: str,
    rate_per_second: float,
    duration_seconds: float,
    lag_sample_fraction: float,
) -> OpenLoopMeasurement:
    """TransferFunds open loop at ``rate_per_second`` (the load test's runner), with the
    services' metrics scraped before it and after the projection caught up with it."""
    services = context.services
    endpoints = {
        "projector": [services.projector_metrics],
        "poller": [services.poller_metrics],
        "command": services.command_metrics,
    }
    before = {name: scrape_all(list(points)) for name, points in endpoints.items()}
    report = open_loop_transfers(
        context,
        phase=phase,
        rate_per_second=rate_per_second,
        duration_seconds=duration_seconds,
        lag_sample_fraction=lag_sample_fraction,
    )
    # The last events of the run are still on their way to the read side: wait for them
    # so that their lags are in the histograms too.
    drain_seconds = wait_for_projection(context)
    after = {name: scrape_all(list(points)) for name, points in endpoints.items()}
    return OpenLoopMeasurement(
        report=report, before=before, after=after, drain_seconds=drain_seconds
    )


def half_load(context: BenchContext, rate_per_second: float, rate_source: str) -> dict[str, Any]:
    """(e) TransferFunds open loop at ``rate_per_second`` with the load test's runner;
    projection and publish lags from the services' histograms, read-your-writes lag from
    the runner's probes."""
    options = context.options
    measured = measure_open_loop(
        context,
        phase="half-load",
        rate_per_second=rate_per_second,
        duration_seconds=options.duration_seconds,
        lag_sample_fraction=options.lag_sample_fraction,
    )
    report = measured.report
    command = from_phase_report(
        report,
        rpc="TransferFunds",
        target=context.services.command_addr,
        concurrency=options.concurrency,
        processes=options.client_processes,
    )
    lag = report.lag.summary_milliseconds()
    return {
        "rate_target_per_second": round(rate_per_second, 1),
        "rate_source": rate_source,
        "rate_achieved_per_second": round(report.throughput_per_second, 1),
        "transfers_completed": command.ok,
        "duration_seconds": options.duration_seconds,
        "command": {
            **command.to_json(),
            "loop": "open",
            "latency_from": "the scheduled send time (no coordinated omission)",
            "server_side_latency_ms": measured.figures(
                "command", REQUEST_DURATION, method="TransferFunds"
            ),
        },
        "projection_lag_ms": {
            **measured.figures("projector", PROJECTION_LAG),
            "source": (
                f"{PROJECTION_LAG} of the projector: event commit -> documents written "
                "(readable by id: GetAccount)"
            ),
        },
        "projection_search_lag_ms": {
            **measured.figures("projector", SEARCH_LAG),
            "source": (
                f"{SEARCH_LAG} of the projector: event commit -> visible to searches "
                "(ListTransactions, GetBalanceAt, SearchAccounts)"
            ),
        },
        "outbox_publish_lag_ms": {
            **measured.figures("poller", PUBLISH_LATENCY),
            "source": f"{PUBLISH_LATENCY} of the poller: event commit -> broker ack",
        },
        "read_your_writes_lag_ms": {
            **{k: (int(v) if k == "count" else round(v, 3)) for k, v in lag.items()},
            "timeouts": report.lag_timeouts,
            "failures": report.lag_failures,
            "probes_skipped": report.lag_probes_skipped,
            "source": (
                "load-test probes: GetAccount(min_position) after the command's answer, "
                f"on {options.lag_sample_fraction:.0%} of the transfers"
            ),
        },
        "drain_seconds": round(measured.drain_seconds, 3),
        "histogram_quantile_note": (
            "p50/p99 of the service histograms are bucket upper bounds (buckets 0.5, 1, 2, "
            "5, 10, 25, 50, 75, 100, 150, 200, 250, 300, 400, 500, 750, 1000, 2500 ms ...), "
            "like Prometheus' histogram_quantile without interpolation; mean is exact"
        ),
    }

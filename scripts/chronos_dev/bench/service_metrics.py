"""The services' Prometheus metrics over a stage: scraped, merged, read as histograms."""

from __future__ import annotations

from chronos.top import Snapshot, quantile, scrape
from chronos_dev.bench.resources import BenchError

PROJECTION_LAG = "chronos_projection_lag_seconds"
SEARCH_LAG = "chronos_projection_search_lag_seconds"
PUBLISH_LATENCY = "chronos_outbox_publish_latency_seconds"
REQUEST_DURATION = "chronos_grpc_request_duration_seconds"
BATCH_SIZE = "chronos_writer_batch_commands"


def merged(snapshots: list[Snapshot]) -> Snapshot:
    """One snapshot holding the sums of several processes' samples (same labels add)."""
    total = Snapshot(taken_monotonic=max(s.taken_monotonic for s in snapshots))
    for snapshot in snapshots:
        for name, samples in snapshot.samples.items():
            target = total.samples[name]
            for labels, value in samples.items():
                target[labels] = target.get(labels, 0.0) + value
    return total


def scrape_all(endpoints: list[str]) -> Snapshot:
    """Every endpoint scraped once, merged.

    Raises:
        BenchError: an endpoint did not answer.
    """
    snapshots = []
    for endpoint in endpoints:
        snapshot = scrape(endpoint)
        if snapshot is None:
            raise BenchError(f"metrics at {endpoint} not answering")
        snapshots.append(snapshot)
    return merged(snapshots)


def histogram_figures(
    before: Snapshot, after: Snapshot, name: str, **match: str
) -> dict[str, float | int | None]:
    """count, mean and p50/p99 (bucket upper bounds) over the interval, in ms."""
    count = after.total(f"{name}_count", **match) - before.total(f"{name}_count", **match)
    total = after.total(f"{name}_sum", **match) - before.total(f"{name}_sum", **match)
    figures: dict[str, float | int | None] = {
        "count": int(count),
        "mean_ms": round(1000 * total / count, 3) if count > 0 else None,
    }
    for label, q in (("p50_ms", 0.5), ("p99_ms", 0.99)):
        value = quantile(before, after, name, q, **match)
        # None: nothing observed; inf: above the largest bucket (10 s).
        figures[label] = None if value is None or value == float("inf") else 1000 * value
    return figures

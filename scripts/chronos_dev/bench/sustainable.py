"""Stage (s): the sustainable rate, found by short open-loop probes against the services.

Each probe runs the load test's open-loop runner at one rate for ``--probe-seconds``,
then waits for the projection to catch up (so the next probe starts drained and the
probe's last lags are counted), and passes when the projector's
``chronos_projection_lag_seconds`` p99 over the probe (bucket deltas, as in (e)) is at
most :data:`~chronos_dev.bench.rate_search.PROJECTION_LAG_P99_MS_MAX` and the runner achieved
at least :data:`~chronos_dev.bench.rate_search.ACHIEVED_FRACTION_MIN` of the rate. The search
itself (:mod:`chronos_dev.bench.rate_search`) bisects between a tenth of (b)'s closed-loop
throughput and that throughput with at most ``--probes-max`` probes.
"""

from __future__ import annotations

import itertools
from typing import Any

from chronos_dev.bench import stages
from chronos_dev.bench.open_loop import measure_open_loop
from chronos_dev.bench.rate_search import (
    ACHIEVED_FRACTION_MIN,
    PROJECTION_LAG_P99_MS_MAX,
    ProbeResult,
    bracket,
    find_sustainable_rate,
)
from chronos_dev.bench.resources import BenchError
from chronos_dev.bench.service_metrics import PROJECTION_LAG


def _probe(
    context: stages.BenchContext, index: int, rate_per_second: float
) -> tuple[ProbeResult, int]:
    """One probe at ``rate_per_second``, and the transfers it completed."""
    measured = measure_open_loop(
        context,
        # The phase names the load test's request ids: each probe needs its own.
        phase=f"sustainable-probe-{index}",
        rate_per_second=rate_per_second,
        duration_seconds=context.options.probe_seconds,
        lag_sample_fraction=0.0,
    )
    report = measured.report
    completed = report.operations - report.operation_errors
    lag_p99_ms = measured.figures("projector", PROJECTION_LAG)["p99_ms"]
    result = ProbeResult(
        rate_per_second=rate_per_second,
        achieved_per_second=completed / report.elapsed_seconds if report.elapsed_seconds else 0.0,
        projection_lag_p99_ms=None if lag_p99_ms is None else float(lag_p99_ms),
        drain_seconds=measured.drain_seconds,
    )
    stages.progress(
        f"probe {index}: {rate_per_second:.0f}/s asked, {result.achieved_per_second:.0f}/s "
        f"achieved, projection lag p99 {lag_p99_ms if lag_p99_ms is not None else '-'} ms: "
        f"{'pass' if result.passed else 'FAIL'}"
    )
    return result, completed


def sustainable_rate(context: stages.BenchContext, closed_loop_per_second: float) -> dict[str, Any]:
    """(s) The highest open-loop TransferFunds rate at which the read side keeps up,
    below ``closed_loop_per_second`` ((b)'s throughput).

    Raises:
        BenchError: (b) measured no throughput, so there is no bracket to search.
    """
    if closed_loop_per_second <= 0:
        raise BenchError("(b) measured no throughput, so there is no rate to search below")
    low, high = bracket(closed_loop_per_second)
    # The first probe, like every later one, starts with no backlog on the read side.
    stages.wait_for_projection(context)
    indices = itertools.count(1)
    transfers = 0

    def probe(rate_per_second: float) -> ProbeResult:
        nonlocal transfers
        result, completed = _probe(context, next(indices), rate_per_second)
        transfers += completed
        return result

    found = find_sustainable_rate(
        probe, low_per_second=low, high_per_second=high, probes_max=context.options.probes_max
    )
    return {
        **found.to_json(),
        "probe_seconds": context.options.probe_seconds,
        "probes_max": context.options.probes_max,
        "transfers_completed": transfers,
        "pass_when": (
            f"projection lag p99 ({PROJECTION_LAG} bucket deltas over the probe and "
            f"its drain) <= {PROJECTION_LAG_P99_MS_MAX:g} ms and achieved >= "
            f"{ACHIEVED_FRACTION_MIN:.0%} of the rate asked"
        ),
    }
